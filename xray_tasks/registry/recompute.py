"""Publish judges numbers it computed itself: every figure the gate reads is recomputed from the run's stored
predictions and the workspace manifest's labels, with the same code evaluation used (``evaluate.score``, which is
``evaluation.metrics``), and a ``metrics.json`` that disagrees is refused, naming the field.

What is checked, in order:

1. ``predictions/val.parquet`` and ``predictions/test.parquet`` exist, have the prediction columns, one row per
   study, and finite probabilities in [0, 1];
2. the workspace manifest is the one the run names (``data.manifest_sha256``), and every predicted study is in
   it, in that split, with the manifest's label and patient id (so labels cannot be edited in the predictions);
3. the operating threshold (chosen on val for the run's target sensitivity), test AUROC and its patient-bootstrap
   interval (same resamples and seed), sensitivity and healthy studies cleared at the threshold, the F-beta
   figures, the counts and the split digests equal what ``metrics.json`` says.

The gate then runs on the recomputed numbers.  What the run may still choose, and the deployment does not, is
listed in docs/registry.md (threat model): the target sensitivity and the bootstrap seed come from the run.
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xray_tasks.config import EvalConfig
from xray_tasks.contracts import Metrics
from xray_tasks.errors import BadInput, IntegrityError
from xray_tasks.evaluation import evaluate
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)

SPLITS = ("val", "test")
_TOLERANCE = 1e-9


def _read(staged: Path, split: str, where: str) -> pd.DataFrame:
    rel = f"{RunDir.PREDICTIONS}/{split}.parquet"
    try:
        frame = pd.read_parquet(io.BytesIO((staged / rel).read_bytes()))
    except FileNotFoundError:
        raise IntegrityError(f"{where}: {rel} is missing: the gate's numbers cannot be recomputed") from None
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{where}: {rel} is not a readable Parquet table ({exc})") from None
    missing = [c for c in evaluate.PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise IntegrityError(f"{where}: {rel} lacks columns {missing}")
    probs = frame["probability"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        raise IntegrityError(
            f"{where}: {rel} has {int(bad.sum())} probabilities that are not finite in [0, 1]"
        )
    duplicated = frame["image_index"][frame["image_index"].duplicated()]
    if len(duplicated):
        raise IntegrityError(
            f"{where}: {rel} lists {len(duplicated)} studies twice (e.g. {duplicated.iloc[0]})"
        )
    return frame


def check_labels(frames: dict[str, pd.DataFrame], manifest: pd.DataFrame, where: str) -> None:
    """Every predicted study is in the manifest, in its split, with the manifest's label and patient id."""
    table = manifest.set_index("image_index")[["split", "label", "patient_id"]]
    for split, frame in frames.items():
        rel = f"{RunDir.PREDICTIONS}/{split}.parquet"
        names = frame["image_index"]
        unknown = names[~names.isin(table.index)]
        if len(unknown):
            raise IntegrityError(
                f"{where}: {rel}: {len(unknown)} studies are not in the workspace manifest (e.g. {unknown.iloc[0]})"
            )
        truth = table.loc[names.to_numpy()]
        for column, label in (("split", "split"), ("label", "label"), ("patient_id", "patient id")):
            got = split if column == "split" else frame[column].to_numpy()
            differ = np.asarray(truth[column].to_numpy() != got)
            if differ.any():
                first = names.to_numpy()[differ][0]
                raise IntegrityError(
                    f"{where}: {rel}: the {label} of {int(differ.sum())} studies differs from the workspace "
                    f"manifest (e.g. {first}); refusing to publish numbers computed on other labels"
                )


def _eval_config(staged: Path, metrics: Metrics) -> EvalConfig:
    seed = 0
    try:
        seed = int(json.loads((staged / RunDir.CONFIG).read_text())["evaluate"]["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("config.json names no evaluate.seed: recomputing the bootstrap with seed 0")
    boot = metrics.test.bootstrap
    resamples = boot.resamples if boot is not None else (1000 if metrics.test.auroc_ci else 0)
    return EvalConfig(
        beta=metrics.beta,
        target_sensitivity=metrics.operating_point.target_sensitivity,
        bootstrap=resamples,
        seed=seed,
    )


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, tuple | list) or isinstance(b, tuple | list):
        return (
            isinstance(a, tuple | list)
            and isinstance(b, tuple | list)
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE)
    return a == b


def compared_fields(claimed: Metrics, got: Metrics) -> dict[str, tuple[Any, Any]]:
    """``field -> (metrics.json's value, recomputed value)`` for every number the gate and the summary use."""
    ct, gt = claimed.test, got.test
    pairs = {
        "operating_point.threshold": (claimed.operating_point.threshold, got.operating_point.threshold),
        "test.n": (ct.n, gt.n),
        "test.positives": (ct.positives, gt.positives),
        "test.auroc": (ct.auroc, gt.auroc),
        "test.auroc_ci": (ct.auroc_ci, gt.auroc_ci),
        "test.at_operating_point.recall": (ct.at_operating_point.recall, gt.at_operating_point.recall),
        "test.at_operating_point.healthy_cleared": (
            ct.at_operating_point.healthy_cleared,
            gt.at_operating_point.healthy_cleared,
        ),
        "test.at_operating_point.f_beta": (ct.at_operating_point.f_beta, gt.at_operating_point.f_beta),
        "test.benchmark_always_unhealthy.f_beta": (
            ct.benchmark_always_unhealthy.f_beta,
            gt.benchmark_always_unhealthy.f_beta,
        ),
        "val.n": (claimed.val.n, got.val.n),
        "val.auroc": (claimed.val.auroc, got.val.auroc),
        "data.test_digest": (claimed.data.test_digest, got.data.test_digest),
        "data.val_digest": (claimed.data.val_digest, got.data.val_digest),
    }
    for key in ("test_split_digest", "val_split_digest"):  # runs evaluated before these existed lack them
        if getattr(claimed.data, key) is not None:
            pairs[f"data.{key}"] = (getattr(claimed.data, key), getattr(got.data, key))
    return pairs


def verify_run(
    staged: Path, metrics: Metrics, *, workspace: str | None, where: str
) -> tuple[Metrics, tuple[str, ...]]:
    """Recompute a staged run's judged numbers and compare them with its metrics.json.

    Returns the metrics with the recomputed sections (and split digests filled in) and the fields compared.

    Raises:
        IntegrityError: predictions missing or malformed, labels differing from the manifest, or a field of
            metrics.json differing from its recomputed value (each such field is named).
        BadInput: no workspace to take the labels from.
    """
    from xray_tasks.data.manifest import manifest_sha256, read_manifest

    frames = {split: _read(staged, split, where) for split in SPLITS}
    ws = workspace or metrics.data.workspace
    if not ws:
        raise BadInput(
            f"{where}: metrics.json names no workspace, so the labels cannot be checked against a manifest; "
            f"pass the workspace (--workspace)"
        )
    try:
        sha = manifest_sha256(ws)
        manifest = read_manifest(ws)
    except FileNotFoundError:
        raise IntegrityError(
            f"{where}: the workspace manifest of {ws} cannot be read: the labels cannot be checked"
        ) from None
    if sha != metrics.data.manifest_sha256:
        raise IntegrityError(
            f"{where}: metrics.json disagrees with the workspace: data.manifest_sha256 is "
            f"{metrics.data.manifest_sha256[:12]}... but {ws}'s manifest is {sha[:12]}...; refusing to publish"
        )
    check_labels(frames, manifest, where)
    scores = evaluate.score(frames["val"], frames["test"], _eval_config(staged, metrics))
    got = metrics.replace(
        operating_point=scores.operating_point,
        test=scores.test,
        val=scores.val,
        data=metrics.data.replace(
            test_digest=evaluate.digest(frames["test"]),
            val_digest=evaluate.digest(frames["val"]),
            test_split_digest=evaluate.split_digest(frames["test"]),
            val_split_digest=evaluate.split_digest(frames["val"]),
        ),
    )
    pairs = compared_fields(metrics, got)
    wrong = [
        f"{k} is {a!r} in metrics.json, {b!r} recomputed" for k, (a, b) in pairs.items() if not _same(a, b)
    ]
    if wrong:
        raise IntegrityError(
            f"{where}: metrics.json disagrees with the run's predictions and the manifest's labels: "
            f"{'; '.join(wrong)}; refusing to publish"
        )
    logger.info(
        "recomputed %d judged fields from the run's predictions: all agree with metrics.json", len(pairs)
    )
    return got, tuple(pairs)
