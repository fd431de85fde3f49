"""train: the head learns from stored features, stops early with the best weights, weights classes, and writes
its run artifacts; features here are synthetic vectors written in the features format (no base needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.models import make_workspace, tiny_config

from xray_tasks import storage
from xray_tasks.contracts import FeatureProvenance
from xray_tasks.data import shards
from xray_tasks.data.manifest import read_manifest
from xray_tasks.evaluation import metrics
from xray_tasks.training import features, head, networks
from xray_tasks.workspace import Workspace

DIM = 24


def write_features(workspace: str, scale: float = 1.0, seed: int = 0) -> None:
    """Class-dependent Gaussian vectors (``scale`` sets their magnitude) for every committed shard."""
    rng = np.random.default_rng(seed)
    manifest = read_manifest(workspace).set_index("image_index")
    direction = rng.normal(size=DIM)
    for marker in shards.read_markers(workspace):
        for entry in marker.shards:
            rows = manifest.loc[list(entry.images)]
            label = rows["label"].to_numpy()
            vectors = (rng.normal(size=(len(rows), DIM)) + 1.2 * np.outer(label, direction)) * scale
            provenance = FeatureProvenance(
                base="mobilenetv3small",
                weights="synthetic",
                input_size=64,
                stored_image_size=64,
                encoding="raw",
                shard=entry.path,
                shard_sha256=entry.sha256,
                pathologies=features.PATHOLOGIES,
            )
            table = features.to_table(
                entry.images,
                rows["patient_id"].to_numpy(),
                entry.split,
                label,
                rows[list(features.PATHOLOGIES)].to_numpy(),
                vectors.astype(np.float32),
                provenance,
            )
            uri = Workspace(workspace).feature_file("mobilenetv3small", 64, entry.split, entry.path)
            features._write(table, uri)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("train"), patients=150, archives=1, shard_mb=0.2)
    write_features(ws)
    return ws


def test_class_sample_weights_balance_the_classes():
    weights = head.class_sample_weights(np.array([0, 0, 0, 1]))
    np.testing.assert_allclose(weights, [4 / 6, 4 / 6, 4 / 6, 2.0])
    assert weights[:3].sum() == pytest.approx(weights[3:].sum())
    with pytest.raises(ValueError, match="needs both classes"):
        head.class_sample_weights(np.array([1, 1]))


def test_head_learns_and_keeps_the_best_epoch(workspace, tmp_path):
    cfg = tiny_config(
        workspace, head__epochs="60", head__patience="5", head__standardize="false", head__hidden_units="32"
    )
    run = str(tmp_path / "run")
    summary = head.train_head(workspace, run, cfg)
    record = json.loads((tmp_path / "run" / "head" / "history.json").read_text())
    history = record["history"]
    assert {"loss", "val_loss", "accuracy", "val_accuracy", "val_auroc"} <= set(history)
    assert summary.epochs_run == len(history["loss"]) <= 60
    best = int(np.argmin(history["val_loss"]))
    assert summary.best_epoch == record["best_epoch"] == best + 1
    if summary.epochs_run < 60:  # stopped early: exactly `patience` epochs after the best
        assert summary.epochs_run == best + 1 + 5
    head_model = networks.load_model(summary.head)
    val = features.load_features(workspace, "mobilenetv3small", 64, "val")
    probs = networks.triage_probability(head_model.predict(val.features, verbose=0))
    # restored weights are the best epoch's: their val AUROC is the one recorded for that epoch
    assert metrics.auroc(val.label, probs) == pytest.approx(history["val_auroc"][best], abs=1e-6)
    assert summary.val_auroc > 0.9
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["head"]["hidden_units"] == 32 and saved["features"]["base"] == "mobilenetv3small"


def test_head_training_writes_tensorboard_scalars_per_epoch(workspace, tmp_path):
    from xray_tasks.training.telemetry import read_scalars

    cfg = tiny_config(workspace, head__epochs="6", head__patience="0", head__hidden_units="16")
    head.train_head(workspace, str(tmp_path / "run"), cfg)
    history = json.loads((tmp_path / "run" / "head" / "history.json").read_text())["history"]
    scalars = read_scalars(tmp_path / "run" / "tensorboard" / "head")
    train, val = scalars["train"], scalars["validation"]
    # the event files hold each epoch's loss, the same numbers Keras' history has
    assert [step for step, _ in train["epoch_loss"]] == list(range(6))
    np.testing.assert_allclose([v for _, v in train["epoch_loss"]], history["loss"], rtol=1e-5)
    np.testing.assert_allclose([v for _, v in val["epoch_loss"]], history["val_loss"], rtol=1e-5)
    np.testing.assert_allclose([v for _, v in val["epoch_auroc"]], history["val_auroc"], rtol=1e-5)
    assert [v for _, v in train["epoch_learning_rate"]] == pytest.approx([cfg.head.learning_rate] * 6)


def test_multilabel_head_and_class_weighting(workspace, tmp_path):
    cfg = tiny_config(
        workspace,
        head__epochs="3",
        head__patience="0",
        head__multilabel="true",
        head__class_weight="true",
        head__hidden_units="16",
    )
    summary = head.train_head(workspace, str(tmp_path / "run"), cfg)
    assert summary.epochs_run == 3 and summary.best_epoch == 3
    head_model = networks.load_model(summary.head)
    out = head_model.predict(np.zeros((2, DIM), np.float32), verbose=0)
    assert out["pathologies"].shape == (2, 14) and out["triage"].shape == (2, 2)


def test_vanishing_features_need_the_standardising_head(tmp_path, caplog):
    ws = make_workspace(tmp_path, patients=80, archives=1, shard_mb=0.2)
    write_features(ws, scale=1e-9)
    plain = tiny_config(ws, head__epochs="15", head__patience="0", head__standardize="false")
    with caplog.at_level("WARNING", logger="xray_tasks.training.head"):
        flat = head.train_head(ws, str(tmp_path / "plain"), plain)
    assert "head.standardize=true" in caplog.text
    scaled = head.train_head(
        ws, str(tmp_path / "scaled"), tiny_config(ws, head__epochs="15", head__patience="0")
    )
    assert scaled.val_auroc > 0.9 and scaled.val_loss < flat.val_loss


def test_train_refuses_missing_features_and_one_class_splits(tmp_path):
    ws = make_workspace(tmp_path, patients=20, archives=1)
    with pytest.raises(FileNotFoundError, match="no features"):
        head.train_head(ws, str(tmp_path / "run"), tiny_config(ws))
    write_features(ws)
    for marker in shards.read_markers(ws):
        for entry in marker.entries("val"):
            if entry.split == "val":
                uri = Workspace(ws).feature_file("mobilenetv3small", 64, "val", entry.path)
                table = features.pq.read_table(uri)
                n = table.num_rows
                ones = features.pa.array(np.zeros(n, np.int8), features.pa.int8())
                storage.delete(uri)
                features.pq.write_table(
                    table.set_column(table.schema.get_field_index("label"), "label", ones), uri
                )
    with pytest.raises(ValueError, match="val features hold one class only"):
        head.train_head(ws, str(tmp_path / "run"), tiny_config(ws))
