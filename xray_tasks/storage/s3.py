"""The ``s3://`` backend: boto3 with standard retries, timeouts and multipart transfers, any S3 API (AWS, MinIO, moto).

One client per set of :class:`S3Settings`, built on first use (boto3 is imported then, not with this module).
Every SDK call runs inside :func:`sdk_errors`, the one place that turns botocore's exceptions into ours: a missing
key is ``FileNotFoundError``, a failed precondition ``PreconditionFailed``, anything else a ``StorageError`` that
names the operation, the URI and the cause.  A single PUT (or a completed multipart upload) is atomic by the
service's own guarantee; conditional PUTs (``If-None-Match: *`` / ``If-Match: <etag>``) are atomic on the server.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from xray_tasks.errors import StorageError
from xray_tasks.storage.base import TEMP_MARKER, Backend, PreconditionFailed
from xray_tasks.storage.endpoints import endpoint_from, tfio_environment
from xray_tasks.storage.uris import split_s3

logger = logging.getLogger(__name__)

CONFLICT_RETRIES = 3
"""Retries of a conditional PUT that S3 answered with 409 (another conditional write on the key in flight)."""
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_PRECONDITION = frozenset({"412", "PreconditionFailed"})


class ConditionalConflict(StorageError):
    """S3 answered 409 ConditionalRequestConflict: another conditional write on the key is in flight; retry."""


@dataclass(frozen=True)
class S3Settings:
    """Everything a client is built from; read from an environment by :meth:`from_env`."""

    endpoint: str | None  # normalised endpoint override (MinIO, moto); None: AWS itself
    region: str  # AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1
    max_attempts: int  # XRAY_S3_MAX_ATTEMPTS: botocore "standard" retries, first attempt included
    connect_timeout: float  # XRAY_S3_CONNECT_TIMEOUT, seconds
    read_timeout: float  # XRAY_S3_READ_TIMEOUT, seconds
    # Explicit credentials (both key and secret given); None: boto3's own chain (environment, ~/.aws, roles).
    credentials: tuple[str, str, str | None] | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, explicit_credentials: bool = False) -> S3Settings:
        """Settings from ``env``; ``explicit_credentials`` takes the keys from it too instead of boto3's chain."""
        key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        return cls(
            endpoint=endpoint_from(env),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            max_attempts=int(env.get("XRAY_S3_MAX_ATTEMPTS", "5")),
            connect_timeout=float(env.get("XRAY_S3_CONNECT_TIMEOUT", "10")),
            read_timeout=float(env.get("XRAY_S3_READ_TIMEOUT", "120")),
            credentials=(key, secret, env.get("AWS_SESSION_TOKEN"))
            if explicit_credentials and key and secret
            else None,
        )


_client_lock = threading.Lock()


@functools.cache
def client_for(settings: S3Settings) -> Any:
    """The boto3 S3 client for ``settings`` (one per distinct settings, shared by threads)."""
    import boto3  # heavy: imported on the first S3 call, never by `import xray_tasks.storage`
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        s3={"addressing_style": "path"} if settings.endpoint else {},
    )
    key, secret, token = settings.credentials or (None, None, None)
    with _client_lock:  # creating clients from sessions is not thread-safe
        return boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint,
            region_name=settings.region,
            config=config,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token,
        )


def error_code(exc: Exception) -> str:
    """The S3 error code of an SDK exception (``"NoSuchKey"``, ``"412"``...), ``""`` when it carries none."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _sdk_exceptions() -> tuple[type[Exception], ...]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, Boto3Error)


@contextmanager
def sdk_errors(op: str, uri: str, *also: type[Exception]) -> Iterator[None]:
    """Run SDK calls for ``op`` on ``uri``, raising our errors for theirs (plus any ``also`` exception types).

    Raises:
        FileNotFoundError: no such key.
        PreconditionFailed: a conditional request's condition does not hold.
        ConditionalConflict: 409 on a conditional request.
        StorageError: anything else; the message names ``op``, ``uri`` and the cause, never a credential.
    """
    try:
        yield
    except (*_sdk_exceptions(), *also) as exc:
        code = error_code(exc)
        if code in _NOT_FOUND:
            raise FileNotFoundError(uri) from exc
        if code in _PRECONDITION:
            raise PreconditionFailed(f"{op} {uri}: precondition failed") from exc
        kind = ConditionalConflict if code == "ConditionalRequestConflict" else StorageError
        raise kind(f"{op} {uri}: {type(exc).__name__}: {exc}") from exc


def _dir_key(key: str) -> str:
    return key.rstrip("/") + "/" if key else ""


class S3Backend(Backend):
    """Objects in S3 buckets.

    Args:
        env: the environment to read the endpoint, region, limits and credentials from; ``None`` reads this
            process's environment at every call (so a changed environment takes effect) and leaves credentials
            to boto3's chain.
    """

    name = "s3"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = None if env is None else dict(env)

    def __repr__(self) -> str:  # never the environment: it may hold secrets
        return f"S3Backend({'explicit environment' if self._env is not None else 'process environment'})"

    def settings(self) -> S3Settings:
        if self._env is None:
            return S3Settings.from_env(os.environ)
        return S3Settings.from_env(self._env, explicit_credentials=True)

    def client(self) -> Any:
        return client_for(self.settings())

    def join(self, base: str, *parts: str) -> str:
        return "/".join([str(base).rstrip("/")] + [p.strip("/") for p in parts if p])

    # -- reads --------------------------------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        bucket, key = split_s3(uri)
        try:
            with sdk_errors("HEAD", uri):
                self.client().head_object(Bucket=bucket, Key=key)
        except FileNotFoundError:
            return False
        return True

    def read_bytes(self, uri: str) -> bytes:
        return self.read_tagged(uri)[0]

    def read_tagged(self, uri: str) -> tuple[bytes, str]:
        bucket, key = split_s3(uri)
        with sdk_errors("GET", uri):
            response = self.client().get_object(Bucket=bucket, Key=key)
            return response["Body"].read(), response["ETag"]

    @contextmanager
    def open_read(self, uri: str) -> Iterator[IO[bytes]]:
        bucket, key = split_s3(uri)
        with sdk_errors("GET", uri):
            body = self.client().get_object(Bucket=bucket, Key=key)["Body"]
        try:
            yield body
        finally:
            body.close()

    def get_file(self, uri: str, dest: Path) -> None:
        bucket, key = split_s3(uri)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with sdk_errors("download", uri):
                self.client().download_file(bucket, key, str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def _pages(self, prefix: str, **kwargs: str) -> Iterator[tuple[str, str, dict]]:
        bucket, key = split_s3(prefix)
        key = _dir_key(key)
        with sdk_errors("LIST", prefix):
            for page in (
                self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, **kwargs)
            ):
                yield bucket, key, page

    def list_files(self, prefix: str) -> list[str]:
        return sorted(
            f"s3://{bucket}/{obj['Key']}"
            for bucket, _, page in self._pages(prefix)
            for obj in page.get("Contents", [])
        )

    def list_level(self, prefix: str) -> tuple[list[str], list[str]]:
        files, dirs = [], []
        for _, key, page in self._pages(prefix, Delimiter="/"):
            files.extend(obj["Key"][len(key) :] for obj in page.get("Contents", []))
            dirs.extend(p["Prefix"][len(key) :].rstrip("/") for p in page.get("CommonPrefixes", []))
        return [f for f in files if f], [d for d in dirs if d]

    # -- writes -------------------------------------------------------------------------------------------------
    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3(uri)
        with sdk_errors("PUT", uri):
            self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def put_file(self, source: Path, uri: str) -> None:
        from boto3.s3.transfer import TransferConfig

        # The package's constant is the one knob (read at call time: tests lower it to S3's minimum part size).
        from xray_tasks import storage

        bucket, key = split_s3(uri)
        part = storage.MULTIPART_THRESHOLD
        with sdk_errors("upload to", uri, OSError):
            self.client().upload_file(
                str(source),
                bucket,
                key,
                Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part),
            )

    def delete(self, uri: str) -> None:
        bucket, key = split_s3(uri)
        with sdk_errors("DELETE", uri):
            self.client().delete_object(Bucket=bucket, Key=key)

    def delete_tree(self, prefix: str) -> None:
        for uri in self.list_files(prefix):
            self.delete(uri)

    # -- conditional writes -------------------------------------------------------------------------------------
    def write_if(self, uri: str, data: bytes, *, absent: bool, tag: str | None) -> str:
        bucket, key = split_s3(uri)
        condition = {"IfNoneMatch": "*"} if absent else {"IfMatch": tag}
        what = "already exists" if absent else f"no longer has tag {tag}"
        attempt = 0
        while True:
            try:
                with sdk_errors("conditional PUT", uri):
                    return self.client().put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"]
            except PreconditionFailed as exc:
                raise PreconditionFailed(f"conditional write {uri}: object {what}") from exc.__cause__
            except FileNotFoundError as exc:
                if absent:
                    raise StorageError(f"conditional PUT {uri}: {exc.__cause__}") from exc.__cause__
                raise PreconditionFailed(
                    f"conditional write {uri}: object {what}"
                ) from exc.__cause__  # deleted
            except ConditionalConflict:
                # AWS says to retry a 409: by then the conflicting write has finished, one way or the other.
                if attempt >= CONFLICT_RETRIES:
                    raise
                attempt += 1
                time.sleep(0.2 * attempt)

    def prepare_tensorflow(self) -> None:
        env = tfio_environment(os.environ if self._env is None else self._env)
        os.environ.update({k: v for k, v in env.items() if k not in os.environ})
        import tensorflow_io  # noqa: F401  (importing registers the S3 file system with TensorFlow)
