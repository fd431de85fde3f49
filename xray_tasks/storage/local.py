"""The local file-system backend: plain paths and ``file://`` URIs.

Every write goes to an fsync'd temporary file in the target's directory and is then renamed (or, for a create-only
write, hard-linked) into place, so a reader sees the old file, the new one, or none, never a partial one.
Conditional writes check and rename under an exclusive ``flock`` on the parent directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from xray_tasks.storage.base import TEMP_MARKER, Backend, PreconditionFailed
from xray_tasks.storage.uris import local_path

logger = logging.getLogger(__name__)


def temp_name(path: Path) -> Path:
    """A unique temporary name beside ``path`` (same file system: a rename or link makes it final)."""
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_temp_beside(path: Path, data: bytes) -> Path:
    """``data`` in a fsync'd temporary file next to ``path``; the caller renames or links it."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def content_tag(data: bytes) -> str:
    """The tag of a local file's state: an MD5 of its bytes (what S3 uses as the ETag of a single PUT)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on a directory: released by the kernel even when the holder is SIGKILLed."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _existing_file(uri: str) -> Path:
    path = local_path(uri)
    if not path.is_file():
        raise FileNotFoundError(uri)
    return path


class LocalBackend(Backend):
    """Files under a local path."""

    name = "local"

    def join(self, base: str, *parts: str) -> str:
        return str(local_path(base).joinpath(*parts))

    # -- reads --------------------------------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def read_bytes(self, uri: str) -> bytes:
        return local_path(uri).read_bytes()

    @contextmanager
    def open_read(self, uri: str) -> Iterator[IO[bytes]]:
        with open(local_path(uri), "rb") as fh:
            yield fh

    open_seekable = open_read  # a local file seeks already

    # A local file is its own local copy: nothing is copied or cached.
    @contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        yield _existing_file(uri)

    def cached_copy(self, uri: str, cache_root: Path) -> Path:
        return _existing_file(uri)

    def get_file(self, uri: str, dest: Path) -> None:
        self.put_file(local_path(uri), str(dest))

    def list_files(self, prefix: str) -> list[str]:
        root = local_path(prefix)
        if not root.exists():
            return []
        return sorted(str(p) for p in root.rglob("*") if p.is_file() and TEMP_MARKER not in p.name)

    def list_level(self, prefix: str) -> tuple[list[str], list[str]]:
        root = local_path(prefix)
        if not root.is_dir():
            return [], []
        entries = [p for p in root.iterdir() if TEMP_MARKER not in p.name]
        return [p.name for p in entries if p.is_file()], [p.name for p in entries if p.is_dir()]

    # -- writes -------------------------------------------------------------------------------------------------
    def write_bytes(self, uri: str, data: bytes) -> None:
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = write_temp_beside(path, data)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, source: Path, uri: str) -> None:
        path = local_path(uri)
        if Path(source).resolve() == path.resolve():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(path)
        try:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def publish_file(self, staged: Path, uri: str) -> None:
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, path)  # same file system when staged under staging_dir(): atomic, no copy

    def staging_dir(self, base: str, name: str) -> Path:
        root = local_path(base)
        own = re.compile(re.escape(name) + r"\.[0-9a-f]{8}")  # this name's folders only, not `name.v2`'s
        for stale in root.glob("*") if root.is_dir() else ():  # left by a crashed attempt
            if own.fullmatch(stale.name):
                shutil.rmtree(stale, ignore_errors=True)
        path = root / f"{name}.{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def delete(self, uri: str) -> None:
        local_path(uri).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(local_path(prefix), ignore_errors=True)

    # -- conditional writes -------------------------------------------------------------------------------------
    def read_tagged(self, uri: str) -> tuple[bytes, str]:
        data = local_path(uri).read_bytes()
        return data, content_tag(data)

    def write_if(self, uri: str, data: bytes, *, absent: bool, tag: str | None) -> str:
        path = local_path(uri)
        with _dir_lock(path.parent):
            if absent and path.exists():
                raise PreconditionFailed(f"conditional write {uri}: object already exists")
            if not absent:
                try:
                    current = path.read_bytes()
                except FileNotFoundError:
                    raise PreconditionFailed(
                        f"conditional write {uri}: object is absent, expected tag {tag}"
                    ) from None
                if content_tag(current) != tag:
                    raise PreconditionFailed(f"conditional write {uri}: object no longer has tag {tag}")
            tmp = write_temp_beside(path, data)
            try:
                if absent:
                    os.link(tmp, path)  # fails if the name exists, even for a writer that ignores the lock
                else:
                    os.replace(tmp, path)
            except FileExistsError:
                raise PreconditionFailed(f"conditional write {uri}: object already exists") from None
            finally:
                tmp.unlink(missing_ok=True)
        return content_tag(data)
