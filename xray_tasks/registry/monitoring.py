"""The champion in the field: drift on every scoring run, outcomes when ground truth comes back, their history.

A published version carries its test split's reference profile (``profile.json``, listed in its manifest);
``reference_of`` reads it back and checks it against the manifest's digest.  ``score_with_drift`` scores a batch
while profiling it and compares the two (``evaluation.drift``); ``record`` keeps each drift report and outcome
under ``<model>/monitoring/<version>/`` so the Models page can draw a version's history.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from xray_tasks import storage
from xray_tasks.config import DriftConfig
from xray_tasks.contracts import Contract, DriftReport, Outcome, Profile
from xray_tasks.errors import BadInput
from xray_tasks.evaluation import drift
from xray_tasks.evaluation.profile import ProfileBuilder
from xray_tasks.registry import integrity
from xray_tasks.registry.layout import IntegrityError, monitoring_uri
from xray_tasks.workspace import RunDir, worklist_companion

logger = logging.getLogger(__name__)

_KINDS = {"drift": DriftReport, "outcomes": Outcome}


def reference_of(published: Any) -> Profile | None:
    """The version's reference profile, verified against its manifest; None when the version has none.

    Raises:
        IntegrityError: the file differs from the manifest's digest.
    """
    entry = published.manifest.get("files", {}).get(RunDir.PROFILE)
    if entry is None:
        return None
    uri = storage.join(published.uri, RunDir.PROFILE)
    data = storage.read_bytes(uri)
    problems = integrity.mismatches({RunDir.PROFILE: entry}, {RunDir.PROFILE: integrity.digest_bytes(data)})
    if problems:
        raise IntegrityError(f"{uri}: does not match the version's manifest: {problems}")
    return Profile.from_dict(json.loads(data), where=uri)


def score_with_drift(
    published: Any, uris: Sequence[Any], worklist: str, cfg: DriftConfig, batch_size: int = 32
) -> tuple[list[dict[str, Any]], DriftReport, dict[str, float]]:
    """Score ``uris`` and compare the batch with the version's reference; returns rows, the report, and the
    seconds of scoring (total) and of monitoring (profile + comparison) for the benchmark."""
    reference = reference_of(published)
    builder = ProfileBuilder()

    def observe(stored, probabilities, blobs) -> None:
        builder.add_pixels(stored)
        builder.add_scores(probabilities)
        builder.add_files(blobs)

    started = time.perf_counter()
    rows = published.score(uris, batch_size=batch_size, observe=observe)
    scoring = time.perf_counter() - started - builder.seconds  # the profile's share of the loop is its own
    during = builder.seconds
    before = time.perf_counter()
    batch = builder.build(worklist, published.threshold, reference)
    report = drift.compare(
        reference, batch, cfg, model_name=published.model_name, version=published.version, worklist=worklist
    )
    monitor = during + time.perf_counter() - before
    report = report.replace(seconds=round(monitor, 4))
    logger.info("drift: %s", report.message)
    return rows, report, {"scoring_s": scoring, "monitor_s": monitor}


def verdict(report: DriftReport, action: str) -> tuple[dict[str, Any], str | None]:
    """What the scoring DAG's ``check_drift`` does with a report: ``(verdict, failure)``; ``failure`` is the
    message to fail with (drift with ``action`` ``fail``), else None.  ``verdict["announce"]``: emit the drift
    Asset (drift with ``action`` ``asset``).  Too small, no reference and ok never fail.

    Raises:
        BadInput: ``action`` is neither ``fail`` nor ``asset``.
    """
    if action not in ("fail", "asset"):
        raise BadInput(f"drift_action must be 'fail' or 'asset', got {action!r}")
    drifted = report.status == drift.DRIFT
    out = {
        "status": report.status,
        "message": report.message,
        "version": report.version,
        "drifted": [c.statistic for c in report.checks if c.drifted],
        "announce": drifted and action == "asset",
    }
    return out, (report.message if drifted and action == "fail" else None)


def write_report(report: DriftReport, reference: Profile | None) -> dict[str, str]:
    """``<worklist>.drift.json`` and ``<worklist>.drift.png`` beside the worklist."""
    out = {
        "drift_json": worklist_companion(report.worklist, "drift.json"),
        "drift_plot": worklist_companion(report.worklist, "drift.png"),
    }
    storage.write_json(out["drift_json"], report.to_dict())
    storage.write_bytes(out["drift_plot"], drift.write_plot(report, reference))
    return out


def record(root: str, doc: DriftReport | Outcome) -> str:
    """Keep a drift report or an outcome under the version's monitoring folder (one file each, by time)."""
    kind = "drift" if isinstance(doc, DriftReport) else "outcomes"
    stamp = doc.created_at.replace(":", "").replace("-", "")
    # Time first, so that names sort by time: created_at has whole seconds, so two records of one second are
    # ordered by the nanosecond clock after it (history() keeps that order among equal created_at).
    name = f"{stamp}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
    uri = storage.join(monitoring_uri(root, doc.model_name, doc.version, kind), name)
    payload = doc.to_dict()
    if isinstance(doc, DriftReport):
        payload["batch"] = (
            None  # the history keeps the statistics; the full profile stays beside the worklist
        )
    storage.write_json(uri, payload)
    return uri


def history(root: str, model_name: str, version: str, kind: str) -> list[Contract]:
    """A version's drift reports or outcomes, oldest first (unreadable files are skipped with a warning)."""
    folder = monitoring_uri(root, model_name, version, kind)
    docs = []
    for uri in sorted(u for u in storage.list_files(folder) if u.endswith(".json")):
        try:
            docs.append(_KINDS[kind].from_dict(storage.read_json(uri), where=uri))
        except (ValueError, OSError) as exc:
            logger.warning("%s: skipped: %s", uri, exc)
    return sorted(docs, key=lambda d: d.created_at)
