"""The shard format and the staged, committed writer.

Under the workspace (``workspace.Workspace``): ``shards/<split>/<archive>-NNNNN-of-NNNNN.tfrecord`` and the
commit marker ``shards/_manifests/<archive>.json`` (``contracts.ShardMarker``), written last, listing every shard
with its sha256.  An archive's records are staged in local part files while it streams; only when the whole
archive has been read are the parts (re)ordered by image name, moved or uploaded under their final names, and the
marker written.  Readers trust only shards that a marker lists, so a crash leaves nothing that looks done.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xray_tasks import storage
from xray_tasks.config import PATHOLOGIES
from xray_tasks.contracts import ShardEntry, ShardFormat, ShardMarker
from xray_tasks.data.tfrecord import example_parts, frame_parts
from xray_tasks.errors import BadInput, MissingInput
from xray_tasks.workspace import Workspace

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

# One spec drives the writer (example_bytes) and the tf.data parser (dataset.feature_spec):
# name -> (kind, length); length 1 is a scalar.
FEATURES: dict[str, tuple[str, int]] = {
    "image": ("bytes", 1),
    "height": ("int64", 1),
    "width": ("int64", 1),
    "image_index": ("bytes", 1),
    "patient_id": ("int64", 1),
    "label": ("int64", 1),
    "labels": ("int64", len(PATHOLOGIES)),
}


def record_parts(
    *,
    image: bytes,
    height: int,
    width: int,
    image_index: str,
    patient_id: int,
    label: int,
    labels: Sequence[int],
) -> list[bytes]:
    """One framed TFRecord record of the shard format, as pieces (the image bytes are not copied)."""
    values = {
        "image": [image],
        "height": [height],
        "width": [width],
        "image_index": [image_index.encode("utf-8")],
        "patient_id": [patient_id],
        "label": [label],
        "labels": list(labels),
    }
    for name, (_, length) in FEATURES.items():
        if len(values[name]) != length:
            raise BadInput(f"feature {name!r} needs {length} value(s), got {len(values[name])}")
    return frame_parts(example_parts({name: (FEATURES[name][0], values[name]) for name in FEATURES}))


def shard_name(stem: str, index: int, count: int) -> str:
    return f"{stem}-{index:05d}-of-{count:05d}.tfrecord"


def is_shard_of(name: str, stem: str) -> bool:
    """Whether ``name`` is one of ``stem``'s shard names exactly (``images_001-x``'s shards are not
    ``images_001``'s)."""
    return re.fullmatch(re.escape(stem) + r"-\d{5}-of-\d{5}\.tfrecord", name) is not None


@dataclass
class _Part:
    path: Path
    records: int = 0
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


@dataclass
class _SplitStage:
    parts: list[_Part] = field(default_factory=list)
    index: list[tuple[str, int, int, int]] = field(default_factory=list)  # name, part, offset, length
    in_order: bool = True


@dataclass(frozen=True)
class StagedShard:
    split: str
    path: Path
    records: int
    size: int
    sha256: str
    images: tuple[str, ...]


class ShardStager:
    """Collects framed records for one archive in local part files, per split.

    ``finalize`` returns the final shards in image-name order; when the archive's members were not sorted the
    records are copied into new parts in sorted order (no re-decoding).
    """

    def __init__(self, directory: Path, target_bytes: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.target_bytes = int(target_bytes)
        self._splits: dict[str, _SplitStage] = {}
        self._handle = None
        self._handle_part: _Part | None = None

    def add(self, split: str, name: str, record: Sequence[bytes]) -> None:
        """Append one framed record (given as pieces) to the split's current part."""
        stage = self._splits.setdefault(split, _SplitStage())
        if stage.index and name < stage.index[-1][0]:
            stage.in_order = False
        length = sum(map(len, record))
        if not stage.parts or stage.parts[-1].size + length > self.target_bytes and stage.parts[-1].records:
            stage.parts.append(_Part(self.directory / f"{split}-{len(stage.parts):05d}.part"))
        part = stage.parts[-1]
        fh = self._open(part)
        stage.index.append((name, len(stage.parts) - 1, part.size, length))
        for piece in record:
            fh.write(piece)
            part.digest.update(piece)
        part.records += 1
        part.size += length

    def _open(self, part: _Part):
        if self._handle_part is not part:
            self._close()
            self._handle = open(part.path, "ab")  # noqa: SIM115 (kept open across add() calls, closed by _close)
            self._handle_part = part
        return self._handle

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle, self._handle_part = None, None

    def finalize(self) -> list[StagedShard]:
        self._close()
        out: list[StagedShard] = []
        for split in sorted(self._splits):
            stage = self._splits[split]
            if not stage.in_order:
                stage = self._reorder(split, stage)
            for part_no, part in enumerate(stage.parts):
                names = tuple(n for n, p, _, _ in stage.index if p == part_no)
                out.append(
                    StagedShard(split, part.path, part.records, part.size, part.digest.hexdigest(), names)
                )
        return out

    def _reorder(self, split: str, stage: _SplitStage) -> _SplitStage:
        logger.info(
            "members of split %s arrived unsorted: rewriting %d records in name order",
            split,
            len(stage.index),
        )
        with contextlib.ExitStack() as stack:
            sources = [stack.enter_context(open(p.path, "rb")) for p in stage.parts]
            for name, part_no, offset, length in sorted(stage.index):
                sources[part_no].seek(offset)
                self.add(f"{split}.sorted", name, [sources[part_no].read(length)])
            self._close()
            ordered = self._splits.pop(f"{split}.sorted")
        for part in stage.parts:
            part.path.unlink(missing_ok=True)
        return ordered

    def cleanup(self) -> None:
        self._close()
        shutil.rmtree(self.directory, ignore_errors=True)


def publish(staged: list[StagedShard], ws: Workspace, stem: str) -> list[ShardEntry]:
    """Put staged shards under their final names (moved locally, uploaded to S3); returns the marker's entries."""
    per_split: dict[str, list[StagedShard]] = {}
    for shard in staged:
        per_split.setdefault(shard.split, []).append(shard)
    entries = []
    for split, shards in sorted(per_split.items()):
        for i, shard in enumerate(shards):
            relative = f"{split}/{shard_name(stem, i, len(shards))}"
            storage.publish_file(shard.path, ws.shard(relative))
            entries.append(
                ShardEntry(
                    split=split,
                    path=relative,
                    records=shard.records,
                    bytes=shard.size,
                    sha256=shard.sha256,
                    images=shard.images,
                )
            )
    return entries


def remove_uncommitted(ws: Workspace, stem: str) -> int:
    """Delete final-named shards of ``stem`` that no marker covers (left by a crash); returns how many."""
    removed = 0
    for uri in storage.list_files(ws.shards):
        name = storage.basename(uri)
        if ws.is_bookkeeping(uri):
            continue
        if is_shard_of(name, stem):
            storage.delete(uri)
            removed += 1
    return removed


def read_marker(uri: str) -> ShardMarker:
    return ShardMarker.from_dict(storage.read_json(uri), where=uri)


def read_markers(workspace: str) -> list[ShardMarker]:
    """Every committed archive marker in the workspace, sorted by archive."""
    return [read_marker(u) for u in storage.list_files(Workspace(workspace).markers) if u.endswith(".json")]


def committed_shards(workspace: str, split: str) -> list[str]:
    """URIs of the committed shards of one split, in archive then index order."""
    ws = Workspace(workspace)
    return [ws.shard(entry.path) for marker in read_markers(workspace) for entry in marker.entries(split)]


def split_size(workspace: str, split: str) -> int:
    """Records in one split's committed shards (from the markers, no reading)."""
    return sum(entry.records for marker in read_markers(workspace) for entry in marker.entries(split))


def shard_format(workspace: str) -> ShardFormat:
    """The stored format (encoding, image size) that every committed archive agrees on."""
    return common_format(read_markers(workspace), Workspace(workspace).shards)


def common_format(markers: list[ShardMarker], where: str) -> ShardFormat:
    """The one format of these markers.

    Raises:
        MissingInput: no markers.
        BadInput: the archives were ingested with different formats.
    """
    formats = {m.format.key(): m.format for m in markers}
    if not formats:
        raise MissingInput(f"{where}: no committed shards (run ingest first)")
    if len(formats) > 1:
        raise BadInput(
            f"{where}: archives were ingested with different formats: "
            f"{sorted(f.describe() for f in formats.values())}"
        )
    return next(iter(formats.values()))
