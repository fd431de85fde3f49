"""Publishing under faults, with `xray-tasks publish` in a child process: SIGKILL mid-upload, an S3 outage
mid-publish, the S3 server itself killed mid-publish and restarted, two publishes racing for the champion.  The child pauses after each uploaded file when asked to
(``XRAY_REGISTRY_TEST_PAUSE``), so the fault lands in a known phase."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support.registry import TcpProxy, write_run
from support.services import SeaweedServer, services_required

from xray_tasks import storage
from xray_tasks.contracts import PublishSummary
from xray_tasks.registry import list_versions, load, publish, read_decisions
from xray_tasks.registry.layout import PAUSE_ENV, champion_uri, version_uri

pytestmark = pytest.mark.slow
NAME = "xray-triage"


def start_publish(run: str, registry: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xray_tasks.cli", "publish", "--run-dir", run, "--registry", registry],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_uploads(
    registry: str, version: str, count: int, proc: subprocess.Popen, timeout: float = 120
) -> int:
    """Block until ``count`` files of ``version`` are stored (the claim included); returns how many there are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(storage.list_files(version_uri(registry, NAME, version)))
        if n >= count:
            return n
        if proc.poll() is not None:
            raise AssertionError(f"publish ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"version {version} did not reach {count} files in {timeout}s")


def test_sigkill_during_upload_leaves_the_champion_and_a_rerun_succeeds(registry, tmp_path):
    publish(str(write_run(tmp_path / "a", seed=1, auroc=0.8)), registry)
    before = storage.read_bytes(champion_uri(registry, NAME))
    run_b = str(write_run(tmp_path / "b", seed=2, auroc=0.85))

    proc = start_publish(run_b, registry, **{PAUSE_ENV: "after_upload=0.3"})
    stored = wait_for_uploads(registry, "000002", 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    assert storage.read_bytes(champion_uri(registry, NAME)) == before
    rows = {r["version"]: r for r in list_versions(registry, NAME)}
    assert rows["000002"]["complete"] is False and not rows["000002"]["champion"]
    assert 4 <= stored < 16  # killed mid-way: some files, not all, were stored
    assert load(registry).version == "000001"

    summary = publish(run_b, registry)
    assert (summary.decision, summary.version, summary.champion) == ("approved", "000003", "000003")
    assert [r["complete"] for r in list_versions(registry, NAME)] == [True, False, True]


@pytest.mark.s3
def test_s3_outage_mid_publish_fails_cleanly_and_a_retry_succeeds(s3_server, s3_bucket, tmp_path):
    registry = s3_bucket + "/registry"
    publish(str(write_run(tmp_path / "a", seed=1, auroc=0.8)), registry)
    before = storage.read_bytes(champion_uri(registry, NAME))
    run_b = str(write_run(tmp_path / "b", seed=2, auroc=0.85))
    proxy = TcpProxy(s3_server.port)
    proxy.start()
    secret = s3_server.rw_secret  # a per-session random secret the server checks; it must not leak
    via_proxy = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
        "S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
        "AWS_ACCESS_KEY_ID": s3_server.rw_key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "XRAY_S3_MAX_ATTEMPTS": "2",
        "XRAY_S3_CONNECT_TIMEOUT": "2",
        "XRAY_S3_READ_TIMEOUT": "5",
    }
    try:
        proc = start_publish(run_b, registry, **via_proxy, **{PAUSE_ENV: "after_upload=0.3"})
        wait_for_uploads(registry, "000002", 4, proc)
        cut_at = time.monotonic()
        proxy.cut()
        out, err = proc.communicate(timeout=120)
        failed_after = time.monotonic() - cut_at
        assert proc.returncode == 1, err[-2000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and "Could not connect to the endpoint URL" in last, last
        assert "Traceback" not in err
        assert storage.read_bytes(champion_uri(registry, NAME)) == before
        assert [r["complete"] for r in list_versions(registry, NAME)] == [True, False]

        proxy.restore()
        proc = start_publish(run_b, registry, **via_proxy)
        out2, err2 = proc.communicate(timeout=180)
        assert proc.returncode == 0, err2[-2000:]
        summary = PublishSummary.from_dict(json.loads(out2.strip().splitlines()[-1]), "publish stdout")
        assert (summary.promoted, summary.version, summary.champion) == (True, "000003", "000003")
    finally:
        proxy.cut()
    assert load(registry).version == "000003"
    assert secret not in out + err + out2 + err2
    for uri in storage.list_files(registry):
        assert secret.encode() not in storage.read_bytes(uri), uri
    print(f"outage: publish failed {failed_after:.1f}s after the cut: {last}")


def test_two_concurrent_publishes_make_exactly_one_champion(registry, tmp_path):
    runs = [str(write_run(tmp_path / f"r{i}", seed=10 + i, auroc=0.8)) for i in range(2)]
    # Both decide against "no champion", then wait before the swap: the second swap must find the pointer moved.
    procs = [start_publish(run, registry, **{PAUSE_ENV: "before_promote=2"}) for run in runs]
    results = [(p.wait(180), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 1], [err[-1500:] for _, _, err in results]
    ((_, out, _),) = [r for r in results if r[0] == 0]
    ((_, _, loser_err),) = [r for r in results if r[0] == 1]
    winner = json.loads(out.strip().splitlines()[-1])
    assert winner["promoted"] and winner["champion"] == winner["version"]
    assert "the champion changed while this publish ran" in loser_err.strip().splitlines()[-1]
    assert json.loads(storage.read_bytes(champion_uri(registry, NAME)))["version"] == winner["version"]
    loser = ({"000001", "000002"} - {winner["version"]}).pop()
    assert [d["decision"] for d in read_decisions(registry, NAME, loser)] == ["approved", "conflict"]
    assert load(registry).version == winner["version"]


@pytest.mark.s3
def test_the_s3_server_killed_mid_publish_keeps_its_data_and_a_retry_completes(tmp_path, monkeypatch):
    """SIGKILL the SeaweedFS server (a crash: nothing flushed) while a publish uploads, restart it on the same
    folder: every stored object is still there, the champion is intact, and publishing again completes."""
    server = SeaweedServer(tmp_path / "seaweedfs")
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001
        if services_required():
            pytest.fail(f"SeaweedFS did not start: {exc}", pytrace=False)
        pytest.skip(f"SeaweedFS did not start: {exc}")
    try:
        for key, value in {
            **server.env(),
            "XRAY_S3_MAX_ATTEMPTS": "2",
            "XRAY_S3_CONNECT_TIMEOUT": "2",
        }.items():
            monkeypatch.setenv(key, value)
        server.client().create_bucket(Bucket="crash")
        registry = "s3://crash/registry"
        publish(str(write_run(tmp_path / "a", seed=1, auroc=0.8)), registry)
        before = storage.read_bytes(champion_uri(registry, NAME))
        run_b = str(write_run(tmp_path / "b", seed=2, auroc=0.85))

        proc = start_publish(run_b, registry, XRAY_S3_READ_TIMEOUT="5", **{PAUSE_ENV: "after_upload=0.3"})
        stored = wait_for_uploads(registry, "000002", 4, proc)
        server.kill()
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 1, err[-2000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and "Traceback" not in err, last

        server.start()  # same folder, same ports
        assert storage.read_bytes(champion_uri(registry, NAME)) == before
        rows = {r["version"]: r for r in list_versions(registry, NAME)}
        assert rows["000001"]["complete"] and rows["000001"]["champion"]
        assert rows["000002"]["complete"] is False and not rows["000002"]["champion"]
        assert len(storage.list_files(version_uri(registry, NAME, "000002"))) >= stored
        assert load(registry).version == "000001"  # every checksum of the champion verified after the crash

        summary = publish(run_b, registry)
        assert (summary.decision, summary.version, summary.champion) == ("approved", "000003", "000003")
        assert load(registry).version == "000003"
        assert [r["complete"] for r in list_versions(registry, NAME)] == [True, False, True]
        print(f"server restarts: {server.startup_seconds} s to ready; publish failed with: {last}")
    finally:
        server.stop()
