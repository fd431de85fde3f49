"""Rollback racing a publish, with one side in a child process paused right before its swap
(``XRAY_REGISTRY_TEST_PAUSE=before_promote=N``): whichever swaps second finds the pointer moved, records a
``conflict`` and fails; exactly one champion remains.  On a local root and on the S3 API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from support.registry import write_run

from xray_tasks import storage
from xray_tasks.registry import list_versions, load, promote, publish, read_decisions
from xray_tasks.registry.layout import PAUSE_ENV, champion_uri

pytestmark = pytest.mark.slow
NAME = "xray-triage"
CLI = [sys.executable, "-m", "xray_tasks.cli"]


def child(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, *argv],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", PAUSE_ENV: "before_promote=4"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_decision(registry: str, version: str, decision: str, proc: subprocess.Popen) -> None:
    """Block until the child has recorded ``decision`` on ``version`` (it then sleeps before its swap)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if any(d["decision"] == decision for d in read_decisions(registry, NAME, version)):
                return
        except (FileNotFoundError, OSError):
            pass
        if proc.poll() is not None:
            raise AssertionError(f"child ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"no {decision} record on {version}")


def champions(registry: str) -> list[str]:
    return [r["version"] for r in list_versions(registry, NAME) if r["champion"]]


@pytest.fixture
def two_champions(registry, tmp_path):
    publish(str(write_run(tmp_path / "a", seed=1, auroc=0.8)), registry)
    publish(str(write_run(tmp_path / "b", seed=2, auroc=0.85)), registry)
    assert champions(registry) == ["000002"]
    return registry


def test_a_rollback_during_a_publish_wins_and_the_publish_is_refused(two_champions, tmp_path):
    registry = two_champions
    run = str(write_run(tmp_path / "c", seed=3, auroc=0.9))
    proc = child("publish", "--run-dir", run, "--registry", registry)
    wait_for_decision(
        registry, "000003", "approved", proc
    )  # gated against 000002, now paused before its swap
    summary = promote(registry, NAME, 1, reason="000002 regressed", actor="ops", decision="rolled_back")
    assert (summary.previous_champion, summary.champion) == ("000002", "000001")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err[-2000:]
    assert "the champion changed while this publish ran" in err.strip().splitlines()[-1]
    assert champions(registry) == ["000001"] and load(registry).version == "000001"
    assert json.loads(storage.read_bytes(champion_uri(registry, NAME)))["previous"] == "000002"
    assert [d["decision"] for d in read_decisions(registry, NAME, "000003")] == ["approved", "conflict"]


def test_a_publish_during_a_rollback_wins_and_the_rollback_is_refused(two_champions, tmp_path):
    registry = two_champions
    proc = child(
        "models", "promote", "--registry", registry, "--version", "1", "--decision", "rolled_back",
        "--reason", "000002 regressed", "--actor", "ops",
    )  # fmt: skip
    wait_for_decision(registry, "000001", "rolled_back", proc)
    summary = publish(str(write_run(tmp_path / "c", seed=3, auroc=0.9)), registry)
    assert summary.champion == "000003"
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err[-2000:]
    assert "the champion changed" in err.strip().splitlines()[-1]
    assert champions(registry) == ["000003"] and load(registry).version == "000003"
    assert [d["decision"] for d in read_decisions(registry, NAME, "000001")][-2:] == [
        "rolled_back",
        "conflict",
    ]
