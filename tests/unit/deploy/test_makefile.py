"""``make`` checks the Python version in one line before pip can fail with a resolver error (issue 11)."""

import shutil
import subprocess

import pytest
from support import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(tmp_path, version):
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho {version}\n")
    fake.chmod(0o755)
    return subprocess.run(
        ["make", "-s", "-C", str(REPO), "setup", f"PYTHON={fake}", f"VENV={tmp_path / 'venv'}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("version", ["3.13", "3.8", "2.7"])
def test_an_unsupported_python_stops_before_pip_with_one_line(tmp_path, version):
    proc = _make(tmp_path, version)
    assert proc.returncode != 0
    (line,) = [x for x in proc.stderr.splitlines() if "TensorFlow 2.17 needs 3.9-3.12" in x]
    assert line.startswith(f"Python {version} (") and "not supported" in line
    assert "pip" not in proc.stdout and not (tmp_path / "venv").exists()


@pytest.mark.parametrize("version", ["3.9", "3.11", "3.12"])
def test_a_supported_python_passes_the_check(tmp_path, version):
    proc = _make(tmp_path, version)  # the fake interpreter cannot make a venv: setup fails after the check
    assert f"Python {version} (" in proc.stdout and "supported" in proc.stdout
    assert "not supported" not in proc.stderr
