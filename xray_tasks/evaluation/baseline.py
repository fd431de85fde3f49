"""The metadata-only baseline: what the chart already says about a study, before anyone looks at the pixels.

A logistic regression on the four fields both NIH metadata releases carry: log(1 + follow-up number), age, sex
and view position.  It is fitted on the manifest's train split, its operating point is chosen on validation by the
image model's rule (``metrics.choose_threshold``), and it is scored on test by the same ``evaluate.score``.  It is
plain numpy (Newton's method on five weights, a small ridge penalty so a constant field cannot make it singular):
no new dependency, and the whole model is the JSON file it writes.

Everything lands in ``<workspace>/baseline/<manifest_sha256>/`` (``Workspace.baseline``): predictions first,
``baseline_model.json``, then ``metrics.json`` last, whose presence marks the folder complete.  The folder is keyed
by the manifest's digest, so it is fitted once per dataset; a changed manifest (labels, splits) gets a new one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xray_tasks import storage
from xray_tasks.config import PipelineConfig
from xray_tasks.contracts import BaselineSummary, DataInfo, Metrics, ModelInfo
from xray_tasks.errors import BadInput
from xray_tasks.evaluation import evaluate
from xray_tasks.workspace import RunDir, Workspace

logger = logging.getLogger(__name__)

FEATURES = ("log_follow_up", "age", "male", "view_pa")
"""log(1 + Follow-up #), Patient Age in years, Patient Gender == M, View Position == PA."""
RIDGE = 1e-3
NAME = "metadata-logistic"


def design(table: pd.DataFrame) -> np.ndarray:
    """The raw feature matrix [N, 4] of manifest rows (age NaN where the metadata had none that was plausible)."""
    missing = [c for c in ("follow_up", "age", "sex", "view") if c not in table.columns]
    if missing:
        raise BadInput(f"the manifest lacks metadata column(s) {missing} the baseline needs")
    follow = np.log1p(np.clip(table["follow_up"].to_numpy(np.float64), 0, None))
    age = table["age"].to_numpy(np.float64)
    male = table["sex"].astype(str).str.upper().eq("M").to_numpy(np.float64)
    pa = table["view"].astype(str).str.upper().eq("PA").to_numpy(np.float64)
    return np.column_stack([follow, age, male, pa])


@dataclass(frozen=True)
class LogisticModel:
    """Standardise (train mean and spread; a missing value becomes the mean), then a logistic regression."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def _standard(self, x: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean)
        return (np.where(np.isnan(x), mean, x) - mean) / np.asarray(self.scale)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(unhealthy) for raw feature rows."""
        return _sigmoid(self._standard(x) @ np.asarray(self.coef) + self.intercept)

    def to_dict(self) -> dict:
        return {
            "kind": NAME,
            "features": list(FEATURES),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
        }

    def coefficients(self) -> dict[str, float]:
        return {**dict(zip(FEATURES, self.coef, strict=True)), "intercept": self.intercept}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + e^-z), without overflow warnings


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE, max_iter: int = 50) -> LogisticModel:
    """Newton's method on the mean log-loss + ``ridge``/2 |w|^2 (the intercept is not penalised)."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2 or not 0 < y.sum() < len(y):
        raise BadInput(f"the baseline needs both classes in the train split, got {int(y.sum())} of {len(y)}")
    mean = np.nanmean(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0)  # an all-missing field: 0
    filled = np.where(np.isnan(x), mean, x)
    scale = filled.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    design_ = np.column_stack([np.ones(len(y)), (filled - mean) / scale])
    penalty = np.diag(np.r_[0.0, np.full(x.shape[1], ridge)])
    w = np.zeros(design_.shape[1])
    for _ in range(max_iter):
        p = _sigmoid(design_ @ w)
        grad = design_.T @ (p - y) / len(y) + penalty @ w
        hess = (design_ * (p * (1 - p))[:, None]).T @ design_ / len(y) + penalty + 1e-12 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return LogisticModel(tuple(mean.tolist()), tuple(scale.tolist()), tuple(w[1:].tolist()), float(w[0]))


def read_model(uri: str) -> LogisticModel:
    data = storage.read_json(uri)
    if data.get("kind") != NAME or tuple(data.get("features", ())) != FEATURES:
        raise BadInput(f"{uri}: not a {NAME} baseline on features {list(FEATURES)}")
    return LogisticModel(
        tuple(data["mean"]), tuple(data["scale"]), tuple(data["coef"]), float(data["intercept"])
    )


def baseline_dir(workspace: str) -> RunDir:
    """This workspace's baseline folder, for the manifest it holds now."""
    from xray_tasks.data.manifest import manifest_sha256

    return Workspace(workspace).baseline(manifest_sha256(workspace))


def read_predictions(folder: RunDir, split: str) -> pd.DataFrame:
    return evaluate.read_predictions(folder.root, split)


def run_baseline(workspace: str, cfg: PipelineConfig, force: bool = False) -> BaselineSummary:
    """Fit the baseline on the manifest's train split, choose its threshold on val, score test; write it all.

    A complete folder for this manifest is read back instead (``force`` refits).

    Raises:
        MissingInput: no manifest in the workspace.
        BadInput: the manifest lacks the metadata fields, or a split lacks a class.
    """
    from xray_tasks.data.manifest import manifest_counts, manifest_sha256, read_manifest

    started = time.perf_counter()
    sha = manifest_sha256(workspace)
    folder = Workspace(workspace).baseline(sha)
    if not force and storage.exists(folder.metrics):
        doc = evaluate.read_metrics(folder.metrics)
        model = read_model(folder.baseline_model)
        logger.info("baseline for manifest %s already fitted: %s", sha[:12], folder.root)
        return _summary(folder, doc, model, sha, True, 0.0, time.perf_counter() - started)
    table = read_manifest(workspace)
    train = table[table["split"] == "train"]
    fit_started = time.perf_counter()
    model = fit_logistic(design(train), train["label"].to_numpy())
    fit_seconds = time.perf_counter() - fit_started
    frames = {}
    for split in ("val", "test"):
        part = table[table["split"] == split]
        frames[split] = pd.DataFrame(
            {
                "image_index": part["image_index"].to_numpy(dtype=object),
                "patient_id": part["patient_id"].to_numpy(np.int64),
                "probability": model.predict(design(part)),
                "label": part["label"].to_numpy(np.int8),
            }
        )
        evaluate.write_parquet(frames[split], folder.predictions(split))
    storage.write_json(folder.baseline_model, {**model.to_dict(), "train_n": len(train)})
    scores = evaluate.score(frames["val"], frames["test"], cfg.evaluate)
    doc = Metrics(
        model=ModelInfo(
            base=NAME,
            weights="fitted on the train split",
            input_size=0,
            stored_image_size=0,
            input_name="metadata:" + ",".join(FEATURES),
            output="probability",
        ),
        data=DataInfo(
            workspace=workspace,
            manifest_sha256=sha,
            test_digest=evaluate.digest(frames["test"]),
            val_digest=evaluate.digest(frames["val"]),
            counts=manifest_counts(workspace),
        ),
        operating_point=scores.operating_point,
        test=scores.test,
        val=scores.val,
    )
    storage.write_json(folder.metrics, doc.to_dict())  # last: marks the folder complete
    seconds = time.perf_counter() - started
    summary = _summary(folder, doc, model, sha, False, fit_seconds, seconds)
    at = summary.test_at_operating_point
    logger.info(
        "baseline: %d train studies, fit %.2f s; test AUROC %.4f %s; threshold %.4f (val): sensitivity %.3f, "
        "healthy cleared %.3f; %.1f s in all",
        len(train),
        fit_seconds,
        summary.test_auroc,
        list(summary.test_auroc_ci or ()) or None,
        summary.operating_point.threshold,
        at.recall,
        at.healthy_cleared,
        seconds,
    )
    return summary


def _summary(
    folder: RunDir,
    doc: Metrics,
    model: LogisticModel,
    sha: str,
    reused: bool,
    fit_seconds: float,
    seconds: float,
) -> BaselineSummary:
    train_n = storage.read_json(folder.baseline_model).get("train_n", 0)
    return BaselineSummary(
        dir=folder.root,
        metrics=folder.metrics,
        predictions={s: folder.predictions(s) for s in ("val", "test")},
        manifest_sha256=sha,
        features=FEATURES,
        coefficients=model.coefficients(),
        train_n=int(train_n),
        test_auroc=doc.test.auroc,
        test_auroc_ci=doc.test.auroc_ci,
        operating_point=doc.operating_point,
        test_at_operating_point=doc.test.at_operating_point,
        reused=reused,
        fit_seconds=round(fit_seconds, 4),
        seconds=round(seconds, 3),
    )
