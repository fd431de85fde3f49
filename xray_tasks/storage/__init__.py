"""Local paths and ``s3://`` URIs behind one small set of functions.

Every write is atomic: a reader sees the whole object under its final name or nothing.  Locally that is a
temporary file in the same directory, fsync'd and renamed; on S3 a single PUT (or a completed multipart upload)
is atomic by the service's own guarantee.

S3 goes through boto3 with standard retries, timeouts and multipart transfers.  Credentials come only from the
environment or the standard AWS configuration; an endpoint override (MinIO, moto, any S3 API) is read from
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or tensorflow-io's ``S3_ENDPOINT``, in that order.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 64 * 1024 * 1024


class StorageError(RuntimeError):
    """An object store or file system refused an operation; the message names the URI and the cause."""


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


def join(base: str, *parts: str) -> str:
    """Join URI parts with ``/`` (S3) or the OS separator (local)."""
    base = str(base)
    if is_s3(base):
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts if p])
    return str(local_path(base).joinpath(*parts))


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def s3_endpoint() -> str | None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT"):
        value = os.environ.get(name)
        if value:
            return value if "://" in value else f"http://{value}"
    return None


_client_lock = threading.Lock()


@functools.cache
def _cached_client(endpoint: str | None, region: str | None, max_attempts: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=float(os.environ.get("XRAY_S3_CONNECT_TIMEOUT", "10")),
        read_timeout=float(os.environ.get("XRAY_S3_READ_TIMEOUT", "120")),
        s3={"addressing_style": "path"} if endpoint else {},
    )
    with _client_lock:
        return boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=region or "us-east-1", config=config
        )


def s3_client() -> Any:
    """A boto3 S3 client for the current environment (cached per endpoint/region)."""
    return _cached_client(
        s3_endpoint(),
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        int(os.environ.get("XRAY_S3_MAX_ATTEMPTS", "5")),
    )


def s3_error(op: str, uri: str, exc: Exception) -> StorageError:
    return StorageError(f"{op} {uri}: {type(exc).__name__}: {exc}")


def s3_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound")


def exists(uri: str) -> bool:
    if not is_s3(uri):
        return local_path(uri).exists()
    bucket, key = split_s3(uri)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except s3_errors() as exc:
        if is_not_found(exc):
            return False
        raise s3_error("HEAD", uri, exc) from exc


def read_bytes(uri: str) -> bytes:
    if not is_s3(uri):
        return local_path(uri).read_bytes()
    bucket, key = split_s3(uri)
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3_errors() as exc:
        if is_not_found(exc):
            raise FileNotFoundError(uri) from exc
        raise s3_error("GET", uri, exc) from exc


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` so that ``uri`` is either absent/old or complete, never partial."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        except s3_errors() as exc:
            raise s3_error("PUT", uri, exc) from exc
        return
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temp_beside(path, data)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_temp_beside(path: Path, data: bytes) -> Path:
    """``data`` in a fsync'd temporary file next to ``path`` (same file system: a rename or link makes it final).

    The temporary name contains ``.tmp-``, which every listing here skips.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj: Any) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def put_file(source: str | os.PathLike, uri: str) -> None:
    """Copy a local file to ``uri`` atomically (multipart above 64 MiB on S3)."""
    if is_s3(uri):
        from boto3.s3.transfer import TransferConfig

        bucket, key = split_s3(uri)
        try:
            s3_client().upload_file(
                str(source), bucket, key,
                Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD),
            )
        except (*s3_errors(), OSError) as exc:
            raise s3_error("upload to", uri, exc) from exc
        return
    path = local_path(uri)
    if Path(source).resolve() == path.resolve():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def get_file(uri: str, dest: str | os.PathLike) -> None:
    """Copy ``uri`` to a local file (written atomically)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not is_s3(uri):
        put_file(local_path(uri), str(dest))
        return
    bucket, key = split_s3(uri)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        s3_client().download_file(bucket, key, str(tmp))
        os.replace(tmp, dest)
    except s3_errors() as exc:
        if is_not_found(exc):
            raise FileNotFoundError(uri) from exc
        raise s3_error("download", uri, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def open_read(uri: str) -> Iterator[IO[bytes]]:
    """A forward-only binary stream over ``uri`` (for archives: nothing is staged on disk)."""
    if not is_s3(uri):
        with open(local_path(uri), "rb") as fh:
            yield fh
        return
    bucket, key = split_s3(uri)
    try:
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    except s3_errors() as exc:
        if is_not_found(exc):
            raise FileNotFoundError(uri) from exc
        raise s3_error("GET", uri, exc) from exc
    try:
        yield body
    finally:
        body.close()


@contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local path holding the bytes of ``uri``: the file itself when local, a temporary download for S3."""
    if not is_s3(uri):
        yield local_path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="xray-") as tmp:
        path = Path(tmp) / basename(uri)
        get_file(uri, path)
        yield path


def list_files(prefix: str) -> list[str]:
    """All files under a directory / key prefix, recursively, as sorted URIs (temporary files excluded)."""
    if not is_s3(prefix):
        root = local_path(prefix)
        if not root.exists():
            return []
        return sorted(
            str(p) for p in root.rglob("*") if p.is_file() and ".tmp-" not in p.name
        )
    bucket, key = split_s3(prefix)
    key = key.rstrip("/") + "/" if key else ""
    out = []
    try:
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            out.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
    except s3_errors() as exc:
        raise s3_error("LIST", prefix, exc) from exc
    return sorted(out)


def _list_level(prefix: str) -> tuple[list[str], list[str]]:
    """Names of the files and of the sub-directories (S3: common prefixes) directly under ``prefix``."""
    if not is_s3(prefix):
        root = local_path(prefix)
        if not root.is_dir():
            return [], []
        entries = [p for p in root.iterdir() if ".tmp-" not in p.name]
        return [p.name for p in entries if p.is_file()], [p.name for p in entries if p.is_dir()]
    bucket, key = split_s3(prefix)
    key = key.rstrip("/") + "/" if key else ""
    files, dirs = [], []
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, Delimiter="/")
        for page in pages:
            files.extend(obj["Key"][len(key):] for obj in page.get("Contents", []))
            dirs.extend(p["Prefix"][len(key):].rstrip("/") for p in page.get("CommonPrefixes", []))
    except s3_errors() as exc:
        raise s3_error("LIST", prefix, exc) from exc
    return [f for f in files if f], [d for d in dirs if d]


def listdir(prefix: str) -> list[str]:
    """Names of the files directly under a directory / key prefix (not recursive), sorted."""
    return sorted(_list_level(prefix)[0])


def list_dirs(prefix: str) -> list[str]:
    """Names of the sub-directories (S3: common prefixes) directly under ``prefix``, sorted."""
    return sorted(_list_level(prefix)[1])


def delete(uri: str) -> None:
    """Remove one file/object; absent is fine."""
    if not is_s3(uri):
        local_path(uri).unlink(missing_ok=True)
        return
    bucket, key = split_s3(uri)
    try:
        s3_client().delete_object(Bucket=bucket, Key=key)
    except s3_errors() as exc:
        raise s3_error("DELETE", uri, exc) from exc


def delete_tree(prefix: str) -> None:
    """Remove everything under a directory / key prefix; absent is fine."""
    if not is_s3(prefix):
        shutil.rmtree(local_path(prefix), ignore_errors=True)
        return
    for uri in list_files(prefix):
        delete(uri)


def tfio_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` with tensorflow-io's ``S3_ENDPOINT`` set from the boto3-style endpoint variables."""
    env = dict(os.environ if env is None else env)
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or env.get("S3_ENDPOINT")
    if endpoint:
        env.setdefault("S3_ENDPOINT", endpoint if "://" in endpoint else f"http://{endpoint}")
        env.setdefault("S3_VERIFY_SSL", "0" if endpoint.startswith("http://") else "1")
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    return env
