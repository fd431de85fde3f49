"""Reading the registry without TensorFlow: models, versions, decisions, artifacts (what a UI page needs)."""

from __future__ import annotations

import json
import logging
from typing import Any

from xray_tasks import storage
from xray_tasks.contracts import DecisionRecord
from xray_tasks.registry import integrity, pointers, signing
from xray_tasks.registry.layout import (
    CLAIM,
    DECISIONS,
    VERSIONS,
    IntegrityError,
    RegistryError,
    model_uri,
    parse_version,
    version_uri,
)
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)


def list_models(root: str) -> list[str]:
    """Names of the models under a registry root (folders holding a ``versions/`` folder)."""
    return [
        name for name in storage.list_dirs(root) if VERSIONS in storage.list_dirs(storage.join(root, name))
    ]


def read_decisions(root: str, model_name: str, version: str) -> list[dict[str, Any]]:
    """The decision log of one version, oldest first."""
    prefix = storage.join(version_uri(root, model_name, version), DECISIONS)
    records = []
    for name in storage.listdir(prefix):
        if name.endswith(".json"):
            uri = storage.join(prefix, name)
            record = DecisionRecord.from_dict(storage.read_json(uri), where=uri)
            records.append({**record.to_dict(), "record": name})
    return records


def champion_version(root: str, model_name: str) -> str | None:
    pointer, _ = pointers.read_champion(root, model_name)
    return pointer["version"] if pointer else None


def list_versions(root: str, model_name: str) -> list[dict[str, Any]]:
    """One row per claimed version, oldest first: ``complete`` is true only when it has a valid manifest.

    Rows: ``version``, ``complete``, ``champion``, ``created_at``, ``summary`` (test AUROC, threshold, ...),
    ``decision`` and ``reasons`` of its latest decision, ``pending`` (a staged candidate no decision followed
    yet: it awaits sign-off).  Incomplete versions (a publish that died) are listed so that they can be seen and
    cleaned up (``models gc``), never used.
    """
    champion = champion_version(root, model_name)
    rows = []
    for version in pointers.version_ids(root, model_name):
        uri = version_uri(root, model_name, version)
        row: dict[str, Any] = {"version": version, "champion": version == champion, "uri": uri}
        try:
            manifest, _ = integrity.read_manifest(uri)
        except IntegrityError as exc:
            row.update(
                complete=False,
                created_at=None,
                summary=None,
                decision=None,
                reasons=[],
                pending=False,
                problem=str(exc),
            )
            rows.append(row)
            continue
        decisions = read_decisions(root, model_name, version)
        latest = decisions[-1] if decisions else {}
        settled = [d["decision"] for d in decisions if d["decision"] != "conflict"]
        row.update(
            complete=True,
            created_at=manifest.get("created_at"),
            summary=manifest.get("summary"),
            decision=latest.get("decision"),
            reasons=latest.get("reasons", []),
            pending=bool(settled) and settled[-1] == "candidate" and version != champion,
            fingerprint=manifest.get("fingerprint"),
        )
        rows.append(row)
    return rows


def find_by_fingerprint(root: str, model_name: str, digest: str) -> dict[str, Any] | None:
    """The newest complete version trained with this fingerprint, whatever its decision (champion, rejected,
    superseded), as ``{"version", "decision", "champion", "uri", "created_at"}``; ``None`` when none has it.

    A version's decision is its latest decision record (``None`` when it has none yet); incomplete versions are
    never matched.
    """
    if not digest:
        return None
    champion = champion_version(root, model_name)
    for version in reversed(pointers.version_ids(root, model_name)):
        uri = version_uri(root, model_name, version)
        try:
            manifest, _ = integrity.read_manifest(uri)
        except IntegrityError:
            continue
        if (manifest.get("fingerprint") or {}).get("digest") != digest:
            continue
        decisions = read_decisions(root, model_name, version)
        decision = decisions[-1]["decision"] if decisions else None
        if version != champion and decision in ("approved", "forced"):
            decision = f"{decision}, superseded"
        return {
            "version": version,
            "decision": decision,
            "champion": version == champion,
            "uri": uri,
            "created_at": manifest.get("created_at"),
        }
    return None


def version_details(root: str, model_name: str, version: str | int | None = None) -> dict[str, Any]:
    """Everything about one version (the champion when ``version`` is None): manifest, metrics, decisions,
    artifact URIs (plots, model card, TF Serving base path), whether it is the champion, and its ``signature``
    status ``{signed, key_id, verified, reason}`` against the trusted keys (``signing.trusted_keys``).

    Raises:
        RegistryError: no such version or no champion yet.
        IntegrityError: the version is incomplete, or its metrics.json does not match the manifest.
    """
    champion = champion_version(root, model_name)
    if version is None:
        if champion is None:
            raise RegistryError(f"{model_uri(root, model_name)}: no champion yet")
        version = champion
    version = parse_version(version)
    uri = version_uri(root, model_name, version)
    if not storage.exists(storage.join(uri, CLAIM)):
        raise RegistryError(f"{uri}: no such version")
    manifest, raw = integrity.read_manifest(uri)
    metrics = json.loads(read_artifact(root, model_name, version, RunDir.METRICS, manifest=manifest))
    files = manifest["files"]
    return {
        "model_name": model_name,
        "version": version,
        "uri": uri,
        "champion": version == champion,
        "manifest": manifest,
        "metrics": metrics,
        "decisions": read_decisions(root, model_name, version),
        "signature": signing.check(uri, raw, signing.trusted_keys()),
        "plots": {
            rel.split("/", 1)[1]: storage.join(uri, *rel.split("/"))
            for rel in files
            if rel.startswith(f"{RunDir.PLOTS}/")
        },
        "model_card": storage.join(uri, RunDir.MODEL_CARD) if RunDir.MODEL_CARD in files else None,
        "serving_base_path": storage.join(uri, manifest["serving"]["path"]),
    }


def read_artifact(
    root: str, model_name: str, version: str, rel: str, manifest: dict[str, Any] | None = None
) -> bytes:
    """One published file's bytes (e.g. ``plots/roc.png``), checked against the version's manifest.

    Raises:
        IntegrityError: the file is not in the manifest or its bytes differ.
    """
    uri = version_uri(root, model_name, version)
    if manifest is None:
        manifest, _ = integrity.read_manifest(uri)
    expected = manifest["files"].get(rel)
    if expected is None:
        raise IntegrityError(f"{uri}: {rel!r} is not a file of this version")
    data = storage.read_bytes(storage.join(uri, *rel.split("/")))
    problems = integrity.mismatches({rel: expected}, {rel: integrity.digest_bytes(data)})
    if problems:
        raise IntegrityError(f"{uri}: {problems[0]}; the version was modified after publishing")
    return data
