"""One version's life on storage: upload (claim, files, read-back, signature, manifest), full re-verification,
and its append-only decision log.  ``publish`` and ``promotion`` build on these."""

from __future__ import annotations

import getpass
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xray_tasks import storage
from xray_tasks.contracts import DecisionRecord, Metrics
from xray_tasks.registry import integrity, pointers, signing
from xray_tasks.registry.layout import (
    DECISIONS,
    MANIFEST,
    MANIFEST_SCHEMA,
    SERVING,
    SIGNATURE,
    IntegrityError,
    now,
    pause,
    version_uri,
)
from xray_tasks.storage import conditional

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verified:
    """A complete version whose every file was read back and matched its manifest (and signature, under keys)."""

    version: str
    manifest: dict[str, Any]
    manifest_sha256: str
    key_id: str | None


def find_published(root: str, model_name: str, run_sha256: str) -> str | None:
    """The complete version already holding this exact run, if any (newest first)."""
    for version in reversed(pointers.version_ids(root, model_name)):
        try:
            manifest, _ = integrity.read_manifest(version_uri(root, model_name, version))
        except IntegrityError:
            continue
        if manifest.get("run", {}).get("sha256") == run_sha256:
            return version
    return None


def verify(root: str, model_name: str, version: str, keys: dict[str, Any] | None = None) -> Verified:
    """Re-verify a complete version: manifest present, every file's sha256, the signature when keys are set.

    Raises:
        IntegrityError: incomplete, a file differing or missing, or (under keys) unsigned / unknown key / bad
            signature; the message says which.
    """
    uri = version_uri(root, model_name, version)
    manifest, raw = integrity.read_manifest(uri)
    integrity.verify_remote(uri, manifest["files"])
    key_id = signing.require(uri, raw, signing.trusted_keys() if keys is None else keys)
    return Verified(version, manifest, integrity.digest_bytes(raw)["sha256"], key_id)


def build_manifest(
    model_name: str,
    version: str,
    publish_id: str,
    files: dict[str, dict[str, Any]],
    run: dict[str, str],
    m: Metrics,
) -> dict[str, Any]:
    at_op = m.test.at_operating_point
    return {
        "schema": MANIFEST_SCHEMA,
        "model_name": model_name,
        "version": version,
        "publish_id": publish_id,
        "created_at": now(),
        "files": files,
        "code_version": integrity.code_version(),
        "run": run,
        "data": {
            k: getattr(m.data, k)
            for k in (
                "manifest_sha256",
                "test_digest",
                "val_digest",
                "test_split_digest",
                "val_split_digest",
                "workspace",
            )
        },
        "serving": {"path": SERVING, "version": int(version)},
        "fingerprint": m.fingerprint.to_dict() if m.fingerprint else None,
        "summary": {
            "test_auroc": m.test.auroc,
            "threshold": m.operating_point.threshold,
            "sensitivity": at_op.recall,
            "healthy_cleared": at_op.healthy_cleared,
            "base": m.model.base,
            "input_size": m.model.input_size,
        },
    }


def upload(
    root: str,
    model_name: str,
    *,
    publish_id: str,
    run: dict[str, str],
    files: dict[str, dict[str, Any]],
    local: dict[str, Path],
    metrics: Metrics,
    version: str,
    key: signing.SigningKey | None,
) -> tuple[str, int, str | None]:
    """Upload a claimed version's files, read them back, sign, write the manifest last.

    Returns ``(manifest_sha256, bytes uploaded, key id)``.
    """
    vuri = version_uri(root, model_name, version)
    total = 0
    for rel in sorted(files):
        storage.put_file(local[rel], storage.join(vuri, *rel.split("/")))
        total += files[rel]["size"]
        pause("after_upload")
    integrity.verify_remote(vuri, files)
    raw = integrity.encode(build_manifest(model_name, version, publish_id, files, run, metrics))
    if key is not None:  # before the manifest: a complete version is a signed one
        conditional.write_bytes_if(
            storage.join(vuri, SIGNATURE), integrity.encode(signing.sign(key, raw)), absent=True
        )
    conditional.write_bytes_if(storage.join(vuri, MANIFEST), raw, absent=True)
    logger.info(
        "%s version %s complete: %d files, %d bytes, %s",
        model_name,
        version,
        len(files),
        total,
        f"signed with key {key.key_id}" if key else "unsigned",
    )
    return integrity.digest_bytes(raw)["sha256"], total, key.key_id if key else None


def record_decision(root: str, model_name: str, version: str, record: DecisionRecord) -> str:
    """Append one immutable record to a version's decision log; returns its file name."""
    stamp = record.decided_at.replace(":", "").replace("-", "")
    name = f"{stamp}-{record.publish_id[:8]}-{record.decision}.json"
    conditional.write_bytes_if(
        storage.join(version_uri(root, model_name, version), DECISIONS, name),
        integrity.encode(record.to_dict()),
        absent=True,
    )
    return name


def actor(given: str | None) -> str:
    """Who acts: the given name, else ``$XRAY_ACTOR``, else the login name."""
    if given and given.strip():
        return given.strip()
    try:
        return os.environ.get("XRAY_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "unknown"


def champion_pointer(
    model_name: str, verified: Verified, publish_id: str, record_name: str, previous: str | None
) -> dict[str, Any]:
    """The champion pointer's document: it names the manifest's sha256 and the signing key's id."""
    return {
        "model_name": model_name,
        "version": verified.version,
        "manifest_sha256": verified.manifest_sha256,
        "key_id": verified.key_id,
        "publish_id": publish_id,
        "decision": record_name,
        "promoted_at": now(),
        "previous": previous,
    }
