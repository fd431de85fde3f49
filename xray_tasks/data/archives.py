"""Stream the members of an NIH ``images_NNN.tar.gz`` without extracting anything to disk.

Nothing from an archive is ever written as a file, so a hostile member path cannot escape the output root; it is
still reported.  Every member that is not a plain ``.png`` file of acceptable size comes back with a reason
instead of bytes.  Extended headers (GNU long names, pax records) are bounded: one over the limit is skipped
unread and its member quarantined, so a tiny archive cannot make ``tarfile`` hold a 200 MB name.  The
compression is read from the stream's first bytes (gzip, bzip2, xz or none), whatever the file is called.  An
empty, truncated or corrupt archive raises :class:`ArchiveError` saying which.  Gzip is inflated by ISA-L
(``isal``, 3x zlib's rate, see ``bench/ingest.py``) when it is installed, else by the standard library.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from xray_tasks.errors import BadInput

try:  # optional: the standard library's gzip reads the same streams when it is absent
    from isal.igzip import IGzipFile as _IGzipFile
    from isal.isal_zlib import error as _IsalError
except ImportError:  # pragma: no cover - exercised where isal is not installed
    _IGzipFile = None
    _IsalError = zlib.error

GUNZIPS = ("isal", "zlib")
DEFAULT_GUNZIP = "isal" if _IGzipFile is not None else "zlib"
"""What inflates a gzip archive unless told: the fastest one installed (measured in ``bench/ingest.py``)."""

logger = logging.getLogger(__name__)

_READ_BLOCK = 256 * 1024
"""``tarfile``'s stream buffer.  Each read copies what is left of the buffer: at 1 MiB, reading a real NIH member
took 0.5 ms of CPU, at 256 KiB 0.15 ms (docs/ingest.md)."""
MAX_HEADER_BYTES = 64 * 1024
"""Largest GNU long-name / long-link or pax header read; a path longer than this is no NIH image."""
NAME_LIMIT = 200
"""Longest member name carried in a log line, a marker or a returned summary (longer ones are shortened)."""

_EXTENDED = {
    tarfile.GNUTYPE_LONGNAME: "GNU long-name",
    tarfile.GNUTYPE_LONGLINK: "GNU long-link",
    tarfile.XHDTYPE: "pax extended",
    tarfile.XGLTYPE: "pax global",
    tarfile.SOLARIS_XHDTYPE: "Solaris extended",
}
_TYPE_NAMES = {
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a GNU sparse file",
    b"V": "a volume label",
    b"M": "a multi-volume continuation",
}
_SUFFIX_COMPRESSION = {".tar.gz": "gz", ".tgz": "gz", ".tar.bz2": "bz2", ".tar.xz": "xz", ".tar": "tar"}
_DESCRIBED = {"gz": "gzip", "bz2": "bzip2", "xz": "xz", "tar": "uncompressed tar"}


class ArchiveError(BadInput):
    """The archive itself is unreadable (empty, truncated, not tar); the message names it."""


def shorten(text: str, limit: int = NAME_LIMIT) -> str:
    """``text`` when it is at most ``limit`` characters, else its start and end around its full length."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    head = max(limit - tail - 24, 1)
    return f"{text[:head]}...[{len(text)} chars]...{text[-tail:]}"


@dataclass(frozen=True)
class Member:
    path: str
    """The member's path inside the archive, as stored (shortened past :data:`NAME_LIMIT`)."""
    data: bytes | None
    """Its bytes when it is a usable regular file, else ``None``."""
    problem: tuple[str, str] | None = None
    """``(kind, reason)`` when it was not read, for the quarantine report."""

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


class BoundedTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` that refuses extended headers over ``max_header_bytes`` instead of reading them whole.

    The oversized header's data blocks are skipped in the stream (read and dropped a block at a time); the member
    it describes is returned with ``header_problem`` set and its stored 100-byte name, so the caller quarantines
    it and reads on.
    """

    max_header_bytes = MAX_HEADER_BYTES
    header_problem: tuple[str, str] | None = None

    @classmethod
    def fromtarfile(cls, tarfile_):
        # ``tarfile.next()`` ends the member stream without an error when a header after the first is damaged
        # (bad checksum, a short block): the members behind it would vanish from an archive that reads as
        # complete.  Past the first header, that is a corrupt archive.
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as exc:
            if tarfile_.offset == 0:
                raise
            raise tarfile.SubsequentHeaderError(
                f"damaged tar header at byte {tarfile_.offset} of the tar stream ({exc})"
            ) from None

    def _proc_member(self, tarfile_):
        if self.type in _EXTENDED and self.size > self.max_header_bytes:
            return self._skip_extended(tarfile_)
        return super()._proc_member(tarfile_)

    def _skip_extended(self, tarfile_):
        stream = tarfile_.fileobj
        stream.seek(stream.tell() + self._block(self.size))
        try:
            member = self.fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            raise tarfile.SubsequentHeaderError(str(exc)) from None
        member.offset = self.offset
        reason = f"{_EXTENDED[self.type]} header of {self.size} bytes (limit {self.max_header_bytes})"
        member.header_problem = ("oversized_header", f"{reason}; member skipped unread")
        return member


def bounded_tarinfo(max_header_bytes: int) -> type[BoundedTarInfo]:
    return type("BoundedTarInfo", (BoundedTarInfo,), {"max_header_bytes": int(max_header_bytes)})


def member_problem(info: tarfile.TarInfo, max_bytes: int) -> tuple[str, str] | None:
    """``(kind, reason)`` when a member cannot be used, ``None`` when it is a plain PNG file within limits."""
    header = getattr(info, "header_problem", None)
    if header:
        return header
    parts = PurePosixPath(info.name).parts
    if info.name.startswith("/") or ".." in parts:
        return "unsafe_path", f"unsafe member path {shorten(info.name)!r} (absolute or containing '..')"
    if info.issym() or info.islnk():
        kind = "symlink" if info.issym() else "hard link"
        return "link_member", f"link member ({kind} to {shorten(info.linkname)!r})"
    if info.ischr() or info.isblk() or info.isfifo():
        return "device_member", "device or FIFO member"
    if not info.isfile():
        kind = _TYPE_NAMES.get(info.type, f"unknown tar type {info.type.decode('latin-1')!r}")
        return "not_regular_file", f"not a regular file ({kind})"
    if info.size > max_bytes:
        return "member_too_large", f"member too large ({info.size} bytes, limit {max_bytes})"
    if not info.name.lower().endswith(".png"):
        return "non_image", "not a PNG member (name does not end in .png)"
    return None


def detect_compression(head: bytes) -> str:
    """``gz``, ``bz2``, ``xz`` or ``tar`` (none) from a stream's first bytes, by the same magic as ``tarfile``."""
    if head.startswith(b"\x1f\x8b\x08"):
        return "gz"
    if head[0:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "bz2"
    if head.startswith((b"\x5d\x00\x00\x80", b"\xfd7zXZ")):
        return "xz"
    return "tar"


def named_compression(archive: str) -> str | None:
    """The compression an archive's file name promises, ``None`` when the name says nothing."""
    for suffix, kind in _SUFFIX_COMPRESSION.items():
        if archive.endswith(suffix):
            return kind
    return None


class _Prefixed(io.RawIOBase):
    """``prefix`` then the rest of ``fileobj``: lets the caller look at the first bytes of a non-seekable stream."""

    def __init__(self, prefix: bytes, fileobj: IO[bytes]) -> None:
        self._prefix, self._fileobj = prefix, fileobj

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size is None or size < 0:
                out, self._prefix = self._prefix + self._fileobj.read(), b""
                return out
            out, self._prefix = self._prefix[:size], self._prefix[size:]
            return out
        return self._fileobj.read(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _decompressed(raw: IO[bytes], compression: str, gunzip: str | None = None) -> IO[bytes]:
    """The tar stream inside ``raw``, decompressed a buffer at a time (gzip by ``gunzip``, see :data:`GUNZIPS`).

    ``tarfile``'s own stream modes inflate each compressed read in one call, so a highly compressible run (a long
    name of one repeated byte) becomes one huge buffer; these readers bound every read's output.
    """
    if compression == "gz":
        if (gunzip or DEFAULT_GUNZIP) == "isal" and _IGzipFile is not None:
            return _IGzipFile(fileobj=raw, mode="rb")
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if compression == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def iter_members(
    fileobj: IO[bytes],
    archive: str,
    max_member_bytes: int,
    max_header_bytes: int = MAX_HEADER_BYTES,
    *,
    gunzip: str | None = None,
) -> Iterator[Member]:
    """Yield every non-directory member in stream order.

    ``gunzip``: ``isal`` or ``zlib`` for a gzip stream (``None``: :data:`DEFAULT_GUNZIP`; ``isal`` when it is not
    installed means zlib).  Both read the same members and fail in the same words naming the archive.

    Raises:
        ArchiveError: the archive is empty, not a tar archive (plain or gzip/bzip2/xz-compressed), or its stream
            breaks (truncated or corrupt); the message says which and after how many members.
    """
    if gunzip is not None and gunzip not in GUNZIPS:
        raise ValueError(f"gunzip must be one of {GUNZIPS}, got {gunzip!r}")
    head = fileobj.read(512)
    if not head:
        raise ArchiveError(f"{archive}: archive is empty (0 bytes)")
    found, promised = detect_compression(head), named_compression(archive)
    if promised and found != promised:
        logger.warning(
            "%s: the name promises %s but the data is %s; reading it as %s",
            archive,
            _DESCRIBED[promised],
            _DESCRIBED[found],
            _DESCRIBED[found],
        )
    count = 0
    try:
        with tarfile.open(
            fileobj=_decompressed(_Prefixed(head, fileobj), found, gunzip),
            mode="r|",
            bufsize=_READ_BLOCK,
            tarinfo=bounded_tarinfo(max_header_bytes),
        ) as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()  # stream mode would keep every header read: memory grows with members
                if info.isdir():
                    continue
                count += 1
                member = _read_member(tar, info, max_member_bytes)
                yield member
            _check_end(tar)
    except (
        tarfile.TarError,
        EOFError,
        zlib.error,
        _IsalError,
        lzma.LZMAError,
        OSError,
        RecursionError,
    ) as exc:
        raise ArchiveError(_broken(archive, found, head, count, exc)) from None
    if count == 0:
        raise ArchiveError(f"{archive}: archive is empty (no file members; read as {_DESCRIBED[found]})")


def _check_end(tar: tarfile.TarFile) -> None:
    """Read what follows the end-of-archive marker to the stream's end: only zero padding may be there.

    Draining the stream also makes sure that the decompressor reaches and checks its own trailer (gzip's CRC-32
    and length) however much padding follows the marker.  Raises ``tarfile.ReadError`` for anything but zeros: a
    damaged block that looked like the marker, or a second archive appended to the first.
    """
    stream = tar.fileobj
    at = stream.tell()
    while chunk := stream.read(_READ_BLOCK):
        if chunk.count(0) != len(chunk):
            first = next(i for i, byte in enumerate(chunk) if byte)
            raise tarfile.ReadError(
                f"data after the end-of-archive marker, at byte {at + first} of the tar stream: "
                "a damaged block, or more members than the archive admits to"
            )
        at += len(chunk)


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo, max_member_bytes: int) -> Member:
    path = shorten(info.name)
    problem = member_problem(info, max_member_bytes)
    if problem:
        return Member(path, None, problem)
    handle = tar.extractfile(info)
    data = handle.read() if handle is not None else b""
    if len(data) != info.size:
        raise EOFError(f"member {path} ended after {len(data)} of {info.size} bytes")
    return Member(path, data)


def _broken(archive: str, found: str, head: bytes, count: int, exc: BaseException) -> str:
    """The words for an archive that could not be read to its end."""
    text = shorten(str(exc))
    if count == 0 and found == "tar" and isinstance(exc, tarfile.ReadError):
        return (
            f"{archive}: not a tar archive (neither plain nor gzip, bzip2 or xz compressed): "
            f"its first bytes are {head[:16].hex(' ')}"
        )
    if count == 0 and isinstance(exc, tarfile.ReadError) and "empty file" in text:
        return f"{archive}: archive is empty (the {_DESCRIBED[found]} stream holds no tar data)"
    if isinstance(exc, RecursionError):
        return f"{archive}: refused after {count} member(s): a chain of extended headers too long to follow"
    return (
        f"{archive}: archive is truncated or corrupt after {count} member(s) (read as {_DESCRIBED[found]}): "
        f"{type(exc).__name__}: {text}"
    )
