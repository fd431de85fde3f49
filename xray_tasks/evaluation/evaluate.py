"""Evaluation: predictions for val and test, metrics on the official patient-wise test split, plots, model card.

Honest by construction, where the report was not: the test split is patient-wise (from the official lists), and
the operating point is chosen on *validation* (the most healthy studies cleared at the target sensitivity, see
``metrics.choose_threshold``), then applied unchanged to test.  Every test figure sits beside the always-unhealthy benchmark on the same
studies.  ``score`` needs only the two prediction tables (no TensorFlow), so the registry's gate can re-score a
champion's predictions with the same code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from xray_tasks import storage
from xray_tasks.config import PATHOLOGIES, EvalConfig, PipelineConfig
from xray_tasks.errors import BadInput, MissingInput
from xray_tasks.evaluation import metrics

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("image_index", "patient_id", "probability", "label")
METRICS_FILE = "metrics.json"
SCHEMA = 1


def predictions_uri(run_dir: str, split: str) -> str:
    return storage.join(run_dir, "predictions", f"{split}.parquet")


def predict_split(model: Any, workspace: str, split: str, batch_size: int = 64) -> pd.DataFrame:
    """P(unhealthy) for every committed image of ``split``, in shard order.

    Columns ``image_index, patient_id, probability, label``; with a "pathologies" output also
    ``prob_<finding>`` and ``label_<finding>`` for the 14 findings.  Images are resized to the model's input.
    """
    import tensorflow as tf

    from xray_tasks.data import dataset
    from xray_tasks.training import networks

    if batch_size < 1:
        raise BadInput(f"batch_size must be >= 1, got {batch_size}")
    size = int(model.inputs[0].shape[1])
    ds = dataset.split_dataset(workspace, split, batch_size=batch_size, output_size=size, channels=3)
    parts: dict[str, list] = {"image_index": [], "patient_id": [], "probability": [], "label": [], "path": [],
                              "labels": []}
    started = time.perf_counter()
    for batch in ds:
        # predict_on_batch reuses the model's own compiled predict function (traced once, any batch size).
        out = model.predict_on_batch(tf.cast(batch["image"], tf.float32))
        parts["probability"].append(networks.triage_probability(out))
        if isinstance(out, dict) and networks.PATHOLOGY_OUTPUT in out:
            parts["path"].append(np.asarray(out[networks.PATHOLOGY_OUTPUT]))
            parts["labels"].append(batch["labels"].numpy())
        parts["image_index"].append(batch["image_index"].numpy())
        parts["patient_id"].append(batch["patient_id"].numpy())
        parts["label"].append(batch["label"].numpy())
    if not parts["label"]:
        raise MissingInput(f"no images in split {split!r} of {workspace}")
    frame = pd.DataFrame({
        "image_index": [b.decode("utf-8") for b in np.concatenate(parts["image_index"])],
        "patient_id": np.concatenate(parts["patient_id"]).astype(np.int64),
        "probability": np.concatenate(parts["probability"]).astype(np.float32),
        "label": np.concatenate(parts["label"]).astype(np.int8),
    })
    if parts["path"]:
        probs, labels = np.concatenate(parts["path"]), np.concatenate(parts["labels"])
        for i, name in enumerate(PATHOLOGIES):
            frame[f"prob_{name}"] = probs[:, i].astype(np.float32)
            frame[f"label_{name}"] = labels[:, i].astype(np.int8)
    seconds = time.perf_counter() - started
    logger.info("predict %s: %d images in %.1f s (%.1f images/s)", split, len(frame), seconds, len(frame) / seconds)
    return frame


def digest(frame: pd.DataFrame) -> str:
    """sha256 of the sorted image names: tells whether two runs were scored on the same studies."""
    return hashlib.sha256("\n".join(sorted(frame["image_index"])).encode()).hexdigest()


def score(val: pd.DataFrame, test: pd.DataFrame, cfg: EvalConfig) -> dict:
    """The ``operating_point``, ``test`` and ``val`` sections of metrics.json from two prediction tables."""
    for name, frame in (("val", val), ("test", test)):
        missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
        if missing:
            raise BadInput(f"{name} predictions lack columns {missing}; expected {list(PREDICTION_COLUMNS)}")
    y_val, p_val = val["label"].to_numpy(), val["probability"].to_numpy()
    y_test, p_test = test["label"].to_numpy(), test["probability"].to_numpy()
    if not y_val.sum() or not y_test.sum():
        raise BadInput(f"val holds {int(y_val.sum())} and test {int(y_test.sum())} unhealthy studies: an operating "
                         "point for a sensitivity target needs unhealthy studies in both")
    threshold = metrics.choose_threshold(y_val, p_val, cfg.target_sensitivity)
    test_section: dict[str, Any] = {
        "n": len(test), "positives": int(y_test.sum()),
        "at_0.5": metrics.summary_at(y_test, p_test, 0.5, cfg.beta),
        "at_operating_point": metrics.summary_at(y_test, p_test, threshold, cfg.beta),
        "auroc": metrics.auroc(y_test, p_test), "auprc": metrics.auprc(y_test, p_test),
        "auroc_ci": None, "sensitivity_ci": None,
        "benchmark_always_unhealthy": metrics.always_unhealthy(y_test, cfg.beta),
        "per_pathology_auroc": None,
        "threshold_sweep": metrics.threshold_sweep(y_test, p_test),
    }
    if cfg.bootstrap:
        ci = metrics.bootstrap_intervals(y_test, p_test, threshold, groups=test["patient_id"].to_numpy(),
                                         n=cfg.bootstrap, seed=cfg.seed)
        test_section["auroc_ci"], test_section["sensitivity_ci"] = ci["auroc_ci"], ci["sensitivity_ci"]
        test_section["bootstrap"] = {"resamples": cfg.bootstrap, "unit": "patient", "level": 0.95}
    if f"prob_{PATHOLOGIES[0]}" in test.columns:
        test_section["per_pathology_auroc"] = metrics.per_label_auroc(
            test[[f"label_{n}" for n in PATHOLOGIES]].to_numpy(), test[[f"prob_{n}" for n in PATHOLOGIES]].to_numpy(),
            PATHOLOGIES)
    return {
        "operating_point": {"threshold": threshold, "target_sensitivity": cfg.target_sensitivity, "chosen_on": "val"},
        "test": test_section,
        "val": {"n": len(val), "positives": int(y_val.sum()), "auroc": metrics.auroc(y_val, p_val),
                "at_operating_point": metrics.summary_at(y_val, p_val, threshold, cfg.beta)},
    }


def _write_parquet(frame: pd.DataFrame, uri: str) -> None:
    out = io.BytesIO()
    frame.to_parquet(out, index=False, compression="zstd")
    storage.write_bytes(uri, out.getvalue())


def read_predictions(run_dir: str, split: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(storage.read_bytes(predictions_uri(run_dir, split))))


def run_evaluate(workspace: str, run_dir: str, cfg: PipelineConfig) -> dict:
    """Predict val and test with ``<run_dir>/model.keras``; write predictions, metrics.json, plots, model card.

    Raises:
        FileNotFoundError: no final model in the run directory (run ``xray-tasks finetune`` first).
    """
    from xray_tasks.data import shards
    from xray_tasks.data.manifest import manifest_uri
    from xray_tasks.evaluation import report
    from xray_tasks.training import networks
    from xray_tasks.training.finetune import model_uri
    from xray_tasks.training.head import save_run_config

    uri = model_uri(run_dir)
    if not storage.exists(uri):
        raise MissingInput(f"{uri}: no final model (run `xray-tasks finetune` first)")
    save_run_config(run_dir, cfg)
    model = networks.load_model(uri)
    frames = {}
    for split in ("val", "test"):
        frames[split] = predict_split(model, workspace, split, cfg.evaluate.batch_size)
        _write_parquet(frames[split], predictions_uri(run_dir, split))
    scored = score(frames["val"], frames["test"], cfg.evaluate)
    fmt = shards.shard_format(workspace)
    trained = storage.join(run_dir, "finetune", "history.json")
    weights = storage.read_json(trained).get("weights") if storage.exists(trained) else cfg.features.weights
    summary_uri = storage.join(workspace, "manifest", "summary.json")
    doc = {
        "schema": SCHEMA,
        "model": {"base": cfg.features.base, "weights": weights, "input_size": cfg.features.input_size,
                  "stored_image_size": fmt["image_size"], "input_name": networks.IMAGE_INPUT,
                  "output": networks.TRIAGE_OUTPUT, "outputs": sorted(model.output_names)},
        "data": {"workspace": workspace,
                 "manifest_sha256": hashlib.sha256(storage.read_bytes(manifest_uri(workspace))).hexdigest(),
                 "test_digest": digest(frames["test"]), "val_digest": digest(frames["val"]),
                 "counts": storage.read_json(summary_uri)["counts"] if storage.exists(summary_uri) else None},
        **scored,
    }
    metrics_uri = storage.join(run_dir, METRICS_FILE)
    storage.write_json(metrics_uri, doc)
    plots = report.write_plots(run_dir, frames["val"], frames["test"], doc)
    card = report.write_model_card(run_dir, doc, cfg)
    test, op = doc["test"], doc["test"]["at_operating_point"]
    logger.info("evaluate: test AUROC %.4f %s, AUPRC %.4f; threshold %.4f (val): sensitivity %.3f, healthy cleared "
                "%.3f; always-unhealthy F%g %.4f vs model %.4f", test["auroc"], test["auroc_ci"], test["auprc"],
                doc["operating_point"]["threshold"], op["recall"], op["healthy_cleared"], cfg.evaluate.beta,
                test["benchmark_always_unhealthy"][f"f{cfg.evaluate.beta:g}"], op[f"f{cfg.evaluate.beta:g}"])
    return {"run_dir": run_dir, "metrics": metrics_uri, "model_card": card, "plots": plots,
            "predictions": {s: predictions_uri(run_dir, s) for s in frames},
            "test_auroc": test["auroc"], "test_auroc_ci": test["auroc_ci"], "test_auprc": test["auprc"],
            "operating_point": doc["operating_point"], "test_at_operating_point": op}
