"""Stream the members of an NIH ``images_NNN.tar.gz`` without extracting anything to disk.

Nothing from an archive is ever written as a file, so a hostile member path cannot escape the output root; it is
still reported.  Every member that is not a plain ``.png`` file of acceptable size comes back with a reason
instead of bytes.  A truncated or corrupt compressed stream raises :class:`ArchiveError`.
"""

from __future__ import annotations

import logging
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from xray_tasks.errors import BadInput

logger = logging.getLogger(__name__)

_READ_BLOCK = 1024 * 1024


class ArchiveError(BadInput):
    """The archive itself is unreadable (truncated, not gzip, not tar); the message names it."""


@dataclass(frozen=True)
class Member:
    path: str
    """The member's path inside the archive, as stored."""
    data: bytes | None
    """Its bytes when it is a usable regular file, else ``None``."""
    problem: tuple[str, str] | None = None
    """``(kind, reason)`` when it was not read, for the quarantine report."""

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


def member_problem(info: tarfile.TarInfo, max_bytes: int) -> tuple[str, str] | None:
    """``(kind, reason)`` when a member cannot be used, ``None`` when it is a plain PNG file within limits."""
    parts = PurePosixPath(info.name).parts
    if info.name.startswith("/") or ".." in parts:
        return "unsafe_path", f"unsafe member path {info.name!r} (absolute or containing '..')"
    if info.issym() or info.islnk():
        return (
            "link_member",
            f"link member ({'symlink' if info.issym() else 'hard link'} to {info.linkname!r})",
        )
    if info.ischr() or info.isblk() or info.isfifo():
        return "device_member", "device or FIFO member"
    if not info.isfile():
        return "not_regular_file", f"not a regular file (tar type {info.type!r})"
    if info.size > max_bytes:
        return "member_too_large", f"member too large ({info.size} bytes, limit {max_bytes})"
    if not info.name.lower().endswith(".png"):
        return "non_image", "not a PNG member (name does not end in .png)"
    return None


def iter_members(fileobj: IO[bytes], archive: str, max_member_bytes: int) -> Iterator[Member]:
    """Yield every non-directory member in stream order; raise :class:`ArchiveError` if the stream breaks."""
    count = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|gz", bufsize=_READ_BLOCK) as tar:
            for info in tar:
                if info.isdir():
                    continue
                count += 1
                problem = member_problem(info, max_member_bytes)
                if problem:
                    yield Member(info.name, None, problem)
                    continue
                handle = tar.extractfile(info)
                data = handle.read() if handle is not None else b""
                if len(data) != info.size:
                    raise EOFError(f"member {info.name} ended after {len(data)} of {info.size} bytes")
                yield Member(info.name, data)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveError(
            f"{archive}: archive is truncated or corrupt after {count} member(s): {type(exc).__name__}: {exc}"
        ) from exc
