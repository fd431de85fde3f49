"""The longest functions (lines, docstring included) in Python files under the given folders.

.venv/bin/python scripts/longest_functions.py [N] xray_tasks dags plugins
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def longest(folders: list[str]) -> list[tuple[int, str]]:
    rows = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    rows.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    count = int(args.pop(0)) if args and args[0].isdigit() else 20
    for lines, where in longest(args or ["xray_tasks", "dags", "plugins"])[:count]:
        print(f"{lines:4d}  {where}")
