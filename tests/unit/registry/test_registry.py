"""The registry end to end, in process, on a local-path root and on the loopback S3 server (same tests)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from support.registry import INPUT_SIZE, STORED_SIZE, tiny_model, write_run, xray_pngs

from xray_tasks import storage
from xray_tasks.registry import (
    ChampionConflict,
    IntegrityError,
    RegistryError,
    inference,
    list_models,
    list_versions,
    load,
    pointers,
    publish,
    read_artifact,
    read_decisions,
    version_details,
)
from xray_tasks.registry.layout import champion_uri, version_uri

NAME = "xray-triage"


@pytest.fixture
def runs(tmp_path):
    """Factory: an evaluated run directory with the given seed and metrics."""

    def make(name: str, **kwargs):
        return str(write_run(tmp_path / "runs" / name, **kwargs))

    return make


def champion_bytes(registry: str) -> bytes:
    return storage.read_bytes(champion_uri(registry, NAME))


def test_publish_then_load_gives_the_same_predictions(registry, runs, tmp_path):
    run = runs("a", seed=1)
    summary = publish(run, registry)
    assert (summary.decision, summary.promoted, summary.version, summary.champion) == (
        "approved",
        True,
        "000001",
        "000001",
    )
    assert summary.previous_champion is None and summary.uploaded_bytes > 0

    blobs = xray_pngs(6)
    batch = inference.prepare_images(blobs, STORED_SIZE, INPUT_SIZE)
    import keras

    before = inference.triage_probabilities(keras.saving.load_model(f"{run}/model.keras"), batch)
    published = load(registry)
    after = published.probabilities(blobs)
    np.testing.assert_array_equal(before, after)
    assert len(set(np.round(after, 6))) > 1  # the images really differ, so equality means something
    threshold = storage.read_json(f"{run}/metrics.json")["operating_point"]["threshold"]
    assert (published.version, published.champion, published.threshold) == ("000001", True, threshold)

    # The TF Serving export answers the same through its serving_default signature.
    import tensorflow as tf

    vuri = version_uri(registry, NAME, "000001")
    local = tmp_path / "serving"
    for uri in storage.list_files(storage.join(vuri, "serving")):
        storage.get_file(uri, local / uri[len(storage.join(vuri, "serving")) :].lstrip("/"))
    signature = tf.saved_model.load(str(local / "1")).signatures["serving_default"]
    served = next(iter(signature(image=tf.constant(batch)).values())).numpy()[:, 1]
    np.testing.assert_allclose(served, before, rtol=0, atol=1e-6)


def test_a_model_with_a_pathology_head_publishes_and_predicts_the_same(registry, runs):
    run = runs("multi", seed=4, pathologies=True)
    publish(run, registry)
    import keras

    blobs = xray_pngs(3)
    original = keras.saving.load_model(f"{run}/model.keras")
    before = inference.triage_probabilities(
        original, inference.prepare_images(blobs, STORED_SIZE, INPUT_SIZE)
    )
    np.testing.assert_array_equal(before, load(registry).probabilities(blobs))


def test_a_version_holds_every_artifact_with_its_checksum(registry, runs):
    publish(runs("a"), registry)
    details = version_details(registry, NAME)
    files = details["manifest"]["files"]
    for rel in (
        "model.keras",
        "metrics.json",
        "config.json",
        "model_card.md",
        "plots/roc.png",
        "predictions/test.parquet",
        "predictions/val.parquet",
        "serving/1/saved_model.pb",
    ):
        assert rel in files and len(files[rel]["sha256"]) == 64 and files[rel]["size"] > 0
    assert not any(rel.startswith("head/") for rel in files)  # training leftovers are not published
    manifest = details["manifest"]
    assert len(manifest["data"]["manifest_sha256"]) == 64 and manifest["code_version"]["package"]
    assert manifest["data"]["test_split_digest"].startswith("split-v1:")
    assert manifest["created_at"].endswith("Z") and details["champion"] is True
    assert set(details["plots"]) == {"roc.png", "pr.png"}
    assert read_artifact(registry, NAME, "000001", "plots/roc.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert details["decisions"][0]["decision"] == "approved"
    assert list_models(registry) == [NAME]


def test_gate_rejects_a_worse_candidate_and_keeps_the_champion(registry, runs):
    publish(runs("good", seed=1, auroc=0.85), registry)
    before = champion_bytes(registry)
    summary = publish(runs("worse", seed=2, auroc=0.80), registry)
    assert (summary.decision, summary.promoted, summary.champion) == ("rejected", False, "000001")
    assert any("champion 000001" in r for r in summary.reasons)
    assert champion_bytes(registry) == before
    assert load(registry).version == "000001"
    rows = {r["version"]: r for r in list_versions(registry, NAME)}
    assert rows["000002"]["complete"] and not rows["000002"]["champion"]
    assert rows["000002"]["decision"] == "rejected" and rows["000002"]["reasons"]


def test_first_model_below_the_floors_is_recorded_and_not_promoted(registry, runs):
    summary = publish(runs("weak", auroc=0.55), registry)
    assert summary.decision == "rejected" and summary.champion is None
    assert not storage.exists(champion_uri(registry, NAME))
    assert read_decisions(registry, NAME, "000001")[0]["reasons"] == list(summary.reasons)
    with pytest.raises(RegistryError, match="no champion yet"):
        load(registry)


def test_forced_publish_records_who_and_why(registry, runs):
    publish(runs("good", seed=1, auroc=0.85), registry)
    with pytest.raises(ValueError, match="needs a reason"):
        publish(runs("worse", seed=2, auroc=0.80), registry, force=True)
    summary = publish(
        runs("worse", seed=2, auroc=0.80), registry, force=True, reason="rollback test", actor="dr-ops"
    )
    assert (summary.decision, summary.promoted, summary.champion) == ("forced", True, "000002")
    record = read_decisions(registry, NAME, "000002")[-1]
    assert record["forced"] == {"by": "dr-ops", "reason": "rollback test"}
    assert record["gate"]["passed"] is False and record["champion_before"] == "000001"


def test_republishing_a_run_uploads_nothing_and_changes_nothing(registry, runs):
    run = runs("a")
    publish(run, registry)
    before = champion_bytes(registry)
    again = publish(run, registry)
    assert (again.decision, again.version, again.uploaded_bytes) == ("unchanged", "000001", 0)
    assert champion_bytes(registry) == before
    assert pointers.version_ids(registry, NAME) == ["000001"]


def test_a_rejected_version_is_promoted_without_reupload_when_it_passes_later(registry, runs):
    run = runs("a", auroc=0.7)
    assert publish(run, registry, policy=_policy(min_auroc=0.75)).decision == "rejected"
    summary = publish(run, registry)
    assert (summary.decision, summary.version, summary.reused, summary.uploaded_bytes) == (
        "approved",
        "000001",
        True,
        0,
    )
    assert [d["decision"] for d in read_decisions(registry, NAME, "000001")] == ["rejected", "approved"]


def test_the_consumer_refuses_a_version_with_one_byte_changed(registry, runs):
    publish(runs("a"), registry)
    vuri = version_uri(registry, NAME, "000001")
    for rel in ("model.keras", "serving/1/saved_model.pb", "plots/pr.png"):
        uri = storage.join(vuri, *rel.split("/"))
        original = storage.read_bytes(uri)
        tampered = bytearray(original)
        tampered[len(tampered) // 2] ^= 0x01
        storage.write_bytes(uri, bytes(tampered))
        with pytest.raises(IntegrityError, match=rel.replace(".", r"\.")):
            load(registry)
        storage.write_bytes(uri, original)
    assert load(registry).version == "000001"


def test_the_consumer_refuses_a_rewritten_manifest_and_an_incomplete_version(registry, runs):
    publish(runs("a"), registry)
    vuri = version_uri(registry, NAME, "000001")
    manifest = storage.read_json(storage.join(vuri, "MANIFEST.json"))
    manifest["created_at"] = "2000-01-01T00:00:00.000Z"
    storage.write_json(storage.join(vuri, "MANIFEST.json"), manifest)
    with pytest.raises(IntegrityError, match="not the manifest the champion pointer promoted"):
        load(registry)
    storage.delete(storage.join(vuri, "MANIFEST.json"))
    with pytest.raises(IntegrityError, match="incomplete version"):
        load(registry, version=1)
    assert [r["complete"] for r in list_versions(registry, NAME)] == [False]


def test_a_missing_file_is_refused(registry, runs):
    publish(runs("a"), registry)
    storage.delete(storage.join(version_uri(registry, NAME, "000001"), "predictions", "val.parquet"))
    with pytest.raises(IntegrityError, match="predictions/val.parquet: missing"):
        load(registry)


def test_a_named_version_loads_even_when_it_is_not_the_champion(registry, runs):
    publish(runs("a", seed=1, auroc=0.85), registry)
    publish(runs("b", seed=2, auroc=0.80), registry)
    published = load(registry, version="2")
    assert (published.version, published.champion) == ("000002", False)
    with pytest.raises(RegistryError, match="no such version|incomplete"):
        version_details(registry, NAME, 9)


@pytest.mark.s3
def test_large_files_go_up_in_parts_and_verify(s3_bucket, runs, monkeypatch):
    registry = s3_bucket + "/registry"
    monkeypatch.setattr(storage, "MULTIPART_THRESHOLD", 5 * 2**20)  # S3's smallest part size
    run = runs("a")
    with open(f"{run}/plots/threshold_sweep.png", "wb") as fh:
        fh.write(np.random.default_rng(0).bytes(11 * 2**20))
    publish(run, registry)
    bucket, key = storage.split_s3(
        storage.join(version_uri(registry, NAME, "000001"), "plots", "threshold_sweep.png")
    )
    etag = storage.s3_client().head_object(Bucket=bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
    assert load(registry).manifest["files"]["plots/threshold_sweep.png"]["size"] == 11 * 2**20


def test_concurrent_claims_get_distinct_versions(registry):
    got: list[str] = []
    barrier = threading.Barrier(4)

    def claim(i: int) -> None:
        barrier.wait()
        got.append(pointers.claim_version(registry, NAME, f"publish-{i}", {}))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == ["000001", "000002", "000003", "000004"]


def test_a_swap_from_a_stale_champion_is_refused_and_recorded(registry, runs):
    publish(runs("a", seed=1), registry)
    _, stale = pointers.read_champion(registry, NAME)
    publish(runs("b", seed=2, auroc=0.9), registry)
    with pytest.raises(ChampionConflict, match="champion is now 000002"):
        pointers.swap_champion(registry, NAME, {"version": "000001", "previous": "000001"}, stale)
    assert json.loads(champion_bytes(registry))["version"] == "000002"


def test_run_directory_problems_are_clear(registry, runs, tmp_path):
    run = runs("a")
    storage.delete(f"{run}/model_card.md")
    with pytest.raises(ValueError, match="model_card.md"):
        publish(run, registry)
    bad = write_run(tmp_path / "wrong-size", input_size=INPUT_SIZE)
    metrics = json.loads((bad / "metrics.json").read_text())
    metrics["model"]["input_size"] = 64
    (bad / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=r"shape \(None, 64, 64, 3\)"):
        publish(str(bad), registry)
    with pytest.raises(ValueError, match="model name"):
        publish(run, registry, model_name="Bad Name")


def test_a_model_with_the_wrong_interface_is_not_published(registry, tmp_path):
    run = write_run(tmp_path / "run")
    import keras

    model = tiny_model()

    renamed = keras.Model(model.inputs, keras.layers.Identity(name="scores")(model.outputs[0]))
    renamed.save(run / "model.keras")
    with pytest.raises(ValueError, match="output named 'triage'"):
        publish(str(run), registry)


def _policy(**kwargs):
    from xray_tasks.config import GatePolicy

    return GatePolicy(**kwargs)
