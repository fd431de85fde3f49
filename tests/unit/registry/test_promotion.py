"""Governed promotion, in process, on a local root and on the S3 API server: stage a candidate, sign it off or
reject it, roll back, a gate override recorded as forced, and gc of incomplete versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from support.registry import write_run

from xray_tasks import storage
from xray_tasks.config import GatePolicy
from xray_tasks.registry import (
    ChampionConflict,
    IntegrityError,
    gc,
    list_versions,
    load,
    promote,
    publish,
    read_decisions,
    reject,
)
from xray_tasks.registry.layout import CLAIM, champion_uri, version_uri

NAME = "xray-triage"


@pytest.fixture
def runs(tmp_path):
    def make(name: str, **kwargs):
        return str(write_run(tmp_path / "runs" / name, **kwargs))

    return make


def champion_of(registry: str) -> str | None:
    try:
        return json.loads(storage.read_bytes(champion_uri(registry, NAME)))["version"]
    except FileNotFoundError:
        return None


def rows(registry: str) -> dict[str, dict]:
    return {r["version"]: r for r in list_versions(registry, NAME)}


def test_a_staged_candidate_waits_for_sign_off_then_moves_the_champion(registry, runs):
    publish(runs("a", seed=1, auroc=0.8), registry)
    staged = publish(runs("b", seed=2, auroc=0.85), registry, stage=True)
    assert (staged.decision, staged.promoted, staged.version, staged.champion) == (
        "candidate",
        False,
        "000002",
        "000001",
    )
    assert champion_of(registry) == "000001" and load(registry).version == "000001"
    assert rows(registry)["000002"]["pending"] and not rows(registry)["000001"]["pending"]

    summary = promote(registry, NAME, "2", reason="reviewed the curves", actor="dr-review")
    assert (summary.decision, summary.promoted, summary.previous_champion, summary.champion) == (
        "approved",
        True,
        "000001",
        "000002",
    )
    assert champion_of(registry) == "000002" and not rows(registry)["000002"]["pending"]
    record = read_decisions(registry, NAME, "000002")[-1]
    assert (record["decision"], record["actor"], record["comment"], record["champion_before"]) == (
        "approved",
        "dr-review",
        "reviewed the curves",
        "000001",
    )
    pointer = json.loads(storage.read_bytes(champion_uri(registry, NAME)))
    assert pointer["decision"] == summary.decision_record and len(pointer["manifest_sha256"]) == 64


def test_a_rejected_candidate_leaves_the_champion_and_cannot_be_approved(registry, runs):
    publish(runs("a", seed=1, auroc=0.8), registry)
    publish(runs("b", seed=2, auroc=0.85), registry, stage=True)
    before = storage.read_bytes(champion_uri(registry, NAME))
    summary = reject(registry, NAME, 2, actor="dr-no", comment="artefacts on the left edge")
    assert (summary.decision, summary.promoted, summary.champion) == ("rejected_by_reviewer", False, "000001")
    assert storage.read_bytes(champion_uri(registry, NAME)) == before
    record = read_decisions(registry, NAME, "000002")[-1]
    assert (record["decision"], record["actor"], record["comment"]) == (
        "rejected_by_reviewer",
        "dr-no",
        "artefacts on the left edge",
    )
    assert not rows(registry)["000002"]["pending"]
    with pytest.raises(ValueError, match="latest decision is rejected_by_reviewer"):
        promote(registry, NAME, 2, reason="changed my mind", actor="dr-no")
    timed_out = publish(runs("c", seed=3, auroc=0.86), registry, stage=True)
    reject(registry, NAME, timed_out.version, decision="approval_timed_out", actor="airflow")
    assert read_decisions(registry, NAME, timed_out.version)[-1]["decision"] == "approval_timed_out"
    with pytest.raises(ValueError, match="is the champion"):
        reject(registry, NAME, 1, actor="dr-no")
    assert champion_of(registry) == "000001"


def test_rollback_restores_an_earlier_champion_and_records_it(registry, runs):
    publish(runs("a", seed=1, auroc=0.8), registry)
    publish(runs("b", seed=2, auroc=0.85), registry)
    assert champion_of(registry) == "000002"
    rejected = publish(runs("c", seed=3, auroc=0.55), registry)
    assert rejected.decision == "rejected"
    with pytest.raises(ValueError, match="needs a reason"):
        promote(registry, NAME, 1, reason=" ", actor="ops", decision="rolled_back")
    with pytest.raises(ValueError, match="never champion"):
        promote(registry, NAME, 3, reason="try", actor="ops", decision="rolled_back")
    with pytest.raises(ValueError, match="latest decision is rejected"):
        promote(registry, NAME, 3, reason="try", actor="ops")

    summary = promote(
        registry, NAME, 1, reason="000002 misses pneumothorax", actor="ops", decision="rolled_back"
    )
    assert (summary.previous_champion, summary.champion, summary.decision) == (
        "000002",
        "000001",
        "rolled_back",
    )
    assert load(registry).version == "000001"
    record = read_decisions(registry, NAME, "000001")[-1]
    assert (record["decision"], record["champion_before"], record["actor"]) == (
        "rolled_back",
        "000002",
        "ops",
    )
    again = promote(registry, NAME, 1, reason="twice", actor="ops", decision="rolled_back")
    assert (again.decision, again.promoted, again.decision_record) == ("unchanged", False, None)

    forced = promote(registry, NAME, 3, reason="pinned for a study", actor="ops", decision="forced")
    assert forced.champion == "000003"
    assert read_decisions(registry, NAME, "000003")[-1]["forced"] == {
        "by": "ops",
        "reason": "pinned for a study",
    }


def test_promote_refuses_incomplete_and_unverified_versions_and_a_stale_expectation(registry, runs):
    publish(runs("a", seed=1, auroc=0.8), registry)
    publish(runs("b", seed=2, auroc=0.85), registry, stage=True)
    vuri = version_uri(registry, NAME, "000002")
    model = storage.join(vuri, "model.keras")
    original = storage.read_bytes(model)
    storage.write_bytes(model, original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(IntegrityError, match="model.keras: sha256"):
        promote(registry, NAME, 2, reason="ok", actor="dr")
    storage.write_bytes(model, original)
    with pytest.raises(ChampionConflict, match="champion is 000001, not nothing"):
        promote(registry, NAME, 2, reason="ok", actor="dr", expected_champion=None)
    manifest = storage.join(vuri, "MANIFEST.json")
    raw = storage.read_bytes(manifest)
    storage.delete(manifest)
    with pytest.raises(IntegrityError, match="incomplete version"):
        promote(registry, NAME, 2, reason="ok", actor="dr", decision="forced")
    storage.write_bytes(manifest, raw)
    assert champion_of(registry) == "000001"
    assert promote(registry, NAME, 2, reason="ok", actor="dr", expected_champion="1").champion == "000002"


def test_a_gate_override_is_recorded_as_forced_with_the_changed_keys(registry, runs):
    deployment = GatePolicy()
    weakened = GatePolicy(min_auroc=0.0, min_auroc_ci_low=0.0)
    run = runs("weak", auroc=0.55)
    with pytest.raises(
        ValueError, match=r"changes \['gate.min_auroc', 'gate.min_auroc_ci_low'\].*needs a reason"
    ):
        publish(run, registry, policy=weakened, deployment_policy=deployment)
    assert not storage.exists(version_uri(registry, NAME, "000001"))
    summary = publish(
        run, registry, policy=weakened, deployment_policy=deployment, reason="pilot site data", actor="lead"
    )
    assert (summary.decision, summary.promoted) == ("forced", True)
    record = read_decisions(registry, NAME, summary.version)[-1]
    assert record["decision"] == "forced" and record["changed_keys"] == [
        "gate.min_auroc",
        "gate.min_auroc_ci_low",
    ]
    assert record["forced"] == {"by": "lead", "reason": "pilot site data"} and record["actor"] == "lead"
    # The same policy as the deployment's is no override: an ordinary decision.
    assert (
        publish(runs("b", seed=2, auroc=0.85), registry, deployment_policy=deployment).decision == "approved"
    )


def _make_incomplete(registry: str, version: str, claimed: datetime, extra_files: int = 2) -> None:
    vuri = version_uri(registry, NAME, version)
    storage.write_json(
        storage.join(vuri, CLAIM),
        {"version": version, "publish_id": "dead", "claimed_at": claimed.isoformat()},
    )
    for i in range(extra_files):
        storage.write_bytes(storage.join(vuri, "plots", f"part{i}.png"), b"x" * 10)


def test_gc_removes_only_old_incomplete_versions(registry, runs):
    publish(runs("a", seed=1, auroc=0.8), registry)  # 000001 champion
    old = datetime.now(UTC) - timedelta(days=2)
    _make_incomplete(registry, "000002", old)
    publish(runs("b", seed=2, auroc=0.7), registry)  # 000003 complete, rejected
    _make_incomplete(registry, "000004", datetime.now(UTC) - timedelta(hours=1))  # too young
    _make_incomplete(registry, "000005", old)
    publish(runs("c", seed=3, auroc=0.9), registry)  # 000006 complete champion
    _make_incomplete(registry, "000007", old)  # the newest id: kept
    assert champion_of(registry) == "000006" and rows(registry)["000003"]["complete"]

    before = {v: storage.list_files(version_uri(registry, NAME, v)) for v in rows(registry)}
    dry = gc.collect(registry, NAME)
    assert [r["version"] for r in dry["removable"]] == ["000002", "000005"] and dry["removed"] == []
    kept = {r["version"]: r["why"] for r in dry["kept"]}
    assert kept["000001"] == "complete" and kept["000003"] == "complete" and kept["000006"] == "champion"
    assert "younger than" in kept["000004"] and "newest id" in kept["000007"]
    assert {v: storage.list_files(version_uri(registry, NAME, v)) for v in rows(registry)} == before

    applied = gc.collect(registry, NAME, older_than="24h", apply=True)
    assert applied["removed"] == ["000002", "000005"]
    assert sorted(rows(registry)) == ["000001", "000003", "000004", "000006", "000007"]
    for v in ("000001", "000003", "000006"):
        assert storage.list_files(version_uri(registry, NAME, v)) == before[v]
    assert load(registry).version == "000006" and load(registry, version=1).version == "000001"
    assert gc.collect(registry, NAME, older_than="30m", apply=True)["removed"] == ["000004"]
    with pytest.raises(ValueError, match="--older-than"):
        gc.collect(registry, NAME, older_than="soon")
