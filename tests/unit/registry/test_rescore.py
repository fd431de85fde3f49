"""The gate on different test splits: the champion is re-scored on the candidate's test shards, or the publish
stops with the reason; it never compares numbers computed on different images."""

from __future__ import annotations

import shutil

import pytest
from support.registry import make_workspace, tiny_model, write_run

from xray_tasks.config import GatePolicy
from xray_tasks.evaluation import evaluate, metrics
from xray_tasks.registry import RegistryError, list_versions, publish, read_decisions

NAME = "xray-triage"
# Floors off: these tests are about the comparison with the champion only.
POLICY = GatePolicy(min_auroc=0.0, min_auroc_ci_low=0.0)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A workspace, its test split's digest and image names, and the champion model's (seed 1) AUROC there."""
    _, ws = make_workspace(tmp_path_factory.mktemp("rescore"), patients=120)  # unhealthy studies in val too
    frame = evaluate.predict_split(tiny_model(seed=1), str(ws), "test")
    auroc = metrics.auroc(frame["label"].to_numpy(), frame["probability"].to_numpy())
    return str(ws), evaluate.split_digest(frame), list(frame["image_index"]), auroc


@pytest.fixture
def champion_registry(tmp_path):
    """A registry whose champion (seed 1) was evaluated on another test split than the workspace's."""
    registry = str(tmp_path / "registry")
    publish(str(write_run(tmp_path / "old", seed=1)), registry, policy=POLICY)  # its own, synthetic split
    return registry


def test_a_worse_candidate_on_a_new_split_loses_to_the_rescored_champion(split, champion_registry, tmp_path):
    ws, digest, _indices, champion_auroc = split
    run = write_run(tmp_path / "new", seed=2, workspace=ws, auroc=champion_auroc - 0.05)
    summary = publish(str(run), champion_registry, policy=POLICY)
    assert summary.decision == "rejected"
    assert (
        read_decisions(champion_registry, NAME, "000002")[0]["gate"]["context"]["test_split_digest"] == digest
    )
    check = read_decisions(champion_registry, NAME, "000002")[0]["gate"]["context"]["champion"]
    assert check["basis"] == "rescored" and check["version"] == "000001"
    assert check["auroc"] == pytest.approx(champion_auroc, abs=1e-9)
    assert any("re-scored on the candidate's test split" in r for r in summary.reasons)


def test_a_better_candidate_on_a_new_split_wins(split, champion_registry, tmp_path):
    ws, _digest, _indices, champion_auroc = split
    run = write_run(tmp_path / "new", seed=2, workspace=ws, auroc=min(1.0, max(0.9, champion_auroc + 0.05)))
    summary = publish(str(run), champion_registry, policy=POLICY)
    assert (summary.decision, summary.champion) == ("approved", "000002")


def test_shards_that_are_not_the_candidates_split_stop_the_publish(split, champion_registry, tmp_path):
    ws, _digest, indices, _ = split
    run = write_run(tmp_path / "new", seed=2, workspace=ws, test_indices=indices[:-1])  # one study fewer
    with pytest.raises(RegistryError, match="not the split the candidate was evaluated on"):
        publish(str(run), champion_registry, policy=POLICY)
    assert [r["version"] for r in list_versions(champion_registry, NAME)] == ["000001"]  # nothing uploaded


def test_an_unreadable_workspace_stops_the_publish(split, champion_registry, tmp_path):
    ws, _, _, _ = split
    labels_only = tmp_path / "labels-only"  # the manifest (labels) without the shards the champion would need
    shutil.copytree(f"{ws}/manifest", labels_only / "manifest")
    run = write_run(tmp_path / "new", seed=2, workspace=str(labels_only))
    with pytest.raises(RegistryError, match="cannot be read"):
        publish(str(run), champion_registry, policy=POLICY)


def test_the_rescored_champion_feeds_the_paired_comparison(split, champion_registry, tmp_path):
    import json

    from support.registry import split_frame, tiny_model

    from xray_tasks.data.manifest import read_manifest

    ws, _, indices, champion_auroc = split
    frame = evaluate.predict_split(tiny_model(seed=2), ws, "test")
    val = read_manifest(ws).query("split == 'val'")
    val = split_frame(val["image_index"], val["label"], val["patient_id"], 0.8)
    run = write_run(
        tmp_path / "new", seed=2, workspace=ws, baseline=False, predictions={"val": val, "test": frame}
    )
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["test"]["auroc"] == pytest.approx(metrics.auroc(frame["label"], frame["probability"]))
    summary = publish(str(run), champion_registry, policy=POLICY)
    champion = read_decisions(champion_registry, NAME, summary.version)[0]["gate"]["context"]["champion"]
    paired = champion["paired"]
    assert champion["basis"] == "rescored" and paired["reference"] == "champion 000001"
    assert paired["reference_auroc"] == pytest.approx(champion_auroc, abs=1e-9)  # the champion on this split
    assert paired["candidate_auroc"] == pytest.approx(doc["test"]["auroc"]) and paired["n"] == len(indices)
    assert paired["resamples"] == 200 and paired["delta_ci"][0] <= paired["delta"] <= paired["delta_ci"][1]
