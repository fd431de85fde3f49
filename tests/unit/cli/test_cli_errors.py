"""The CLI's exit statuses: 1 with one line for a stated failure, 2 with a traceback for a bug, never tfio's abort."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Runs the CLI in a child whose list-archives stage is replaced by one that fails as asked.
_CHILD = textwrap.dedent("""
    import sys
    from xray_tasks import cli, errors
    from xray_tasks.cli import ingest

    def stage(source):
        if sys.argv[2] == "tfio":  # load tensorflow-io's S3 file system and use it, as the model stages do
            import tensorflow as tf
            import tensorflow_io  # noqa: F401
            tf.io.gfile.exists(sys.argv[3] + "/nothing-here")
        if sys.argv[1] == "bug":
            return {"archives": {}["no such key"]}
        raise errors.BadInput(f"{source}: not an NIH source folder")

    ingest.list_archives = stage
    cli.main(["list-archives", "some/source"])
""")


def _run(kind: str, tfio: str = "plain", bucket: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _CHILD, kind, tfio, bucket],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_stated_failure_exits_1_with_one_line():
    proc = _run("stated")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: some/source: not an NIH source folder"
    assert "Traceback" not in proc.stderr


def test_unexpected_exception_exits_2_with_its_traceback():
    proc = _run("bug")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr and "KeyError: 'no such key'" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unexpected KeyError in list-archives")
    assert proc.stdout == ""


@pytest.mark.s3
@pytest.mark.slow
def test_unexpected_exception_after_tfio_s3_still_exits_2(s3_bucket):
    # A process that used tfio's s3:// file system aborts at interpreter exit (status 134); the CLI must end
    # through its flush-and-os._exit path whatever the exception was.
    proc = _run("bug", "tfio", s3_bucket)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "KeyError: 'no such key'" in proc.stderr
    assert "pure virtual method called" not in proc.stderr and "terminate called" not in proc.stderr
