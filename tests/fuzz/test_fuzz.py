"""A bounded coverage-guided fuzz run of every target (about 60 s in all), each in its own child process.

Each target starts from its committed corpus (``fuzz/corpus/<target>``) and writes what it finds to a temporary
folder only.  A crash fails the test with libFuzzer's report and the crashing input's path; add that input as a
named regression test in ``tests/fuzz/test_regressions.py`` (and to the corpus) when fixing it.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from support import REPO

pytestmark = pytest.mark.fuzz

SECONDS = {"archive": 12, "image": 8, "metadata": 12, "manifest": 5, "pointer": 5}


def fuzz_stats(output: str) -> dict[str, int]:
    """libFuzzer's final statistics: executions, coverage (edges), features, corpus size, new units, peak RSS."""
    done = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/", output)
    stats = {k: int(v) for k, v in re.findall(r"stat::(\w+):\s+(\d+)", output)}
    if done:
        runs, cov, ft, corp = map(int, done[-1])
        stats.update(runs=runs, coverage=cov, features=ft, corpus=corp)
    return stats


@pytest.mark.parametrize("target", sorted(SECONDS))
def test_bounded_fuzz_run_finds_no_crash(target, tmp_path):
    proc = subprocess.run(
        [
            *(sys.executable, str(REPO / "fuzz" / "run.py"), "run", target),
            *("--seconds", str(SECONDS[target]), "--work", str(tmp_path / "found")),
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS[target] + 120,
        cwd=tmp_path,
        check=False,
    )
    output = proc.stdout + proc.stderr
    stats = fuzz_stats(output)
    print(f"fuzz {target}: {stats}")
    crashes = re.findall(r"Test unit written to (\S+)", output)
    assert proc.returncode == 0, f"{target}: crash {crashes}\n" + output[-4000:]
    assert stats.get("runs", 0) > 50 and stats.get("coverage", 0) > 10, output[-2000:]
