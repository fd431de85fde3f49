"""Evaluation: predictions for val and test, metrics on the official patient-wise test split, plots, model card.

Honest by construction, where the report was not: the test split is patient-wise (from the official lists), and
the operating point is chosen on *validation* (the most healthy studies cleared at the target sensitivity, see
``metrics.choose_threshold``), then applied unchanged to test.  Every test figure sits beside the always-unhealthy
benchmark on the same studies, and the ladder (``evaluation.ladder``: always-unhealthy, the metadata-only
baseline, the model) goes into metrics.json.  ``score`` needs only the two prediction tables (no TensorFlow), so the registry's
gate can re-score a champion's predictions with the same code.  What it writes is ``contracts.Metrics``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from xray_tasks import storage
from xray_tasks.config import PATHOLOGIES, EvalConfig, PipelineConfig
from xray_tasks.contracts import (
    Bootstrap,
    DataInfo,
    EvaluateSummary,
    Metrics,
    ModelInfo,
    OperatingPoint,
    Sweep,
    TestMetrics,
    ValMetrics,
)
from xray_tasks.errors import BadInput, MissingInput
from xray_tasks.evaluation import metrics
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("image_index", "patient_id", "probability", "label")


@dataclass(frozen=True)
class Scores:
    """What two prediction tables say: the ``operating_point``, ``test`` and ``val`` sections of metrics.json."""

    operating_point: OperatingPoint
    test: TestMetrics
    val: ValMetrics


def predict_split(model: Any, workspace: str, split: str, batch_size: int = 64) -> pd.DataFrame:
    """P(unhealthy) for every committed image of ``split``, in shard order.

    Columns ``image_index, patient_id, probability, label``; with a "pathologies" output also
    ``prob_<finding>`` and ``label_<finding>`` for the 14 findings.  Images are resized to the model's input.
    """
    from xray_tasks.data import dataset, shards
    from xray_tasks.training import networks

    if batch_size < 1:
        raise BadInput(f"batch_size must be >= 1, got {batch_size}")
    # The stored grey pixels in; the resize and grey -> RGB run in the model's function, on its device.
    fed = networks.fed_stored_pixels(model, shards.shard_format(workspace).image_size)
    ds = dataset.split_dataset(workspace, split, batch_size=batch_size, channels=1)
    parts: dict[str, list] = {
        "image_index": [],
        "patient_id": [],
        "probability": [],
        "label": [],
        "path": [],
        "labels": [],
    }
    started = time.perf_counter()
    for batch in ds:
        # predict_on_batch reuses the wrapper's compiled predict function (traced once, any batch size).
        out = fed.predict_on_batch(batch["image"])
        parts["probability"].append(networks.triage_probability(out))
        if isinstance(out, dict) and networks.PATHOLOGY_OUTPUT in out:
            parts["path"].append(np.asarray(out[networks.PATHOLOGY_OUTPUT]))
            parts["labels"].append(batch["labels"].numpy())
        parts["image_index"].append(batch["image_index"].numpy())
        parts["patient_id"].append(batch["patient_id"].numpy())
        parts["label"].append(batch["label"].numpy())
    if not parts["label"]:
        raise MissingInput(f"no images in split {split!r} of {workspace}")
    frame = pd.DataFrame(
        {
            "image_index": [b.decode("utf-8") for b in np.concatenate(parts["image_index"])],
            "patient_id": np.concatenate(parts["patient_id"]).astype(np.int64),
            "probability": np.concatenate(parts["probability"]).astype(np.float32),
            "label": np.concatenate(parts["label"]).astype(np.int8),
        }
    )
    if parts["path"]:
        probs, labels = np.concatenate(parts["path"]), np.concatenate(parts["labels"])
        for i, name in enumerate(PATHOLOGIES):
            frame[f"prob_{name}"] = probs[:, i].astype(np.float32)
            frame[f"label_{name}"] = labels[:, i].astype(np.int8)
    seconds = time.perf_counter() - started
    logger.info(
        "predict %s: %d images in %.1f s (%.1f images/s)", split, len(frame), seconds, len(frame) / seconds
    )
    return frame


def digest(frame: pd.DataFrame) -> str:
    """sha256 of the sorted image names (``data.test_digest``; names only, see ``split_digest``)."""
    return hashlib.sha256("\n".join(sorted(frame["image_index"])).encode()).hexdigest()


SPLIT_DIGEST_PREFIX = "split-v1:"


def split_digest(frame: pd.DataFrame) -> str:
    """``split-v1:`` + sha256 of the sorted ``(image, label, patient)`` triples: whether two runs were scored on
    the same studies *with the same labels*.  A relabelled or re-assigned split gets another digest."""
    rows = sorted(
        f"{name}\t{int(label)}\t{int(patient)}"
        for name, label, patient in zip(
            frame["image_index"], frame["label"], frame["patient_id"], strict=True
        )
    )
    return SPLIT_DIGEST_PREFIX + hashlib.sha256("\n".join(rows).encode()).hexdigest()


def score(val: pd.DataFrame, test: pd.DataFrame, cfg: EvalConfig) -> Scores:
    """The ``operating_point``, ``test`` and ``val`` sections of metrics.json from two prediction tables.

    Raises:
        BadInput: a table lacks a column, or a split has no unhealthy study to set a sensitivity target on.
    """
    for name, frame in (("val", val), ("test", test)):
        missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
        if missing:
            raise BadInput(f"{name} predictions lack columns {missing}; expected {list(PREDICTION_COLUMNS)}")
    y_val, p_val = val["label"].to_numpy(), val["probability"].to_numpy()
    y_test, p_test = test["label"].to_numpy(), test["probability"].to_numpy()
    if not y_val.sum() or not y_test.sum():
        raise BadInput(
            f"val holds {int(y_val.sum())} and test {int(y_test.sum())} unhealthy studies: an operating "
            "point for a sensitivity target needs unhealthy studies in both"
        )
    threshold = metrics.choose_threshold(y_val, p_val, cfg.target_sensitivity)
    intervals, bootstrap = {"auroc_ci": None, "sensitivity_ci": None}, None
    if cfg.bootstrap:
        ci = metrics.bootstrap_intervals(
            y_test, p_test, threshold, groups=test["patient_id"].to_numpy(), n=cfg.bootstrap, seed=cfg.seed
        )
        intervals = {"auroc_ci": tuple(ci["auroc_ci"]), "sensitivity_ci": tuple(ci["sensitivity_ci"])}
        bootstrap = Bootstrap(resamples=cfg.bootstrap, unit="patient", level=0.95)
    sweep = metrics.threshold_sweep(y_test, p_test)
    test_metrics = TestMetrics(
        n=len(test),
        positives=int(y_test.sum()),
        at_half=metrics.summary_at(y_test, p_test, 0.5, cfg.beta),
        at_operating_point=metrics.summary_at(y_test, p_test, threshold, cfg.beta),
        auroc=metrics.auroc(y_test, p_test),
        auprc=metrics.auprc(y_test, p_test),
        **intervals,
        benchmark_always_unhealthy=metrics.always_unhealthy(y_test, cfg.beta),
        per_pathology_auroc=_per_pathology(test),
        threshold_sweep=Sweep.from_dict(sweep, "threshold sweep"),
        bootstrap=bootstrap,
    )
    return Scores(
        operating_point=OperatingPoint(
            threshold=threshold, target_sensitivity=cfg.target_sensitivity, chosen_on="val"
        ),
        test=test_metrics,
        val=ValMetrics(
            n=len(val),
            positives=int(y_val.sum()),
            auroc=metrics.auroc(y_val, p_val),
            at_operating_point=metrics.summary_at(y_val, p_val, threshold, cfg.beta),
        ),
    )


def _per_pathology(test: pd.DataFrame) -> dict[str, float | None] | None:
    if f"prob_{PATHOLOGIES[0]}" not in test.columns:
        return None
    return metrics.per_label_auroc(
        test[[f"label_{n}" for n in PATHOLOGIES]].to_numpy(),
        test[[f"prob_{n}" for n in PATHOLOGIES]].to_numpy(),
        PATHOLOGIES,
    )


def write_parquet(frame: pd.DataFrame, uri: str) -> None:
    """A predictions table as zstd Parquet, written atomically."""
    out = io.BytesIO()
    frame.to_parquet(out, index=False, compression="zstd")
    storage.write_bytes(uri, out.getvalue())


_write_parquet = write_parquet


def read_predictions(run_dir: str, split: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(storage.read_bytes(RunDir(run_dir).predictions(split))))


def read_metrics(uri: str) -> Metrics:
    """A metrics.json, checked against its contract (schema 1 files are read too)."""
    return Metrics.from_dict(storage.read_json(uri), where=uri)


def run_evaluate(workspace: str, run_dir: str, cfg: PipelineConfig) -> EvaluateSummary:
    """Predict val and test with ``<run_dir>/model.keras``; write predictions, metrics.json, plots, model card.

    Raises:
        MissingInput: no final model in the run directory (run ``xray-tasks finetune`` first).
    """
    from xray_tasks.evaluation import report
    from xray_tasks.training import fingerprint, networks

    run = RunDir(run_dir)
    if not storage.exists(run.model):
        raise MissingInput(f"{run.model}: no final model (run `xray-tasks finetune` first)")
    run.write_config(cfg)
    model = networks.load_model(run.model)
    frames = {}
    for split in ("val", "test"):
        frames[split] = predict_split(model, workspace, split, cfg.evaluate.batch_size)
        _write_parquet(frames[split], run.predictions(split))
    scores = score(frames["val"], frames["test"], cfg.evaluate)
    from xray_tasks.evaluation import ladder

    climbed, baseline_test = ladder.for_run(
        workspace, run, frames, scores.operating_point.threshold, cfg, scores.test.auroc_ci
    )
    doc = Metrics(
        model=_model_info(model, workspace, run, cfg),
        data=_data_info(workspace, frames),
        operating_point=scores.operating_point,
        test=scores.test,
        val=scores.val,
        ladder=climbed,
        fingerprint=fingerprint.read(run_dir),
    )
    storage.write_json(run.metrics, doc.to_dict())
    _write_profile(workspace, run, frames["test"], doc.operating_point.threshold, cfg.evaluate.batch_size)
    plots = report.write_plots(run_dir, frames["val"], frames["test"], doc, baseline_test)
    card = report.write_model_card(run_dir, doc, cfg)
    test, op = doc.test, doc.test.at_operating_point
    logger.info(
        "evaluate: test AUROC %.4f %s, AUPRC %.4f; threshold %.4f (val): sensitivity %.3f, healthy cleared "
        "%.3f; always-unhealthy F%g %.4f vs model %.4f",
        test.auroc,
        list(test.auroc_ci or ()) or None,
        test.auprc,
        doc.operating_point.threshold,
        op.recall,
        op.healthy_cleared,
        op.beta,
        test.benchmark_always_unhealthy.f_beta,
        op.f_beta,
    )
    return EvaluateSummary(
        run_dir=run_dir,
        metrics=run.metrics,
        model_card=card,
        plots=plots,
        predictions={s: run.predictions(s) for s in frames},
        test_auroc=test.auroc,
        test_auroc_ci=test.auroc_ci,
        test_auprc=test.auprc,
        operating_point=doc.operating_point,
        test_at_operating_point=op,
    )


def _write_profile(
    workspace: str, run: RunDir, test: pd.DataFrame, threshold: float, batch_size: int
) -> None:
    """The test split's reference profile beside metrics.json (published with the version; drift compares
    every scored batch with it)."""
    from xray_tasks.evaluation.profile import reference_profile

    storage.write_json(run.profile, reference_profile(workspace, test, threshold, batch_size).to_dict())


def _model_info(model: Any, workspace: str, run: RunDir, cfg: PipelineConfig) -> ModelInfo:
    from xray_tasks.data import shards
    from xray_tasks.training import networks

    trained = run.history("finetune")
    weights = storage.read_json(trained).get("weights") if storage.exists(trained) else cfg.features.weights
    return ModelInfo(
        base=cfg.features.base,
        weights=weights,
        input_size=cfg.features.input_size,
        stored_image_size=shards.shard_format(workspace).image_size,
        input_name=networks.IMAGE_INPUT,
        output=networks.TRIAGE_OUTPUT,
        outputs=tuple(sorted(model.output_names)),
    )


def _data_info(workspace: str, frames: dict[str, pd.DataFrame]) -> DataInfo:
    from xray_tasks.data.manifest import manifest_counts, manifest_sha256

    return DataInfo(
        workspace=workspace,
        manifest_sha256=manifest_sha256(workspace),
        test_digest=digest(frames["test"]),
        val_digest=digest(frames["val"]),
        counts=manifest_counts(workspace),
        test_split_digest=split_digest(frames["test"]),
        val_split_digest=split_digest(frames["val"]),
    )
