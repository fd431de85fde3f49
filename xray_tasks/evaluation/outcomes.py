"""Outcomes: the sensitivity a model actually achieved, once radiologists' findings for scored studies are known.

A worklist (``image, probability, decision`` per scored study) joined with a labels CSV (``image`` and ``label``:
1 / ``unhealthy`` / a finding, 0 / ``healthy`` / ``No Finding``) on the image's file name; the achieved
sensitivity and healthy share cleared at the version's threshold, with a 95% bootstrap interval for the
sensitivity (``metrics.bootstrap_intervals``), beside what the version's evaluation promised.
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from xray_tasks import storage
from xray_tasks.config import NO_FINDING
from xray_tasks.contracts import Metrics, Outcome
from xray_tasks.errors import BadInput
from xray_tasks.evaluation import metrics

logger = logging.getLogger(__name__)

HEALTHY = {"0", "healthy", NO_FINDING.lower(), "negative", "false"}
UNHEALTHY = {"1", "unhealthy", "positive", "true"}


def _name(value: str) -> str:
    return PurePosixPath(str(value).replace("\\", "/")).name


def read_labels(uri: str) -> pd.DataFrame:
    """``image, label`` (0/1) from a CSV; a finding name other than ``No Finding`` counts as unhealthy.

    Raises:
        BadInput: missing columns, or a label that is none of the accepted spellings (named with its row).
    """
    try:
        frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise BadInput(f"{uri}: not a readable CSV ({exc})") from None
    columns = {c.strip().lower(): c for c in frame.columns}
    image = columns.get("image") or columns.get("image index") or columns.get("image_index")
    label = columns.get("label") or columns.get("finding labels")
    if image is None or label is None:
        raise BadInput(f"{uri}: needs columns 'image' and 'label', has {list(frame.columns)}")
    values = []
    for row, text in enumerate(frame[label].astype(str), start=2):
        word = text.strip().lower()
        if word in HEALTHY:
            values.append(0)
        elif word in UNHEALTHY or (word and label == columns.get("finding labels")):
            values.append(1)
        else:
            raise BadInput(f"{uri}: line {row}: label {text!r} is neither healthy (0) nor unhealthy (1)")
    out = pd.DataFrame({"image": [_name(v) for v in frame[image]], "label": np.asarray(values, np.int8)})
    duplicated = out["image"][out["image"].duplicated()].tolist()
    if duplicated:
        raise BadInput(f"{uri}: images listed more than once: {duplicated[:5]}")
    return out


def read_worklist(uri: str) -> pd.DataFrame:
    data = storage.read_bytes(uri)
    frame = pd.read_parquet(io.BytesIO(data)) if uri.endswith(".parquet") else pd.read_csv(io.BytesIO(data))
    missing = [c for c in ("image", "probability") if c not in frame.columns]
    if missing:
        raise BadInput(f"{uri}: not a worklist, missing columns {missing}")
    frame = frame[frame["probability"].notna()].copy()
    frame["name"] = [_name(v) for v in frame["image"]]
    return frame


def achieved(
    worklist: pd.DataFrame,
    labels: pd.DataFrame,
    doc: Metrics,
    *,
    tolerance: float,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """The ``Outcome`` fields computed from a worklist and labels (names and time filled in by ``outcome``)."""
    joined = worklist.merge(labels, left_on="name", right_on="image", how="inner", suffixes=("", "_label"))
    if not len(joined):
        raise BadInput("no labelled study matches a scored image of the worklist (joined on the file name)")
    y, p = joined["label"].to_numpy(), joined["probability"].to_numpy(dtype=np.float64)
    threshold = doc.operating_point.threshold
    rates = metrics.summary_at(y, p, threshold)
    ci = None
    if bootstrap and y.sum():
        ci = tuple(metrics.bootstrap_intervals(y, p, threshold, n=bootstrap, seed=seed)["sensitivity_ci"])
    target = doc.operating_point.target_sensitivity
    below = bool(y.sum()) and rates.recall < target - tolerance
    promised = doc.test.at_operating_point
    message = (
        f"achieved sensitivity {rates.recall:.3f} {list(np.round(ci, 3)) if ci else ''} on {int(y.sum())} "
        f"unhealthy of {len(y)} studies (promised {promised.recall:.3f}); healthy cleared "
        f"{rates.healthy_cleared:.3f} (promised {promised.healthy_cleared:.3f})"
    )
    if below:
        message = (
            f"BELOW TARGET: {message}; target {target:g} - tolerance {tolerance:g} = {target - tolerance:g}"
        )
    elif not y.sum():
        message += "; no unhealthy study among them: sensitivity not judged"
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "unmatched": int(len(labels) - len(joined)),
        "threshold": threshold,
        "sensitivity": rates.recall,
        "sensitivity_ci": ci,
        "healthy_cleared": rates.healthy_cleared,
        "promised_sensitivity": promised.recall,
        "promised_healthy_cleared": promised.healthy_cleared,
        "target_sensitivity": target,
        "tolerance": tolerance,
        "below_target": below,
        "message": message,
    }


def outcome(
    worklist_uri: str,
    labels_uri: str,
    doc: Metrics,
    *,
    model_name: str,
    version: str,
    tolerance: float,
    bootstrap: int = 1000,
) -> Outcome:
    figures = achieved(
        read_worklist(worklist_uri), read_labels(labels_uri), doc, tolerance=tolerance, bootstrap=bootstrap
    )
    return Outcome(
        model_name=model_name,
        version=version,
        worklist=worklist_uri,
        labels=labels_uri,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **figures,
    )
