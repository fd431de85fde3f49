"""The dataset-wide check of the committed shard set against the manifest.

Every image accounted for (sharded, quarantined with a reason, or reported missing), none sharded twice, each in
the split the manifest gives it, no patient in two splits.  The result is written to ``shards/validation.json``.
"""

from __future__ import annotations

import logging
from collections import Counter

from xray_tasks import storage
from xray_tasks.contracts import Examples, QuarantineReport, ShardMarker, SplitCount, ValidationSummary
from xray_tasks.data import shards
from xray_tasks.data.manifest import read_manifest
from xray_tasks.errors import BadInput, MissingInput
from xray_tasks.workspace import Workspace

logger = logging.getLogger(__name__)

REPORT_LIMIT = 50
"""Examples of missing and quarantined images carried in the summary."""
PROBLEMS_SHOWN = 10


def validate(workspace: str) -> ValidationSummary:
    """Check the committed shard set against the manifest and write ``shards/validation.json``.

    Raises:
        MissingInput: nothing is committed yet.
        BadInput: the committed archives hold no image at all (every one quarantined: the reasons are named),
            the archives disagree on the format, an image was sharded twice or in another split than the
            manifest says, or a patient has images in two splits.
    """
    ws = Workspace(workspace)
    table = read_manifest(workspace)
    expected = dict(zip(table["image_index"], table["split"]))
    patient_of = dict(zip(table["image_index"], table["patient_id"]))
    markers = shards.read_markers(workspace)
    if not markers:
        raise MissingInput(f"{ws.markers}: no committed archives")
    fmt = shards.common_format(markers, ws.shards)
    where = _sharded_images(markers, expected, workspace)
    _check_patients(where, expected, patient_of, workspace)
    missing = sorted(set(expected) - set(where))
    quarantine = [q for m in markers for q in m.quarantine]
    by_kind: Counter = Counter()
    for m in markers:  # markers from before by_kind existed list every quarantined member
        by_kind.update(m.members.by_kind or Counter(q.kind for q in m.quarantine))
    if not where:  # a "valid" empty shard set would schedule a training run on nothing
        reasons = Counter(q.reason for q in quarantine).most_common(3)
        raise BadInput(
            f"{ws.shards}: the {len(markers)} committed archive(s) hold no image: {sum(by_kind.values())} "
            f"quarantined ({dict(sorted(by_kind.items()))}); most common reasons: "
            + "; ".join(f"{reason} ({n}x)" for reason, n in reasons)
        )
    summary = ValidationSummary(
        archives=len(markers),
        shards=sum(len(m.shards) for m in markers),
        images=len(where),
        counts=_counts(markers),
        missing=Examples(count=len(missing), examples=tuple(missing[:REPORT_LIMIT])),
        quarantined=QuarantineReport(
            count=sum(by_kind.values()),
            by_kind=dict(sorted(by_kind.items())),
            examples=tuple(quarantine[:REPORT_LIMIT]),
        ),
        leaking_patients=0,
        format=fmt.describe(),
    )
    storage.write_json(ws.validation, summary.to_dict())
    logger.info(
        "validated %d images in %d shards from %d archives; %d missing, %d quarantined",
        summary.images,
        summary.shards,
        summary.archives,
        len(missing),
        summary.quarantined.count,
    )
    return summary


def _sharded_images(markers: list[ShardMarker], expected: dict[str, str], workspace: str) -> dict[str, str]:
    """Image name -> the archive that sharded it; refuses duplicates and images outside their manifest split."""
    where: dict[str, str] = {}
    problems: list[str] = []
    for marker in markers:
        for entry in marker.shards:
            for name in entry.images:
                if name in where:
                    problems.append(f"{name} is in {where[name]} and {marker.archive}")
                where[name] = marker.archive
                if expected.get(name) != entry.split:
                    problems.append(f"{name} sharded as {entry.split}, manifest says {expected.get(name)!r}")
    if problems:
        raise BadInput(f"{workspace}: shard set inconsistent with the manifest: {problems[:PROBLEMS_SHOWN]}")
    return where


def _check_patients(
    where: dict[str, str], expected: dict[str, str], patient_of: dict, workspace: str
) -> None:
    patients: dict[int, set] = {}
    for name in where:
        patients.setdefault(patient_of[name], set()).add(expected[name])
    leaking = [p for p, s in patients.items() if len(s) > 1]
    if leaking:
        raise BadInput(
            f"{workspace}: {len(leaking)} patient(s) in more than one split, e.g. {leaking[:PROBLEMS_SHOWN]}"
        )


def _counts(markers: list[ShardMarker]) -> dict[str, SplitCount]:
    totals: dict[str, Counter] = {}
    for marker in markers:
        for split, tally in marker.counts.items():
            totals.setdefault(split, Counter()).update(tally.to_dict())
    return {
        split: SplitCount(images=c["images"], healthy=c["healthy"], unhealthy=c["unhealthy"])
        for split, c in totals.items()
    }
