"""Conditional writes: the primitive behind create-once objects and compare-and-swap pointers.

On S3 a conditional PUT (``If-None-Match: *`` / ``If-Match: <etag>``) is atomic on the server; on a local path
the check and the rename happen under an exclusive ``flock`` on the parent directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xray_tasks.storage import (
    StorageError,
    is_not_found,
    is_s3,
    local_path,
    s3_client,
    s3_error,
    s3_errors,
    split_s3,
    write_temp_beside,
)

logger = logging.getLogger(__name__)


class PreconditionFailed(StorageError):
    """A conditional write found the object in another state than it required (already there / changed)."""


_CONFLICT_RETRIES = 3


def _content_tag(data: bytes) -> str:
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


def read_bytes_tagged(uri: str) -> tuple[bytes, str]:
    """The bytes of ``uri`` and an opaque tag of this state (S3 ETag; locally an MD5 of the content).

    Raises:
        FileNotFoundError: nothing at ``uri``.
    """
    if not is_s3(uri):
        data = local_path(uri).read_bytes()
        return data, _content_tag(data)
    bucket, key = split_s3(uri)
    try:
        response = s3_client().get_object(Bucket=bucket, Key=key)
        return response["Body"].read(), response["ETag"]
    except s3_errors() as exc:
        if is_not_found(exc):
            raise FileNotFoundError(uri) from exc
        raise s3_error("GET", uri, exc) from exc


def write_bytes_if(uri: str, data: bytes, *, absent: bool = False, tag: str | None = None) -> str:
    """Write ``data`` only if ``uri`` does not exist (``absent=True``) or still carries ``tag``; returns the new tag.

    On S3 this is a conditional PUT (``If-None-Match: *`` / ``If-Match: <etag>``), atomic on the server; locally the
    check and the rename happen under an exclusive lock on the parent directory.  A write whose first attempt
    landed but whose answer was lost (so the SDK retried and got "precondition failed") still counts as done when
    the object now holds exactly ``data``: callers make payloads unique (a nonce) so that this means "mine".

    Raises:
        PreconditionFailed: the object exists (``absent``) or no longer carries ``tag``.
        ValueError: neither or both conditions given.
    """
    if absent == (tag is not None):
        raise ValueError(f"write_bytes_if needs exactly one of absent=True or tag=..., got absent={absent}, tag={tag!r}")
    try:
        return _s3_put_if(uri, data, absent, tag) if is_s3(uri) else _local_put_if(uri, data, absent, tag)
    except PreconditionFailed:
        try:
            current, current_tag = read_bytes_tagged(uri)
        except FileNotFoundError:
            raise PreconditionFailed(f"conditional write {uri}: precondition failed and the object is absent") from None
        if current == data:
            logger.info("%s: a retried conditional write had already landed", uri)
            return current_tag
        raise


def _s3_put_if(uri: str, data: bytes, absent: bool, tag: str | None) -> str:
    bucket, key = split_s3(uri)
    condition = {"IfNoneMatch": "*"} if absent else {"IfMatch": tag}
    attempt = 0
    while True:
        try:
            return s3_client().put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"]
        except s3_errors() as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412") or (tag is not None and is_not_found(exc)):
                what = "already exists" if absent else f"no longer has tag {tag}"
                raise PreconditionFailed(f"conditional write {uri}: object {what}") from exc
            # S3 answers 409 while another conditional write on the key is in flight: AWS says to retry.
            if code != "ConditionalRequestConflict" or attempt >= _CONFLICT_RETRIES:
                raise s3_error("conditional PUT", uri, exc) from exc
            attempt += 1
            time.sleep(0.2 * attempt)


def _local_put_if(uri: str, data: bytes, absent: bool, tag: str | None) -> str:
    path = local_path(uri)
    with _dir_lock(path.parent):
        if absent and path.exists():
            raise PreconditionFailed(f"conditional write {uri}: object already exists")
        if not absent:
            try:
                current = path.read_bytes()
            except FileNotFoundError:
                raise PreconditionFailed(f"conditional write {uri}: object is absent, expected tag {tag}") from None
            if _content_tag(current) != tag:
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
    return _content_tag(data)
