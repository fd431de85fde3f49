"""Local paths and ``s3://`` URIs behind one small set of functions.

Each function hands its URI to :func:`backend_for`, which picks the backend once per scheme (``local.py``,
``s3.py``, both implementing ``base.Backend``); callers never branch on the scheme.  Every write is atomic: a
reader sees the whole object under its final name or nothing.  Locally that is an fsync'd temporary file in the
same directory, renamed; on S3 a single PUT (or a completed multipart upload, above :data:`MULTIPART_THRESHOLD`).

S3 goes through boto3 with standard retries and timeouts.  Credentials come only from the environment or the
standard AWS configuration; an endpoint override (MinIO, moto, any S3 API) is read from ``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL`` or tensorflow-io's ``S3_ENDPOINT``, in that order (``endpoints.py``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from xray_tasks.errors import StorageError
from xray_tasks.storage.base import Backend, PreconditionFailed
from xray_tasks.storage.endpoints import endpoint_from, normalize_endpoint, tfio_environment
from xray_tasks.storage.uris import basename, is_s3, local_path, scheme_of, split_s3

__all__ = [
    "MULTIPART_THRESHOLD",
    "Backend",
    "PreconditionFailed",
    "StorageError",
    "backend_for",
    "basename",
    "cached_copy",
    "create_backend",
    "delete",
    "delete_tree",
    "endpoint_from",
    "exists",
    "get_file",
    "is_s3",
    "join",
    "list_dirs",
    "list_files",
    "list_level",
    "listdir",
    "local_copy",
    "local_path",
    "normalize_endpoint",
    "open_read",
    "open_seekable",
    "prepare_tensorflow",
    "publish_file",
    "put_file",
    "read_bytes",
    "read_json",
    "read_parquet_schema",
    "read_text",
    "s3_client",
    "scheme_of",
    "split_s3",
    "staging_dir",
    "tfio_environment",
    "write_bytes",
    "write_json",
    "write_text",
]

MULTIPART_THRESHOLD = 64 * 1024 * 1024
"""S3 uploads above this size go up in parts of this size."""


def create_backend(scheme: str, env: Mapping[str, str] | None = None) -> Backend:
    """A new backend for ``scheme`` (``"local"`` or ``"s3"``); ``env`` configures S3 instead of our environment.

    Raises:
        ValueError: an unknown scheme.
    """
    if scheme == "local":
        from xray_tasks.storage.local import LocalBackend

        return LocalBackend()
    if scheme == "s3":
        # boto3 itself is imported by the backend on its first call, not here.
        from xray_tasks.storage.s3 import S3Backend

        return S3Backend(env)
    raise ValueError(f"unknown storage backend {scheme!r}; allowed: 'local', 's3'")


@functools.cache
def _shared(scheme: str) -> Backend:
    return create_backend(scheme)


def backend_for(uri: str, env: Mapping[str, str] | None = None) -> Backend:
    """The backend that serves ``uri``: one shared instance per scheme, or a new one configured from ``env``.

    ``env`` (e.g. ``runner.connection_env(...)`` of an object-storage connection) gives S3 its endpoint, region
    and credentials without putting them into this process's environment; local paths ignore it.

    Raises:
        ValueError: a scheme no backend serves.
    """
    scheme = scheme_of(uri)
    return _shared(scheme) if env is None or scheme == "local" else create_backend(scheme, env)


def s3_client() -> Any:
    """The boto3 S3 client for the current environment (cached per endpoint, region and limits)."""
    return _shared("s3").client()


def join(base: str, *parts: str) -> str:
    """Join URI parts with ``/`` (S3) or the OS separator (local)."""
    return backend_for(base).join(str(base), *parts)


# -- reads ----------------------------------------------------------------------------------------------------------
def exists(uri: str) -> bool:
    return backend_for(uri).exists(uri)


def read_bytes(uri: str) -> bytes:
    """Raises FileNotFoundError: nothing at ``uri``; StorageError: the store refused."""
    return backend_for(uri).read_bytes(uri)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def open_read(uri: str) -> AbstractContextManager[IO[bytes]]:
    """A forward-only binary stream over ``uri`` (for archives: nothing is staged on disk)."""
    return backend_for(uri).open_read(uri)


def open_seekable(uri: str) -> AbstractContextManager[IO[bytes]]:
    """A seekable binary file over ``uri``: the file itself when local, its bytes in memory for S3."""
    return backend_for(uri).open_seekable(uri)


def read_parquet_schema(uri: str) -> Any:
    """The ``pyarrow.Schema`` (with its metadata) of a Parquet file; locally only the footer is read."""
    import pyarrow.parquet as pq  # heavy: only callers that read Parquet pay for it

    with open_seekable(uri) as fh:
        return pq.read_schema(fh)


def get_file(uri: str, dest: str | os.PathLike) -> None:
    """Copy ``uri`` to a local file (written atomically).  Raises FileNotFoundError: nothing at ``uri``."""
    backend_for(uri).get_file(uri, Path(dest))


def local_copy(uri: str) -> AbstractContextManager[Path]:
    """A local path holding the bytes of ``uri``: the file itself when local, a temporary download for S3."""
    return backend_for(uri).local_copy(uri)


def cached_copy(uri: str, cache_root: str | os.PathLike) -> Path:
    """A local file with the bytes of ``uri``: the file itself when local, else downloaded once under
    ``cache_root`` (one folder per URI) and reused by later calls.

    Raises:
        FileNotFoundError: nothing at ``uri``.
    """
    return backend_for(uri).cached_copy(uri, Path(cache_root))


def list_files(prefix: str) -> list[str]:
    """All files under a directory / key prefix, recursively, as sorted URIs (temporary files excluded)."""
    return backend_for(prefix).list_files(prefix)


def list_level(prefix: str) -> tuple[list[str], list[str]]:
    """Sorted names of the files and of the sub-directories (S3: common prefixes) directly under ``prefix``."""
    files, dirs = backend_for(prefix).list_level(prefix)
    return sorted(files), sorted(dirs)


def listdir(prefix: str) -> list[str]:
    """Names of the files directly under a directory / key prefix (not recursive), sorted."""
    return list_level(prefix)[0]


def list_dirs(prefix: str) -> list[str]:
    """Names of the sub-directories (S3: common prefixes) directly under ``prefix``, sorted."""
    return list_level(prefix)[1]


# -- writes ---------------------------------------------------------------------------------------------------------
def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` so that ``uri`` is either absent/old or complete, never partial."""
    backend_for(uri).write_bytes(uri, data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj: Any) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def put_file(source: str | os.PathLike, uri: str) -> None:
    """Copy a local file to ``uri`` atomically (multipart above :data:`MULTIPART_THRESHOLD` on S3)."""
    backend_for(uri).put_file(Path(source), uri)


def staging_dir(base: str, name: str) -> Path:
    """A fresh local directory to stage files that :func:`publish_file` will put under URIs near ``base``.

    Locally it is ``base/name.<random>`` (same file system, so publishing is a rename), and ``name.*`` folders
    left there by a crashed attempt are removed first; for S3 it is a new temporary directory.  The caller
    removes it when done.
    """
    return backend_for(base).staging_dir(base, name)


def publish_file(staged: str | os.PathLike, uri: str) -> None:
    """Put a staged local file under its final name: moved locally (atomic rename), uploaded on S3."""
    backend_for(uri).publish_file(Path(staged), uri)


def delete(uri: str) -> None:
    """Remove one file/object; absent is fine."""
    backend_for(uri).delete(uri)


def delete_tree(prefix: str) -> None:
    """Remove everything under a directory / key prefix; absent is fine."""
    backend_for(prefix).delete_tree(prefix)


# -- TensorFlow -----------------------------------------------------------------------------------------------------
def prepare_tensorflow(uris: Iterable[str]) -> None:
    """Make every URI in ``uris`` readable by ``tf.io``/``tf.data`` in this process.

    For ``s3://`` that registers tensorflow-io's file system, with its environment derived from ours
    (:func:`tfio_environment`); local paths need nothing.
    """
    for scheme in sorted({scheme_of(u) for u in uris}):
        _shared(scheme).prepare_tensorflow()
