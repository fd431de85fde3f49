"""Is there news at the source?  The source now against what the workspace last ingested and validated.

Compared: the ``images_*.tar.gz`` archives by name, size and ETag (S3) or modification time (a local file, so a
copy with the same bytes counts as changed: re-ingesting it gives the same shards), and every metadata and
split-list file (``*.csv``, ``*.txt`` at the top of the source) by sha256.  News is:

- an archive the workspace has not committed (a 13th, say): ingested alone, then the whole set is validated;
- an archive whose bytes changed under the same name: its marker is retired and it is ingested again, never kept;
- changed metadata or split lists (the 2017 labels replaced by the 2020 ones): the manifest is rebuilt, and every
  archive holding an image whose split or labels changed is ingested again (shards carry the labels).

An archive that left the source stays committed (logged, not news).  The state is recorded in
``shards/source.json`` only after the set validated, so a failed ingest is retried on the next tick.
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import UTC, datetime

from xray_tasks import storage
from xray_tasks.config import PATHOLOGIES, IngestConfig
from xray_tasks.contracts import SourceCheck, SourceObject, SourceState
from xray_tasks.data import shards
from xray_tasks.data.ingest import archive_stem, list_archives
from xray_tasks.errors import MissingInput
from xray_tasks.workspace import Workspace

logger = logging.getLogger(__name__)

METADATA_SUFFIXES = (".csv", ".txt")
LABEL_COLUMNS = ("split", "label", *PATHOLOGIES)
"""Manifest columns the shards store: a change in any of them means the image's archive is re-sharded."""


def _objects(source: str) -> dict[str, tuple[int, str]]:
    """Name -> (size, ETag or ``mtime:<ns>``) of every file directly under ``source``."""
    if storage.is_s3(source):
        bucket, key = storage.split_s3(source)
        prefix = key.rstrip("/") + "/" if key else ""
        out = {}
        for page in (
            storage.s3_client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        ):
            for obj in page.get("Contents", []):
                out[obj["Key"][len(prefix) :]] = (int(obj["Size"]), str(obj["ETag"]).strip('"'))
        return out
    out = {}
    if not storage.local_path(source).is_dir():
        raise MissingInput(f"{source}: no such source folder")
    for entry in os.scandir(storage.local_path(source)):
        if entry.is_file():
            st = entry.stat()
            out[entry.name] = (st.st_size, f"mtime:{st.st_mtime_ns}")
    return out


def snapshot(source: str) -> SourceState:
    """The source now: archives with size and ETag, metadata and list files with their sha256."""
    objects = _objects(source)
    archives = {storage.basename(uri) for uri in list_archives(source)}
    files = {}
    for name, (size, etag) in sorted(objects.items()):
        if name not in archives and name.endswith(METADATA_SUFFIXES):
            sha = hashlib.sha256(storage.read_bytes(storage.join(source, name))).hexdigest()
            files[name] = SourceObject(size=size, etag=etag, sha256=sha)
    return SourceState(
        source=source,
        archives={n: SourceObject(size=objects[n][0], etag=objects[n][1]) for n in sorted(archives)},
        files=files,
        recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def committed(workspace: str) -> SourceState | None:
    """What was recorded after the last validated ingest, or ``None`` (never, or before this record existed)."""
    uri = Workspace(workspace).source_state
    if not storage.exists(uri):
        return None
    return SourceState.from_dict(storage.read_json(uri), where=uri)


def record(workspace: str, state: SourceState) -> str:
    """Record ``state`` as what the workspace holds (call after validation); returns the URI."""
    uri = Workspace(workspace).source_state
    storage.write_json(uri, state.to_dict())
    logger.info(
        "recorded the source state (%d archives, %d files) in %s", len(state.archives), len(state.files), uri
    )
    return uri


def check(source: str, workspace: str, cfg: IngestConfig) -> SourceCheck:
    """Compare the source with what ``workspace`` committed; what to ingest, if anything."""
    now, before = snapshot(source), committed(workspace)
    if not now.archives:
        raise MissingInput(f"{source}: no images_*.tar.gz archives (is the source setting right?)")
    ws = Workspace(workspace)
    markers = {m.archive: m for m in shards.read_markers(workspace)}
    uri_of = {storage.basename(u): u for u in list_archives(source)}
    reasons, ingest, replace = [], [], []
    compared = (
        f"{len(now.archives)} archive(s) at {source} (names, sizes, ETags) and {len(now.files)} metadata/list "
        f"file(s) (sha256) against {ws.source_state if before else 'nothing recorded'}"
    )
    if before is None:
        reasons.append("no record of an earlier ingest in this workspace: ingest everything not committed")
        ingest = sorted(uri_of)
        rebuild = True
    else:
        rebuild = not storage.exists(ws.manifest)
        for name in sorted(now.archives):
            seen = before.archives.get(name)
            if seen is None or name not in markers:
                reasons.append(f"new archive {name}")
                ingest.append(name)
            elif (seen.size, seen.etag) != (now.archives[name].size, now.archives[name].etag):
                reasons.append(
                    f"{name} changed under the same name (size {seen.size} -> {now.archives[name].size}, "
                    f"ETag {seen.etag[:16]} -> {now.archives[name].etag[:16]})"
                )
                ingest.append(name)
                replace.append(name)
        changed_files = sorted(
            n
            for n in set(before.files) | set(now.files)
            if (before.files.get(n) and before.files[n].sha256) != (now.files.get(n) and now.files[n].sha256)
        )
        if changed_files:
            rebuild = True
            reasons.append(f"metadata/list file(s) changed: {', '.join(changed_files)}")
            relabelled = _relabelled_archives(source, workspace, cfg, markers)
            for name in relabelled:
                if name in uri_of and name not in ingest:
                    ingest.append(name)
                    replace.append(name)
            reasons.append(
                f"{len(relabelled)} committed archive(s) hold images whose split or labels changed"
            )
    removed = sorted(name for name in markers if name not in now.archives)
    if removed:
        logger.warning("archives committed but no longer at the source (kept): %s", removed)
    result = SourceCheck(
        source=source,
        news=bool(ingest) or (rebuild and before is not None),
        reasons=tuple(reasons),
        compared=compared,
        ingest=tuple(uri_of[n] for n in sorted(ingest) if n in uri_of),
        replace=tuple(uri_of[n] for n in sorted(replace) if n in uri_of),
        rebuild_manifest=rebuild,
        removed=tuple(removed),
        state=now,
    )
    logger.info("source check: compared %s: %s", compared, "; ".join(reasons) if result.news else "no news")
    return result


def _relabelled_archives(source: str, workspace: str, cfg: IngestConfig, markers: dict) -> list[str]:
    """Committed archives holding an image whose split or labels differ between the manifest and the metadata."""
    from xray_tasks.data.manifest import build_manifest, read_manifest

    if not storage.exists(Workspace(workspace).manifest):
        return sorted(markers)
    old = read_manifest(workspace).set_index("image_index")
    new = build_manifest(source, cfg)[0].set_index("image_index")
    columns = [c for c in LABEL_COLUMNS if c in old.columns and c in new.columns]
    common = old.index.intersection(new.index)
    differs = (old.loc[common, columns] != new.loc[common, columns]).any(axis=1)
    changed = set(common[differs.to_numpy()]) | (set(old.index) ^ set(new.index))
    return sorted(
        name
        for name, marker in markers.items()
        if any(image in changed for entry in marker.shards for image in entry.images)
    )


def retire(workspace: str, archive: str) -> bool:
    """Withdraw an archive's commit marker so that ``ingest_archive`` shards it again; returns whether one existed.

    Its old shards stay until the new ingest removes them (no marker covers them, so no reader trusts them); the
    features cached for them are deleted, since they describe the old bytes.
    """
    ws = Workspace(workspace)
    uri = ws.marker(archive_stem(archive))
    if not storage.exists(uri):
        return False
    marker = shards.read_marker(uri)
    storage.delete(uri)
    # Its cached features describe the old shards: drop them, or feature extraction would refuse the new ones.
    stale = 0
    for name in storage.list_dirs(ws.feature_sets):
        base, _, size = name.rpartition("-")
        if not base or not size.isdigit():
            continue
        for entry in marker.shards:
            cached = ws.feature_file(base, int(size), entry.split, entry.path)
            if storage.exists(cached):
                storage.delete(cached)
                stale += 1
    if stale:
        logger.info(
            "%s: %d cached feature file(s) of its old shards removed", storage.basename(archive), stale
        )
    logger.info("%s: marker retired (%s); the archive will be ingested again", storage.basename(archive), uri)
    return True
