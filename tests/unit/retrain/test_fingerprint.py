"""The fingerprint: equal for what trains the same model, different when data, config, code or weights differ;
found in the registry whatever the version's decision."""

from __future__ import annotations

import json

import pytest
from support.registry import write_run
from support.retrain import add_archive, make_source, relabel

from xray_tasks import registry as reg
from xray_tasks import storage
from xray_tasks.config import IngestConfig, override, profile
from xray_tasks.contracts import Fingerprint, RetrainOverride
from xray_tasks.data import source_state
from xray_tasks.data.ingest import ingest_archive
from xray_tasks.data.manifest import run_manifest
from xray_tasks.registry.catalog import find_by_fingerprint, list_versions
from xray_tasks.training import fingerprint

CFG = IngestConfig(image_size=32, shard_target_mb=0.02)
CODE = {"package": "0.1.0", "commit": "abc123"}


def ingest_news(source: str, workspace: str) -> None:
    check = source_state.check(source, workspace, CFG)
    if check.rebuild_manifest:
        run_manifest(source, workspace, CFG)
    for archive in check.ingest:
        if archive in check.replace:
            source_state.retire(workspace, archive)
        ingest_archive(archive, workspace, CFG)
    source_state.record(workspace, check.state)


def demo(workspace: str, **keys):
    return override(profile("demo"), {"workspace": workspace, **keys})


def test_same_inputs_same_fingerprint_and_each_part_is_told_apart(where, tmp_path):
    source, ws = storage.join(where, "source"), storage.join(where, "ws")
    src = make_source(tmp_path, source)
    ingest_news(source, ws)
    base = fingerprint.compute(ws, demo(ws), CODE)
    assert fingerprint.compute(ws, demo(ws), CODE) == base
    # Run-local fields are not part of it: locations, model name, the gate policy.
    local = demo(ws, registry="/elsewhere", model_name="other", **{"gate.min_auroc": 0.9})
    assert fingerprint.compute(ws, local, CODE).digest == base.digest

    epochs = fingerprint.compute(ws, demo(ws, **{"head.epochs": 7}), CODE)
    assert epochs.digest != base.digest
    assert fingerprint.changes(base.to_dict(), epochs.to_dict()) == ["config"]
    code = fingerprint.compute(ws, demo(ws), {**CODE, "commit": "def456"})
    assert fingerprint.changes(base.to_dict(), code.to_dict()) == ["code"]
    seed = fingerprint.compute(ws, demo(ws, **{"features.seed": 3}), CODE)
    assert fingerprint.changes(base.to_dict(), seed.to_dict()) == ["config", "weights"]

    add_archive(src)
    ingest_news(source, ws)
    more = fingerprint.compute(ws, demo(ws), CODE)
    assert more.shards > base.shards and fingerprint.changes(base.to_dict(), more.to_dict()) == ["data"]
    relabel(src, tmp_path)
    ingest_news(source, ws)
    relabelled = fingerprint.compute(ws, demo(ws), CODE)
    assert relabelled.manifest_sha256 != more.manifest_sha256
    assert fingerprint.changes(more.to_dict(), relabelled.to_dict()) == ["data"]


def test_the_same_data_ingested_into_another_workspace_has_the_same_fingerprint(tmp_path):
    source = str(tmp_path / "source")
    make_source(tmp_path, source, hold_back=0)
    ingest_news(source, str(tmp_path / "a"))
    ingest_news(source, str(tmp_path / "b"))  # other timings and paths in the markers, the same shards
    a = fingerprint.compute(str(tmp_path / "a"), demo(str(tmp_path / "a")), CODE)
    b = fingerprint.compute(str(tmp_path / "b"), demo(str(tmp_path / "b")), CODE)
    assert a.digest == b.digest


def test_fingerprint_round_trips_through_the_run_and_needs_committed_shards(tmp_path):
    with pytest.raises(Exception, match="no manifest to fingerprint"):
        fingerprint.compute(str(tmp_path / "empty"), demo(str(tmp_path / "empty")), CODE)
    run = str(tmp_path / "run")
    assert fingerprint.read(run) is None
    fp = Fingerprint(
        digest="d" * 64,
        manifest_sha256="m" * 64,
        shards_sha256="s" * 64,
        shards=3,
        config_sha256="c" * 64,
        code="0.1.0+abc",
        weights="random:seed=0",
        retrain=RetrainOverride(by="airflow:admin", reason="new GPU driver", version="000001"),
    )
    fingerprint.write(run, fp)
    assert fingerprint.read(run) == fp
    assert fingerprint.changes(None, fp.to_dict()) == ["first"]
    assert fingerprint.changes({}, fp.to_dict()) == ["unknown"]


def fingerprinted_run(path, digest: str, seed: int = 0, auroc: float = 0.8):
    """A run whose metrics.json (computed from its predictions, as publish checks) carries ``digest``."""
    run = write_run(path, seed=seed, auroc=auroc)
    doc = json.loads((run / "metrics.json").read_text())
    doc["fingerprint"] = {
        "schema": 1,
        "digest": digest,
        "manifest_sha256": "m" * 64,
        "shards_sha256": "s" * 64,
        "shards": 2,
        "config_sha256": "c" * 64,
        "code": "0.1.0+abc",
        "weights": "random:seed=0",
        "retrain": None,
    }
    (run / "metrics.json").write_text(json.dumps(doc))
    return str(run)


def test_the_registry_finds_a_version_by_fingerprint_whatever_its_decision(registry, tmp_path):
    assert find_by_fingerprint(registry, "xray-triage", "a" * 64) is None  # no model yet
    first = reg.publish(fingerprinted_run(tmp_path / "r1", "a" * 64), registry)
    rejected = reg.publish(fingerprinted_run(tmp_path / "r2", "b" * 64, auroc=0.55), registry)
    assert first.decision == "approved" and rejected.decision == "rejected"
    better = reg.publish(fingerprinted_run(tmp_path / "r3", "c" * 64, auroc=0.9, seed=3), registry)
    assert better.promoted

    found = find_by_fingerprint(registry, "xray-triage", "a" * 64)
    assert found["version"] == first.version and found["decision"] == "approved, superseded"
    assert not found["champion"]
    assert find_by_fingerprint(registry, "xray-triage", "b" * 64)["decision"] == "rejected"
    champion = find_by_fingerprint(registry, "xray-triage", "c" * 64)
    assert champion["champion"] and champion["version"] == better.version
    assert find_by_fingerprint(registry, "xray-triage", "e" * 64) is None
    rows = {r["version"]: r for r in list_versions(registry, "xray-triage")}
    assert rows[first.version]["fingerprint"]["digest"] == "a" * 64


def test_the_cli_takes_the_arguments_the_training_plan_passes():
    from xray_tasks.cli import build_parser

    args = build_parser().parse_args(
        ["fingerprint", "--profile", "demo", "--workspace", "w", "--registry", "r", "--model-name", "m"]
        + [
            "--set",
            "head.epochs=3",
            "--run-dir",
            "w/runs/x",
            "--retrain-reason",
            "why",
            "--actor",
            "airflow:a",
        ]
    )
    assert (args.model_name, args.registry, args.run_dir, args.retrain_reason) == (
        "m",
        "r",
        "w/runs/x",
        "why",
    )
