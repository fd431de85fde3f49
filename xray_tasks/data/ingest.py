"""Archives -> committed TFRecord shards, one archive per call.

``ingest_archive`` is idempotent: a committed archive is a no-op, anything else (never run, crashed, killed) is
redone from the start and gives byte-identical shards.  Bad members are quarantined with a reason and the rest of
the archive goes on; a broken archive fails with :class:`~xray_tasks.data.archives.ArchiveError` and commits
nothing.  The dataset-wide check of the committed set is ``data.validate``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pandas as pd

from xray_tasks import __version__, storage
from xray_tasks.config import PATHOLOGIES, IngestConfig
from xray_tasks.contracts import (
    ArchiveSummary,
    MemberCounts,
    Quarantined,
    ShardFormat,
    ShardMarker,
    SplitCount,
)
from xray_tasks.data import shards
from xray_tasks.data.archives import Member, iter_members, shorten
from xray_tasks.data.images import ImageRejected, prepare
from xray_tasks.data.manifest import manifest_exclusions, read_manifest
from xray_tasks.errors import BadInput
from xray_tasks.workspace import Workspace

logger = logging.getLogger(__name__)

REPORT_LIMIT = 50
"""Quarantine entries carried in a stage's returned summary (and logged one by one) per archive."""
QUARANTINE_KEPT = 1000
"""Quarantine entries kept in an archive's marker; ``members.by_kind`` counts every one."""
PROGRESS_EVERY = 500
"""Members between two progress lines in the log."""


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
        storage.join(source, n)
        for n in storage.listdir(source)
        if n.startswith("images") and n.endswith((".tar.gz", ".tgz"))
    ]


def shard_format_for(cfg: IngestConfig) -> ShardFormat:
    return ShardFormat(
        version=shards.FORMAT_VERSION,
        encoding=cfg.encoding,
        image_size=cfg.image_size,
        resample=cfg.resample,
        png_level=cfg.png_level if cfg.encoding == "png" else None,
        features={k: tuple(v) for k, v in shards.FEATURES.items()},
        pathologies=PATHOLOGIES,
    )


def ingest_archive(
    archive_uri: str, workspace: str, cfg: IngestConfig, table: pd.DataFrame | None = None
) -> ArchiveSummary:
    """Shard one archive into ``<workspace>/shards``; returns a small summary (counts, quarantine).

    Raises:
        IngestError: the archive was committed with another shard format.
        ArchiveError: the archive itself is unreadable (nothing of it is committed).
    """
    ws, stem, fmt = Workspace(workspace), archive_stem(archive_uri), shard_format_for(cfg)
    done = _committed(ws, stem, fmt)
    if done is not None:
        logger.info("%s: already committed (%s), nothing to do", stem, ws.marker(stem))
        return _summary(done, skipped=True)
    sorter = _MemberSorter(
        storage.basename(archive_uri),
        cfg,
        read_manifest(workspace) if table is None else table,
        manifest_exclusions(workspace),
    )
    removed = shards.remove_uncommitted(ws, stem)
    if removed:
        logger.warning("%s: removed %d uncommitted shard(s) left by an earlier attempt", stem, removed)
    started = time.monotonic()
    with _stager(ws, stem, cfg) as stager:
        with storage.open_read(archive_uri) as fh:
            members = iter_members(
                fh, sorter.archive, int(cfg.max_member_mb * 1024 * 1024), cfg.max_header_kb * 1024
            )
            for member in members:
                sorter.take(member, stager)
        entries = shards.publish(stager.finalize(), ws, stem)
    marker = sorter.marker(archive_uri, fmt, entries, time.monotonic() - started)
    storage.write_json(ws.marker(stem), marker.to_dict())  # the commit: written last
    logger.info(
        "%s: committed %d images in %d shard(s), %d quarantined %s, %.1f images/s",
        marker.archive,
        marker.members.sharded,
        len(entries),
        marker.members.quarantined,
        marker.members.by_kind,
        marker.images_per_s or 0,
    )
    return _summary(marker, skipped=False)


def _committed(ws: Workspace, stem: str, fmt: ShardFormat) -> ShardMarker | None:
    """The archive's marker when it is already committed in this format; refuses another format."""
    uri = ws.marker(stem)
    if not storage.exists(uri):
        return None
    done = shards.read_marker(uri)
    if done.format.key() != fmt.key():
        raise IngestError(
            f"{uri}: {stem} was ingested as {done.format.encoding} at {done.format.image_size}px; "
            f"this run asks for {fmt.encoding} at {fmt.image_size}px: use a new workspace"
        )
    return done


@contextmanager
def _stager(ws: Workspace, stem: str, cfg: IngestConfig) -> Iterator[shards.ShardStager]:
    """Local part files for one archive: beside the shards for a local workspace (a rename commits them), in a
    temporary folder for S3; removed afterwards whatever happens, with any left by an earlier attempt."""
    stager = shards.ShardStager(storage.staging_dir(ws.staging, stem), int(cfg.shard_target_mb * 1024 * 1024))
    try:
        yield stager
    finally:
        stager.cleanup()


class _MemberSorter:
    """Decides, member by member, whether an image is sharded (and where) or quarantined (and why)."""

    def __init__(
        self, archive: str, cfg: IngestConfig, table: pd.DataFrame, excluded: dict[str, str]
    ) -> None:
        self.archive, self.cfg, self.excluded = archive, cfg, excluded
        self.lookup = _lookup(table)
        self.quarantine: list[Quarantined] = []
        self.by_kind: dict[str, int] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.seen: set[str] = set()
        self.members, self.started = 0, time.monotonic()

    def take(self, member: Member, stager: shards.ShardStager) -> None:
        self.members += 1
        if self.members % PROGRESS_EVERY == 0:
            rate = self.members / max(time.monotonic() - self.started, 1e-9)
            logger.info("%s: %d members read, %.1f images/s", self.archive, self.members, rate)
        if member.problem:
            self._reject(member.path, *member.problem)
            return
        row = self.lookup.get(member.name)
        if row is None:
            why = self.excluded.get(member.name, "no row in the metadata")
            self._reject(member.path, "no_metadata", f"no usable metadata row: {why}")
            return
        if member.name in self.seen:
            self._reject(member.path, "duplicate", "duplicate image name (first copy kept)")
            return
        cfg = self.cfg
        try:
            pixels = prepare(
                member.data,
                cfg.image_size,
                encoding=cfg.encoding,
                png_level=cfg.png_level,
                resample=cfg.resample,
                max_pixels=cfg.max_pixels,
                min_side=cfg.min_side,
                max_aspect=cfg.max_aspect,
            )
        except ImageRejected as exc:
            self._reject(member.path, exc.kind, str(exc))
            return
        self.seen.add(member.name)
        split, patient, label, labels = row
        stager.add(
            split,
            member.name,
            shards.record_parts(
                image=pixels,
                height=cfg.image_size,
                width=cfg.image_size,
                image_index=member.name,
                patient_id=patient,
                label=label,
                labels=labels,
            ),
        )
        tally = self.counts.setdefault(split, {"images": 0, "healthy": 0, "unhealthy": 0})
        tally["images"] += 1
        tally["unhealthy" if label else "healthy"] += 1

    def _reject(self, path: str, kind: str, reason: str) -> None:
        path, reason = shorten(path), shorten(reason, 500)
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if len(self.quarantine) < QUARANTINE_KEPT:
            self.quarantine.append(Quarantined(archive=self.archive, member=path, kind=kind, reason=reason))
        rejected = sum(self.by_kind.values())
        if rejected <= REPORT_LIMIT:
            logger.warning("%s: quarantined %s: %s", self.archive, path, reason)
        elif rejected == REPORT_LIMIT + 1:
            logger.warning(
                "%s: more than %d members quarantined; counting the rest", self.archive, REPORT_LIMIT
            )

    def marker(self, archive_uri: str, fmt: ShardFormat, entries: list, elapsed: float) -> ShardMarker:
        return ShardMarker(
            archive=self.archive,
            archive_uri=archive_uri,
            format=fmt,
            shards=tuple(entries),
            counts={split: SplitCount(**tally) for split, tally in self.counts.items()},
            members=MemberCounts(
                total=self.members,
                sharded=len(self.seen),
                quarantined=sum(self.by_kind.values()),
                by_kind=dict(sorted(self.by_kind.items())),
            ),
            quarantine=tuple(self.quarantine),
            elapsed_s=round(elapsed, 3),
            images_per_s=round(len(self.seen) / elapsed, 2) if elapsed > 0 else None,
            code_version=__version__,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )


def _lookup(table: pd.DataFrame) -> dict[str, tuple]:
    labels = table[list(PATHOLOGIES)].to_numpy(dtype="int64").tolist()
    return {
        name: (split, int(pid), int(label), tuple(lab))
        for name, split, pid, label, lab in zip(
            table["image_index"], table["split"], table["patient_id"], table["label"], labels
        )
    }


def _summary(done: ShardMarker, skipped: bool) -> ArchiveSummary:
    return ArchiveSummary(
        archive=done.archive,
        skipped=skipped,
        shards=len(done.shards),
        counts=done.counts,
        members=done.members,
        quarantine=done.quarantine[:REPORT_LIMIT],
        images_per_s=done.images_per_s,
    )
