"""Conditional writes: the primitive behind create-once objects and compare-and-swap pointers.

Each backend implements the check-and-write atomically (S3: a conditional PUT, ``If-None-Match: *`` /
``If-Match: <etag>``; a local path: check and rename under an exclusive ``flock`` on the parent directory).  What
is the same for every backend lives here: argument checks and recognising a retried write that had already landed.
"""

from __future__ import annotations

import logging

from xray_tasks.storage import backend_for
from xray_tasks.storage.base import PreconditionFailed

logger = logging.getLogger(__name__)

__all__ = ["PreconditionFailed", "read_bytes_tagged", "write_bytes_if"]


def read_bytes_tagged(uri: str) -> tuple[bytes, str]:
    """The bytes of ``uri`` and an opaque tag of this state (S3 ETag; locally an MD5 of the content).

    Raises:
        FileNotFoundError: nothing at ``uri``.
    """
    return backend_for(uri).read_tagged(uri)


def write_bytes_if(uri: str, data: bytes, *, absent: bool = False, tag: str | None = None) -> str:
    """Write ``data`` only if ``uri`` does not exist (``absent=True``) or still carries ``tag``; returns the new tag.

    A write whose first attempt landed but whose answer was lost (so the SDK retried and got "precondition failed")
    still counts as done when the object now holds exactly ``data``: callers make payloads unique (a nonce) so
    that this means "mine".

    Raises:
        PreconditionFailed: the object exists (``absent``) or no longer carries ``tag``.
        ValueError: neither or both conditions given.
    """
    if absent == (tag is not None):
        raise ValueError(
            f"write_bytes_if needs exactly one of absent=True or tag=..., got absent={absent}, tag={tag!r}"
        )
    backend = backend_for(uri)
    try:
        return backend.write_if(uri, data, absent=absent, tag=tag)
    except PreconditionFailed:
        try:
            current, current_tag = backend.read_tagged(uri)
        except FileNotFoundError:
            raise PreconditionFailed(
                f"conditional write {uri}: precondition failed and the object is absent"
            ) from None
        if current == data:
            logger.info("%s: a retried conditional write had already landed", uri)
            return current_tag
        raise
