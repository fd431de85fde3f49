"""The small interface every storage backend implements, and the operations built on it once for all of them.

A backend serves one URI scheme (a local path, ``s3://``).  ``xray_tasks.storage.backend_for`` picks it once
per scheme; callers use the module-level functions of ``xray_tasks.storage`` and never branch on the scheme.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from xray_tasks.errors import StorageError
from xray_tasks.storage.uris import basename

TEMP_MARKER = ".tmp-"
"""Part of every temporary name a write uses before its rename; listings skip such names."""


class PreconditionFailed(StorageError):
    """A conditional write found the object in another state than it required (already there / changed)."""


class Backend(ABC):
    """Storage for one URI scheme.  Writes are atomic: a reader sees the whole object under its name or nothing."""

    name: str
    """The scheme this backend serves, as :func:`xray_tasks.storage.uris.scheme_of` names it."""

    # -- addressing ---------------------------------------------------------------------------------------------
    @abstractmethod
    def join(self, base: str, *parts: str) -> str:
        """``base`` with ``parts`` appended, in this scheme's separator."""

    # -- reads --------------------------------------------------------------------------------------------------
    @abstractmethod
    def exists(self, uri: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, uri: str) -> bytes:
        """Raises FileNotFoundError: nothing at ``uri``."""

    @abstractmethod
    def open_read(self, uri: str) -> Any:
        """A context manager over a forward-only binary stream of ``uri`` (nothing is staged on disk)."""

    @abstractmethod
    def get_file(self, uri: str, dest: Path) -> None:
        """Copy ``uri`` to the local file ``dest``, written atomically.  Raises FileNotFoundError."""

    @abstractmethod
    def list_files(self, prefix: str) -> list[str]:
        """Every file under ``prefix``, recursively, as sorted URIs (temporary names excluded)."""

    @abstractmethod
    def list_level(self, prefix: str) -> tuple[list[str], list[str]]:
        """Names of the files and of the sub-directories directly under ``prefix`` (unsorted)."""

    # -- writes -------------------------------------------------------------------------------------------------
    @abstractmethod
    def write_bytes(self, uri: str, data: bytes) -> None: ...

    @abstractmethod
    def put_file(self, source: Path, uri: str) -> None:
        """Copy the local file ``source`` to ``uri``; ``source`` is left in place."""

    @abstractmethod
    def delete(self, uri: str) -> None:
        """Remove one file/object; absent is fine."""

    @abstractmethod
    def delete_tree(self, prefix: str) -> None:
        """Remove everything under ``prefix``; absent is fine."""

    # -- conditional writes (the primitive behind create-once objects and compare-and-swap pointers) -----------
    @abstractmethod
    def read_tagged(self, uri: str) -> tuple[bytes, str]:
        """The bytes of ``uri`` and an opaque tag of this state.  Raises FileNotFoundError."""

    @abstractmethod
    def write_if(self, uri: str, data: bytes, *, absent: bool, tag: str | None) -> str:
        """Write only if ``uri`` is absent (``absent``) or still carries ``tag``; returns the new tag.

        Raises:
            PreconditionFailed: the condition does not hold (the message says which).
        """

    # -- built on the primitives above; a backend overrides them where it can do better -------------------------
    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    @contextmanager
    def open_seekable(self, uri: str) -> Iterator[IO[bytes]]:
        """A seekable binary file over ``uri`` (for formats read from the end, like Parquet's footer)."""
        yield io.BytesIO(self.read_bytes(uri))

    @contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        """A local path holding the bytes of ``uri`` for the duration of the block."""
        with tempfile.TemporaryDirectory(prefix="xray-") as tmp:
            path = Path(tmp) / basename(uri)
            self.get_file(uri, path)
            yield path

    def cached_copy(self, uri: str, cache_root: Path) -> Path:
        """A local file with the bytes of ``uri``, downloaded once into ``cache_root`` and reused afterwards.

        Raises:
            FileNotFoundError: nothing at ``uri``.
        """
        path = Path(cache_root) / hashlib.sha256(uri.encode()).hexdigest()[:16] / basename(uri)
        if not path.is_file():
            self.get_file(uri, path)
        return path

    def publish_file(self, staged: Path, uri: str) -> None:
        """Put a staged local file under its final name ``uri`` (copy up; a local backend moves it instead)."""
        self.put_file(staged, uri)

    def staging_dir(self, base: str, name: str) -> Path:
        """A fresh local directory for files about to be published under URIs of this backend.

        Remote backends copy on publish, so any temporary directory will do; a local backend puts it at ``base``
        so that :meth:`publish_file` is a rename on the same file system.
        """
        return Path(tempfile.mkdtemp(prefix=f"xray-{name}-"))

    def prepare_tensorflow(self) -> None:
        """Make this backend's URIs readable by ``tf.io``/``tf.data`` in this process (local paths always are)."""
