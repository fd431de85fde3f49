"""What a storage URI says, read without touching any backend: its scheme, bucket and key, or local path."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

SCHEMES = ("local", "s3")
"""The backends a URI can name: a plain path or ``file://`` (local) and ``s3://``."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def scheme_of(uri: str) -> str:
    """``"s3"`` for ``s3://`` URIs, ``"local"`` for plain paths and ``file://`` URIs.

    Raises:
        ValueError: another scheme (``gs://``, ``http://``...), which no backend serves.
    """
    match = _SCHEME.match(str(uri))
    if match is None or match.group(1) == "file":
        return "local"
    if match.group(1) == "s3":
        return "s3"
    raise ValueError(f"unsupported storage URI {str(uri)!r}: expected a local path, file:// or s3://")


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def local_path(uri: str) -> Path:
    """The file-system path of a local URI (plain path or ``file://``)."""
    uri = str(uri)
    return Path(urlparse(uri).path) if uri.startswith("file://") else Path(uri)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]
