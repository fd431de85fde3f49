"""The shape of the code: layering contracts, formatting and lint, module sizes, the one owner of workspace paths,
and docs/CONTRACTS.md in step with the contracts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

from xray_tasks import contracts

BIN = Path(sys.executable).parent
SOURCES = ("xray_tasks", "dags", "plugins", "tests", "bench", "fuzz")
MAX_MODULE_LINES = 400


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_the_layering_contracts_hold():
    proc = _run(str(BIN / "lint-imports"), "--no-cache")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_ruff_check_is_clean():
    proc = _run(str(BIN / "ruff"), "check", *SOURCES)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_ruff_format_has_nothing_to_change():
    proc = _run(str(BIN / "ruff"), "format", "--check", *SOURCES)
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.parametrize("folder", ["xray_tasks", "dags", "plugins"])
def test_no_module_is_longer_than_the_limit(folder):
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / folder).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines, split them by responsibility: {long}"


def _literal_joins(path: Path) -> list[str]:
    """``storage.join(...)`` calls in a module that spell a path part as a string literal."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "join"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "storage"
            and any(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args[1:])
        ):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_only_the_layout_owners_spell_out_workspace_and_registry_paths():
    owners = {"xray_tasks/workspace.py", "xray_tasks/registry/layout.py"}
    found = [
        hit
        for p in (REPO / "xray_tasks").rglob("*.py")
        if str(p.relative_to(REPO)) not in owners and "storage" not in p.relative_to(REPO).parts
        for hit in _literal_joins(p)
    ]
    found += [
        hit
        for folder in ("dags", "plugins")
        for p in (REPO / folder).glob("*.py")
        for hit in _literal_joins(p)
    ]
    assert not found, f"paths built from string literals outside workspace.py / registry/layout.py: {found}"


def test_the_check_above_would_see_a_literal_path(tmp_path):
    sample = REPO / "tests" / "unit" / ".layout-sample.py"
    sample.write_text('from xray_tasks import storage\nstorage.join(ws, "runs", run_id)\n')
    try:
        assert _literal_joins(sample) == ["tests/unit/.layout-sample.py:2"]
    finally:
        sample.unlink()


def test_contracts_doc_carries_every_contract_table():
    doc = (REPO / "docs" / "CONTRACTS.md").read_text()
    stale = [cls.__name__ for cls in contracts.documented() if contracts.table(cls) not in doc]
    assert not stale, (
        f"docs/CONTRACTS.md is out of step with xray_tasks.contracts for {stale}: paste the output "
        "of `python -m xray_tasks.contracts` for them"
    )
    documented = {cls.__name__ for cls in contracts.documented()}
    exported = {
        name
        for name in contracts.__all__
        if isinstance(getattr(contracts, name), type)
        and issubclass(getattr(contracts, name), contracts.Contract)
        and name != "Contract"
    }
    assert documented == exported
