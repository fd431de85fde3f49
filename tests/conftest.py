"""Shared fixtures: the real NIH slice, synthetic datasets, an S3 API server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NIH_DIR = Path(os.environ.get("XRAY_NIH_DIR", REPO.parent / "shared" / "nih"))
_EXIT_STATUS: list[int] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def nih_dir() -> Path:
    """The real NIH slice (metadata + 320 PNGs); skipped, with the reason, when it is not beside the repo."""
    if not (NIH_DIR / "meta" / "Data_Entry_2017.csv").exists() or not (NIH_DIR / "images").is_dir():
        pytest.skip(f"real NIH data not found at {NIH_DIR} (set XRAY_NIH_DIR to a folder with meta/ and images/)")
    return NIH_DIR


class S3Server:
    """A moto S3 server in its own process (moto's in-process server deadlocks with TFRecordWriter)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        moto = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "S3_VERIFY_SSL": "0",
            "XRAY_S3_MAX_ATTEMPTS": "3",
        }


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server(free_port())
    server.start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket on the loopback S3 server, as ``s3://name``."""
    from xray_tasks.storage import s3_client

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def registry(request, tmp_path) -> str:
    """A registry root, once as a local path and once on the loopback S3 server (the same suite on both)."""
    if request.param == "local":
        return str(tmp_path / "registry")
    return request.getfixturevalue("s3_bucket") + "/registry"


@pytest.fixture
def synth_tree(tmp_path_factory):
    """Factory: a synthetic NIH tree with the given options (cached per option set within a session)."""
    from xray_tasks.data.synth import generate

    def make(**kwargs) -> Path:
        out = tmp_path_factory.mktemp("nih")
        generate(out, **kwargs)
        return out

    return make


def pytest_collection_modifyitems(items):
    # The distributed and browser tests share one cluster (tests/cluster.py): run them together, last, so it is
    # not left idling while other modules run.
    items.sort(key=lambda item: item.get_closest_marker("distributed") is not None
               or item.get_closest_marker("browser") is not None)


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    # tensorflow-io's S3 file system aborts the interpreter at exit (rc 134) even after success; once it has
    # been loaded, end the process here with pytest's own status instead.
    if "tensorflow_io" in sys.modules and _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
