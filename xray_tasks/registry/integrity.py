"""Checksums and the version manifest: what makes a published version complete and verifiable."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import xray_tasks
from xray_tasks import storage
from xray_tasks.registry.layout import MANIFEST, MANIFEST_SCHEMA, IntegrityError

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


def _digest_stream(stream) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def digest_bytes(data: bytes) -> dict[str, Any]:
    """``{"sha256", "size"}`` of bytes in memory."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def digest_file(path: str | os.PathLike) -> dict[str, Any]:
    """``{"sha256", "size"}`` of a local file."""
    with open(path, "rb") as fh:
        sha, size = _digest_stream(fh)
    return {"sha256": sha, "size": size}


def digest_uri(uri: str) -> dict[str, Any]:
    """``{"sha256", "size"}`` of a local file or S3 object, streamed (nothing staged on disk)."""
    with storage.open_read(uri) as stream:
        sha, size = _digest_stream(stream)
    return {"sha256": sha, "size": size}


def tree_digests(root: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``root`` by its ``/``-separated relative path, with its digest."""
    return {p.relative_to(root).as_posix(): digest_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def combined_digest(files: dict[str, dict[str, Any]]) -> str:
    """One sha256 over the sorted (path, sha256) pairs: equal for equal file sets, whatever their location."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel]['sha256']}\n".encode())
    return digest.hexdigest()


def code_version() -> dict[str, Any]:
    """The package version and, when the code runs from a git checkout, its commit (``XRAY_CODE_VERSION`` wins)."""
    commit = os.environ.get("XRAY_CODE_VERSION")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(xray_tasks.__file__).parent,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"package": xray_tasks.__version__, "commit": commit}


def encode(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys) so a manifest's sha256 is reproducible."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_manifest(version_uri: str) -> tuple[dict[str, Any], bytes]:
    """The parsed manifest of a version and its exact bytes.

    Raises:
        IntegrityError: no manifest (an incomplete version) or one that is not a schema-1 manifest.
    """
    uri = storage.join(version_uri, MANIFEST)
    try:
        raw = storage.read_bytes(uri)
    except FileNotFoundError:
        raise IntegrityError(
            f"{version_uri}: incomplete version (no {MANIFEST}); it was never finished"
        ) from None
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # not JSON, not UTF-8, too deep
        raise IntegrityError(f"{uri}: not valid JSON ({exc})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("schema") != MANIFEST_SCHEMA
        or not isinstance(manifest.get("files"), dict)
    ):
        raise IntegrityError(f"{uri}: not a schema-{MANIFEST_SCHEMA} manifest with a 'files' table")
    return manifest, raw


def mismatches(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any] | None]) -> list[str]:
    """Human-readable differences between expected and actual digests (``None`` = missing)."""
    problems = []
    for rel, want in sorted(expected.items()):
        got = actual.get(rel)
        if got is None:
            problems.append(f"{rel}: missing")
        elif got["size"] != want["size"]:
            problems.append(f"{rel}: size {got['size']} != {want['size']}")
        elif got["sha256"] != want["sha256"]:
            problems.append(f"{rel}: sha256 {got['sha256'][:12]}... != {want['sha256'][:12]}...")
    return problems


def verify_remote(version_uri: str, files: dict[str, dict[str, Any]]) -> None:
    """Read every listed file back from storage and compare it with its digest.

    Raises:
        IntegrityError: naming every missing or differing file.
    """
    actual: dict[str, dict[str, Any] | None] = {}
    for rel in files:
        try:
            actual[rel] = digest_uri(storage.join(version_uri, *rel.split("/")))
        except FileNotFoundError:
            actual[rel] = None
    problems = mismatches(files, actual)
    if problems:
        raise IntegrityError(f"{version_uri}: {len(problems)} file(s) do not match the manifest: {problems}")


def verify_local(root: Path, files: dict[str, dict[str, Any]], where: str) -> None:
    """Compare local copies under ``root`` with their digests (``where`` names the source in the error)."""
    actual = {rel: digest_file(root / rel) if (root / rel).is_file() else None for rel in files}
    problems = mismatches(files, actual)
    if problems:
        raise IntegrityError(f"{where}: {len(problems)} file(s) do not match the manifest: {problems}")
