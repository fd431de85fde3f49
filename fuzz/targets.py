"""Fuzz targets: each takes arbitrary bytes and may fail only in the documented way for bad input.

Anything else that escapes (a ``KeyError``, an ``OverflowError``, a ``RecursionError``, a hang caught by the
fuzzer's timeout, memory past its limit) is a bug: the fuzzer reports it as a crash and keeps the input.

* ``archive``: ``data.archives.iter_members`` read to the end -> :class:`ArchiveError` only.
* ``image``: ``data.images.prepare`` -> :class:`ImageRejected` only.
* ``metadata``: ``data.metadata.read_metadata`` on the bytes as ``Data_Entry_2017.csv`` -> :class:`MetadataError`.
* ``manifest``: the consumer's ``registry.integrity.read_manifest`` -> :class:`IntegrityError` only.
* ``pointer``: the consumer's ``registry.pointers.read_champion`` -> :class:`RegistryError` only.
"""

from __future__ import annotations

import io
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from xray_tasks.data.archives import ArchiveError, iter_members
from xray_tasks.data.images import ImageRejected, prepare
from xray_tasks.data.metadata import MetadataError, read_metadata
from xray_tasks.errors import IntegrityError
from xray_tasks.registry import integrity, pointers
from xray_tasks.registry.layout import MANIFEST, RegistryError, champion_uri

logging.disable(
    logging.CRITICAL
)  # the readers log every refusal; at thousands of inputs a second that is noise
_SCRATCH = Path(tempfile.mkdtemp(prefix="xray-fuzz-"))
MAX_MEMBER = 1 << 20
MAX_HEADER = 4096


def archive(data: bytes) -> None:
    try:
        for member in iter_members(io.BytesIO(data), "images_001.tar.gz", MAX_MEMBER, MAX_HEADER):
            assert member.data is None or len(member.data) <= MAX_MEMBER
            assert len(member.path) <= 200 and (member.problem is None or len(member.problem[1]) < 1000)
    except ArchiveError as exc:
        assert " at 0x" not in str(exc), str(exc)


def image(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: our own pixel limit is lower
        try:
            out = prepare(data, 16, max_pixels=1_000_000, min_side=1, max_aspect=64.0)
        except ImageRejected as exc:
            assert exc.kind and " at 0x" not in str(exc), str(exc)
            return
    assert len(out) == 16 * 16


def metadata(data: bytes) -> None:
    path = _SCRATCH / "Data_Entry_2017.csv"
    path.write_bytes(data)
    try:
        meta = read_metadata(str(path))
    except MetadataError:
        return
    table = meta.table
    assert table["patient_id"].dtype == "int64" and table["image_index"].is_unique
    assert set(table["label"].unique()) <= {0, 1}


def manifest(data: bytes) -> None:
    version = _SCRATCH / "model" / "versions" / "000001"
    version.mkdir(parents=True, exist_ok=True)
    (version / MANIFEST).write_bytes(data)
    try:
        parsed, raw = integrity.read_manifest(str(version))
    except IntegrityError:
        return
    assert isinstance(parsed["files"], dict) and raw == data


def pointer(data: bytes) -> None:
    uri = champion_uri(str(_SCRATCH / "registry"), "xray")
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_bytes(data)
    try:
        parsed, tag = pointers.read_champion(str(_SCRATCH / "registry"), "xray")
    except RegistryError:
        return
    assert isinstance(parsed, dict) and "version" in parsed and tag


TARGETS: dict[str, Callable[[bytes], None]] = {
    "archive": archive,
    "image": image,
    "metadata": metadata,
    "manifest": manifest,
    "pointer": pointer,
}
INSTRUMENT = {
    "archive": ("xray_tasks", "tarfile", "gzip", "bz2", "lzma", "_compression"),
    "image": ("xray_tasks", "PIL"),
    "metadata": ("xray_tasks",),
    "manifest": ("xray_tasks", "json"),
    "pointer": ("xray_tasks", "json"),
}
"""Modules whose Python code atheris instruments for coverage, per target (imported after instrumentation)."""
