"""Archives -> committed TFRecord shards, one archive per call, plus the dataset-wide validation.

``ingest_archive`` is idempotent: a committed archive is a no-op, anything else (never run, crashed, killed) is
redone from the start and gives byte-identical shards.  Bad members are quarantined with a reason and the rest of
the archive goes on; a broken archive fails with :class:`~xray_tasks.archives.ArchiveError` and commits nothing.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from xray_tasks import __version__, storage
from xray_tasks.config import PATHOLOGIES, IngestConfig
from xray_tasks.data.archives import iter_members
from xray_tasks.data.images import ImageRejected, prepare
from xray_tasks.data.manifest import manifest_exclusions, read_manifest
from xray_tasks.data.shards import (
    FEATURES,
    FORMAT_VERSION,
    MARKERS_DIR,
    SHARDS_DIR,
    STAGING_DIR,
    ShardStager,
    marker_uri,
    publish,
    read_markers,
    record_parts,
    remove_uncommitted,
    storage_key,
)
from xray_tasks.errors import BadInput, MissingInput

logger = logging.getLogger(__name__)

REPORT_LIMIT = 50
"""Quarantine entries carried in a stage's returned summary; the marker keeps them all."""


class IngestError(BadInput):
    """The workspace cannot take this archive (e.g. it was ingested with other settings)."""


def archive_stem(uri: str) -> str:
    name = storage.basename(uri)
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def list_archives(source: str) -> list[str]:
    """The ``images_*.tar.gz`` archives at a source, sorted by name."""
    return [
        storage.join(source, n) for n in storage.listdir(source)
        if n.startswith("images") and n.endswith((".tar.gz", ".tgz"))
    ]


def shard_format_for(cfg: IngestConfig) -> dict:
    return {"version": FORMAT_VERSION, "encoding": cfg.encoding, "image_size": cfg.image_size,
            "resample": cfg.resample, "png_level": cfg.png_level if cfg.encoding == "png" else None,
            "features": {k: list(v) for k, v in FEATURES.items()}, "pathologies": list(PATHOLOGIES)}


def _lookup(table: pd.DataFrame) -> dict[str, tuple]:
    labels = table[list(PATHOLOGIES)].to_numpy(dtype="int64").tolist()
    return {
        name: (split, int(pid), int(label), tuple(lab))
        for name, split, pid, label, lab in zip(
            table["image_index"], table["split"], table["patient_id"], table["label"], labels
        )
    }


def ingest_archive(archive_uri: str, workspace: str, cfg: IngestConfig, table: pd.DataFrame | None = None) -> dict:
    """Shard one archive into ``<workspace>/shards``; returns a small summary (counts, quarantine, marker)."""
    stem = archive_stem(archive_uri)
    marker = marker_uri(workspace, stem)
    fmt = shard_format_for(cfg)
    if storage.exists(marker):
        done = storage.read_json(marker)
        if storage_key(done["format"]) != storage_key(fmt):
            raise IngestError(
                f"{marker}: {stem} was ingested as {done['format']['encoding']} at {done['format']['image_size']}px; "
                f"this run asks for {cfg.encoding} at {cfg.image_size}px: use a new workspace"
            )
        logger.info("%s: already committed (%s), nothing to do", stem, marker)
        return _summary(done, skipped=True)

    if table is None:
        table = read_manifest(workspace)
    lookup = _lookup(table)
    excluded = manifest_exclusions(workspace)
    removed = remove_uncommitted(workspace, stem)
    if removed:
        logger.warning("%s: removed %d uncommitted shard(s) left by an earlier attempt", stem, removed)

    if storage.is_s3(workspace):
        staging_root = Path(tempfile.mkdtemp(prefix=f"xray-{stem}-"))
    else:
        base = Path(storage.join(workspace, SHARDS_DIR, STAGING_DIR))
        for stale in base.glob(f"{stem}.*"):
            storage.delete_tree(str(stale))
        staging_root = base / f"{stem}.{uuid.uuid4().hex[:8]}"
    stager = ShardStager(staging_root, int(cfg.shard_target_mb * 1024 * 1024))
    quarantine: list[dict] = []
    counts: dict[str, dict[str, int]] = {}
    seen: set[str] = set()
    archive = storage.basename(archive_uri)
    started, members = time.monotonic(), 0

    def reject(path: str, kind: str, reason: str) -> None:
        quarantine.append({"archive": archive, "member": path, "kind": kind, "reason": reason})
        logger.warning("%s: quarantined %s: %s", archive, path, reason)

    try:
        with storage.open_read(archive_uri) as fh:
            for member in iter_members(fh, archive, int(cfg.max_member_mb * 1024 * 1024)):
                members += 1
                if member.problem:
                    reject(member.path, *member.problem)
                    continue
                row = lookup.get(member.name)
                if row is None:
                    why = excluded.get(member.name, "no row in the metadata")
                    reject(member.path, "no_metadata", f"no usable metadata row: {why}")
                    continue
                if member.name in seen:
                    reject(member.path, "duplicate", "duplicate image name (first copy kept)")
                    continue
                try:
                    pixels = prepare(member.data, cfg.image_size, encoding=cfg.encoding, png_level=cfg.png_level,
                                     resample=cfg.resample, max_pixels=cfg.max_pixels)
                except ImageRejected as exc:
                    reject(member.path, exc.kind, str(exc))
                    continue
                seen.add(member.name)
                split, patient, label, labels = row
                record = record_parts(image=pixels, height=cfg.image_size, width=cfg.image_size,
                                      image_index=member.name, patient_id=patient, label=label, labels=labels)
                stager.add(split, member.name, record)
                tally = counts.setdefault(split, {"images": 0, "healthy": 0, "unhealthy": 0})
                tally["images"] += 1
                tally["unhealthy" if label else "healthy"] += 1
                if members % 500 == 0:
                    rate = members / max(time.monotonic() - started, 1e-9)
                    logger.info("%s: %d members read, %.1f images/s", archive, members, rate)
        staged = stager.finalize()
        entries = publish(staged, workspace, stem)
    finally:
        stager.cleanup()

    elapsed = time.monotonic() - started
    done = {
        "archive": archive,
        "archive_uri": archive_uri,
        "format": fmt,
        "shards": entries,
        "counts": counts,
        "members": {"total": members, "sharded": len(seen), "quarantined": len(quarantine)},
        "quarantine": quarantine,
        "elapsed_s": round(elapsed, 3),
        "images_per_s": round(len(seen) / elapsed, 2) if elapsed > 0 else None,
        "code_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    storage.write_json(marker, done)  # the commit: written last
    logger.info("%s: committed %d images in %d shard(s), %d quarantined, %.1f images/s",
                archive, len(seen), len(entries), len(quarantine), done["images_per_s"] or 0)
    return _summary(done, skipped=False)


def _summary(done: dict, skipped: bool) -> dict:
    return {
        "archive": done["archive"],
        "skipped": skipped,
        "shards": len(done["shards"]),
        "counts": done["counts"],
        "members": done["members"],
        "quarantine": done["quarantine"][:REPORT_LIMIT],
        "images_per_s": done.get("images_per_s"),
    }


def validate(workspace: str) -> dict:
    """Check the committed shard set against the manifest: every image accounted for, no patient in two splits.

    Raises ``ValueError`` when an image was sharded twice or a sharded image sits in another split than the
    manifest says; images the manifest has but no archive held are reported as missing.
    """
    table = read_manifest(workspace)
    expected = dict(zip(table["image_index"], table["split"]))
    patient_of = dict(zip(table["image_index"], table["patient_id"]))
    markers = read_markers(workspace)
    if not markers:
        raise MissingInput(f"{storage.join(workspace, SHARDS_DIR, MARKERS_DIR)}: no committed archives")
    formats = {storage_key(m["format"]) for m in markers}
    if len(formats) > 1:
        raise BadInput(f"{workspace}: archives were ingested with different formats {sorted(formats)}")
    where: dict[str, str] = {}
    problems: list[str] = []
    for marker in markers:
        for entry in marker["shards"]:
            for name in entry["images"]:
                if name in where:
                    problems.append(f"{name} is in {where[name]} and {marker['archive']}")
                where[name] = marker["archive"]
                if expected.get(name) != entry["split"]:
                    problems.append(f"{name} sharded as {entry['split']}, manifest says {expected.get(name)!r}")
    if problems:
        raise BadInput(f"{workspace}: shard set inconsistent with the manifest: {problems[:10]}")
    patients: dict[int, set] = {}
    for name in where:
        patients.setdefault(patient_of[name], set()).add(expected[name])
    leaking = [p for p, s in patients.items() if len(s) > 1]
    if leaking:
        raise BadInput(f"{workspace}: {len(leaking)} patient(s) in more than one split, e.g. {leaking[:10]}")
    missing = sorted(set(expected) - set(where))
    quarantine = [q for m in markers for q in m["quarantine"]]
    reasons: dict[str, int] = {}
    for q in quarantine:
        reasons[q["kind"]] = reasons.get(q["kind"], 0) + 1
    counts: dict[str, dict[str, int]] = {}
    for marker in markers:
        for split, tally in marker["counts"].items():
            agg = counts.setdefault(split, {"images": 0, "healthy": 0, "unhealthy": 0})
            for k, v in tally.items():
                agg[k] += v
    summary = {
        "archives": len(markers),
        "shards": sum(len(m["shards"]) for m in markers),
        "images": len(where),
        "counts": counts,
        "missing": {"count": len(missing), "examples": missing[:REPORT_LIMIT]},
        "quarantined": {"count": len(quarantine), "by_kind": reasons,
                        "examples": quarantine[:REPORT_LIMIT]},
        "leaking_patients": 0,
        "format": markers[0]["format"]["encoding"] + f"@{markers[0]['format']['image_size']}",
    }
    storage.write_json(storage.join(workspace, SHARDS_DIR, "validation.json"), summary)
    logger.info("validated %d images in %d shards from %d archives; %d missing, %d quarantined",
                summary["images"], summary["shards"], summary["archives"], len(missing), len(quarantine))
    return summary
