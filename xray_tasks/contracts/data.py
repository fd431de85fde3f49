"""Contracts of the data side: the shard format, the per-archive commit marker, the ingest stages' summaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from xray_tasks.contracts.base import Contract, doc


@dataclass(frozen=True)
class ShardFormat(Contract):
    """How an archive's images were stored; every committed archive of a workspace must agree on it."""

    version: int = doc("shard format version (`data.shards.FORMAT_VERSION`)")
    encoding: str = doc("`raw` (row-major uint8 pixels) or `png`")
    image_size: int = doc("stored images are image_size x image_size, 8-bit grey")
    resample: str = doc("Pillow resize filter: `box`, `bilinear` or `lanczos`")
    png_level: int | None = doc("PNG compression level when encoding is `png`")
    features: dict[str, tuple[Any, ...]] = doc("the record spec: feature name -> [kind, length]")
    pathologies: tuple[str, ...] = doc("column order of the 14-finding `labels` vector")

    def key(self) -> tuple[int, str, int, str]:
        """What two formats must share for their shards to be read as one set."""
        return (self.version, self.encoding, self.image_size, self.resample)

    def describe(self) -> str:
        return f"{self.encoding}@{self.image_size}"


@dataclass(frozen=True)
class ShardEntry(Contract):
    """One committed shard, as its archive's marker lists it."""

    split: str = doc("`train`, `val` or `test`")
    path: str = doc("`<split>/<archive>-NNNNN-of-NNNNN.tfrecord`, relative to `<workspace>/shards/`")
    records: int = doc("records (images) in the shard")
    bytes: int = doc("file size")
    sha256: str = doc("sha256 of the file")
    images: tuple[str, ...] = doc("image names in record order (sorted)")


@dataclass(frozen=True)
class SplitCount(Contract):
    images: int = doc("images")
    healthy: int = doc("`No Finding` images")
    unhealthy: int = doc("images with at least one finding")


@dataclass(frozen=True)
class MemberCounts(Contract):
    total: int = doc("non-directory members read from the archive")
    sharded: int = doc("members stored in a shard")
    quarantined: int = doc("members set aside, each with a reason")
    by_kind: dict[str, int] = doc(
        "quarantined members per kind, all of them (the quarantine list is capped)", default_factory=dict
    )


@dataclass(frozen=True)
class Quarantined(Contract):
    """One member that was not sharded, and why."""

    archive: str = doc("archive file name")
    member: str = doc("member path inside the archive")
    kind: str = doc("stable code, e.g. `corrupt_png`, `no_metadata`, `duplicate`")
    reason: str = doc("what is wrong, in words")


@dataclass(frozen=True)
class ShardMarker(Contract):
    """``shards/_manifests/<archive>.json``: the commit marker, written after the archive's last shard.

    Readers trust only shards a marker lists.  Markers written before schemas were numbered read as schema 0.
    """

    SCHEMA: ClassVar[int] = 1
    OLDEST_SCHEMA: ClassVar[int] = 0

    archive: str = doc("archive file name, e.g. `images_001.tar.gz`")
    archive_uri: str = doc("where it was read from")
    format: ShardFormat = doc("how its images were stored")
    shards: tuple[ShardEntry, ...] = doc("every shard it committed, per split in index order")
    counts: dict[str, SplitCount] = doc("images per split and class")
    members: MemberCounts = doc("members read, sharded, quarantined")
    quarantine: tuple[Quarantined, ...] = doc(
        "members set aside, the first `data.ingest.QUARANTINE_KEPT` (members.by_kind counts them all)"
    )
    elapsed_s: float = doc("seconds the archive took")
    images_per_s: float | None = doc("sharded images per second")
    code_version: str = doc("`xray_tasks` version that wrote it")
    created_at: str = doc("UTC time of the commit, ISO 8601")

    def entries(self, split: str) -> list[ShardEntry]:
        return [entry for entry in self.shards if entry.split == split]


@dataclass(frozen=True)
class ArchiveSummary(Contract):
    """What ``xray-tasks ingest-archive`` prints (the ingest DAG's XCom per archive)."""

    archive: str = doc("archive file name")
    skipped: bool = doc("already committed: nothing was done")
    shards: int = doc("shards committed")
    counts: dict[str, SplitCount] = doc("images per split and class")
    members: MemberCounts = doc("members read, sharded, quarantined")
    quarantine: tuple[Quarantined, ...] = doc("the first quarantined members (the marker has them all)")
    images_per_s: float | None = doc("sharded images per second")


@dataclass(frozen=True)
class Examples(Contract):
    count: int = doc("how many")
    examples: tuple[str, ...] = doc("the first few")


@dataclass(frozen=True)
class QuarantineReport(Contract):
    count: int = doc("members quarantined over all archives")
    by_kind: dict[str, int] = doc("count per kind")
    examples: tuple[Quarantined, ...] = doc("the first few")


@dataclass(frozen=True)
class ValidationSummary(Contract):
    """``shards/validation.json`` and what ``xray-tasks validate`` prints: the committed set against the manifest."""

    archives: int = doc("committed archives")
    shards: int = doc("committed shards")
    images: int = doc("sharded images")
    counts: dict[str, SplitCount] = doc("images per split and class")
    missing: Examples = doc("manifest rows whose image no archive held")
    quarantined: QuarantineReport = doc("members set aside, by kind")
    leaking_patients: int = doc("patients with images in two splits (always 0: validation fails otherwise)")
    format: str = doc("`<encoding>@<image_size>`")


@dataclass(frozen=True)
class ManifestCounts(Contract):
    images: int = doc("images")
    patients: int = doc("distinct patients")
    healthy: int = doc("`No Finding` images")
    unhealthy: int = doc("images with at least one finding")


@dataclass(frozen=True)
class ManifestSummary(Contract):
    """What ``xray-tasks manifest`` prints."""

    manifest: str = doc("URI of manifest.parquet")
    counts: dict[str, ManifestCounts] = doc("per split and `total`")
    excluded: int = doc("metadata rows excluded, each with a reason in summary.json")
    listed_not_in_metadata: dict[str, int] = doc("names on a split list with no metadata row, per list")


@dataclass(frozen=True)
class SourceObject(Contract):
    """One file at the source as the check sees it."""

    size: int = doc("bytes")
    etag: str = doc("S3 ETag, or `mtime:<ns>` for a local file")
    sha256: str | None = doc("sha256 of the bytes (metadata and list files only)", default=None)


@dataclass(frozen=True)
class SourceState(Contract):
    """``shards/source.json``: the source as last ingested and validated; ``check-source`` compares with it."""

    SCHEMA: ClassVar[int] = 1

    source: str = doc("the source folder or s3:// prefix")
    archives: dict[str, SourceObject] = doc("`images_*.tar.gz` by name: size and ETag")
    files: dict[str, SourceObject] = doc(
        "metadata and split-list files (`*.csv`, `*.txt`) by name, with sha256"
    )
    recorded_at: str = doc("UTC time it was taken, ISO 8601")


@dataclass(frozen=True)
class SourceCheck(Contract):
    """What ``xray-tasks check-source`` prints: is there news at the source, and what to ingest for it."""

    source: str = doc("the source checked")
    news: bool = doc("something to ingest: a new or changed archive, or changed metadata / lists")
    reasons: tuple[str, ...] = doc("what is new, in words (empty without news)")
    compared: str = doc("what was compared with what, in words (logged)")
    ingest: tuple[str, ...] = doc("archive URIs to ingest (only the new and changed ones)")
    replace: tuple[str, ...] = doc("of those, archives committed before whose bytes or labels changed")
    rebuild_manifest: bool = doc("metadata or split lists changed (or no manifest yet): rebuild it first")
    removed: tuple[str, ...] = doc("archives committed before that the source no longer has (kept, logged)")
    state: SourceState = doc("the source now; recorded as `shards/source.json` once the set validates")
