"""Publishing one evaluated run: gate, claim, upload, verify, manifest, decision, champion swap, in that order.

The order is the safety argument.  Nothing a reader trusts exists until its inputs are complete: a version is
complete only once ``MANIFEST.json`` exists, written after every file was read back from storage and matched its
sha256; the champion pointer moves last, by compare-and-swap against the state the gate decided on.  A crash or an
outage at any step leaves the champion untouched and at worst an incomplete version (listed as such, never loaded);
a re-run claims a fresh id.  A run already published complete is not uploaded again: its version is re-gated.
"""

from __future__ import annotations

import getpass
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xray_tasks import storage
from xray_tasks.config import GatePolicy, to_dict
from xray_tasks.errors import BadInput
from xray_tasks.registry import gate, integrity, pointers, rescore
from xray_tasks.registry.layout import (
    DECISIONS,
    MANIFEST,
    MANIFEST_SCHEMA,
    SERVING,
    ChampionConflict,
    IntegrityError,
    check_name,
    new_id,
    now,
    pause,
    version_uri,
)
from xray_tasks.storage import conditional
from xray_tasks.training.networks import IMAGE_INPUT, TRIAGE_OUTPUT

logger = logging.getLogger(__name__)

PUBLISHED_FILES = ("model.keras", "metrics.json", "config.json", "model_card.md")
PUBLISHED_DIRS = ("plots/", "predictions/")
REQUIRED = (*PUBLISHED_FILES, "predictions/test.parquet")


@dataclass(frozen=True)
class Candidate:
    """A run directory snapshot staged locally: what gets gated, hashed and uploaded."""

    run_dir: str
    staged: Path
    files: dict[str, dict[str, Any]]
    metrics: dict[str, Any]
    run_sha256: str


def stage_run(run_dir: str, dest: Path) -> Candidate:
    """Copy the publishable files of a run directory into ``dest`` and hash them.

    Raises:
        ValueError: required files are missing or metrics.json is not schema 1.
    """
    prefix = str(run_dir).rstrip("/")
    present = {}
    for uri in storage.list_files(prefix):
        rel = uri[len(prefix):].lstrip("/\\").replace(os.sep, "/")
        if rel in PUBLISHED_FILES or rel.startswith(PUBLISHED_DIRS):
            present[rel] = uri
    missing = [rel for rel in REQUIRED if rel not in present]
    if missing:
        raise BadInput(f"{run_dir}: not a complete evaluated run, missing {missing} (see docs/CONTRACTS.md)")
    for rel, uri in present.items():
        storage.get_file(uri, dest / rel)
    metrics = gate.validate_metrics(storage.read_json(str(dest / "metrics.json")), f"{run_dir}/metrics.json")
    files = integrity.tree_digests(dest)
    return Candidate(str(run_dir), dest, files, metrics, integrity.combined_digest(files))


def export_serving(candidate: Candidate, out: Path) -> None:
    """Check the model's interface against the contract and write the SavedModel TF Serving loads.

    Raises:
        ValueError: the input is not ``image`` [None, S, S, 3] with S = metrics' input_size, or no ``triage`` output.
    """
    import keras

    model = keras.saving.load_model(candidate.staged / "model.keras", compile=False, safe_mode=True)
    size = int(candidate.metrics["model"]["input_size"])
    inputs = [(t.name, tuple(t.shape)) for t in model.inputs]
    if inputs != [(IMAGE_INPUT, (None, size, size, 3))]:
        raise BadInput(f"model.keras must take one input {IMAGE_INPUT!r} of shape (None, {size}, {size}, 3), "
                         f"got {inputs}")
    if TRIAGE_OUTPUT not in model.output_names:
        raise BadInput(f"model.keras must have an output named {TRIAGE_OUTPUT!r}, got {model.output_names}")
    model.export(str(out), verbose=False)


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


def upload_version(root: str, model_name: str, candidate: Candidate, publish_id: str) -> tuple[str, str, int]:
    """Claim an id, upload, read back, write the manifest. Returns ``(version, manifest_sha256, bytes)``."""
    version = pointers.claim_version(root, model_name, publish_id, {"run_sha256": candidate.run_sha256})
    vuri = version_uri(root, model_name, version)
    serving = candidate.staged.parent / "serving"
    export_serving(candidate, serving / str(int(version)))
    exported = integrity.tree_digests(serving)
    files = {**candidate.files, **{f"{SERVING}/{rel}": d for rel, d in exported.items()}}
    local = {**{rel: candidate.staged / rel for rel in candidate.files},
             **{f"{SERVING}/{rel}": serving / rel for rel in exported}}
    total = 0
    for rel in sorted(files):
        storage.put_file(local[rel], storage.join(vuri, *rel.split("/")))
        total += files[rel]["size"]
        pause("after_upload")
    integrity.verify_remote(vuri, files)
    m, data = candidate.metrics, candidate.metrics["data"]
    at_op = m["test"]["at_operating_point"]
    manifest = {
        "schema": MANIFEST_SCHEMA, "model_name": model_name, "version": version, "publish_id": publish_id,
        "created_at": now(), "files": files, "code_version": integrity.code_version(),
        "run": {"uri": candidate.run_dir, "sha256": candidate.run_sha256},
        "data": {k: data.get(k) for k in ("manifest_sha256", "test_digest", "val_digest", "workspace")},
        "serving": {"path": SERVING, "version": int(version)},
        "summary": {"test_auroc": m["test"]["auroc"], "threshold": m["operating_point"]["threshold"],
                    "sensitivity": at_op.get("recall"), "healthy_cleared": at_op.get("healthy_cleared"),
                    "base": m["model"].get("base"), "input_size": m["model"]["input_size"]},
    }
    raw = integrity.encode(manifest)
    conditional.write_bytes_if(storage.join(vuri, MANIFEST), raw, absent=True)
    logger.info("%s version %s complete: %d files, %d bytes", model_name, version, len(files), total)
    return version, integrity.digest_bytes(raw)["sha256"], total


def record_decision(root: str, model_name: str, version: str, record: dict[str, Any]) -> str:
    """Append one immutable record to a version's decision log; returns its file name."""
    stamp = record["decided_at"].replace(":", "").replace("-", "")
    name = f"{stamp}-{record['publish_id'][:8]}-{record['decision']}.json"
    conditional.write_bytes_if(storage.join(version_uri(root, model_name, version), DECISIONS, name),
                           integrity.encode(record), absent=True)
    return name


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return os.environ.get("XRAY_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "unknown"


def publish(run_dir: str, registry: str, *, model_name: str = "xray-triage", policy: GatePolicy | None = None,
            force: bool = False, reason: str = "", actor: str | None = None,
            workspace: str | None = None) -> dict[str, Any]:
    """Gate an evaluated run against the champion and publish it as a new immutable version.

    Every outcome is recorded in the version's decision log; only ``approved`` (or ``forced``) ones move the
    champion.  Returns a JSON-able summary: ``decision``, ``promoted``, ``reasons``, ``version``, ``champion``...

    Raises:
        ValueError: bad arguments or an incomplete run directory.
        ChampionConflict: another publish moved the champion meanwhile (recorded as ``conflict``; nothing lost).
        RegistryError / StorageError: the champion cannot be compared, or storage failed (champion untouched).
    """
    check_name(model_name)
    if force and not reason.strip():
        raise BadInput("a forced publish needs a reason (--reason TEXT): it is recorded with who forced it")
    policy = policy or GatePolicy()
    publish_id = new_id()
    with tempfile.TemporaryDirectory(prefix="xray-publish-") as tmp:
        candidate = stage_run(run_dir, Path(tmp) / "run")
        pointer, tag = pointers.read_champion(registry, model_name)
        existing = find_published(registry, model_name, candidate.run_sha256)
        summary = {"model_name": model_name, "registry": registry, "run_dir": run_dir, "publish_id": publish_id,
                   "previous_champion": pointer["version"] if pointer else None, "reused": existing is not None}
        if existing and pointer and pointer["version"] == existing:
            logger.info("run already published as %s, which is the champion: nothing to do", existing)
            return {**summary, "decision": "unchanged", "promoted": False, "reasons": [], "version": existing,
                    "champion": existing, "uploaded_bytes": 0}
        champion = None
        if pointer:
            champion = rescore.champion_score(registry, model_name, pointer["version"], candidate.metrics, workspace)
        result = gate.evaluate(candidate.metrics, policy, champion)
        decision = "forced" if force else ("approved" if result.passed else "rejected")
        logger.info("gate: %s%s", decision, "" if result.passed else f" ({'; '.join(result.reasons)})")
        if existing:
            version, uploaded = existing, 0
            manifest_sha = integrity.digest_bytes(integrity.read_manifest(version_uri(registry, model_name,
                                                                                      version))[1])["sha256"]
        else:
            version, manifest_sha, uploaded = upload_version(registry, model_name, candidate, publish_id)
    record = {"decision": decision, "reasons": result.reasons, "gate": result.to_dict(), "policy": to_dict(policy),
              "publish_id": publish_id, "decided_at": now(), "run": run_dir, "version": version,
              "champion_before": summary["previous_champion"],
              "forced": {"by": _actor(actor), "reason": reason} if force else None}
    name = record_decision(registry, model_name, version, record)
    summary.update(decision=decision, reasons=result.reasons, version=version, uploaded_bytes=uploaded,
                   champion=summary["previous_champion"], promoted=False, decision_record=name)
    if decision == "rejected":
        return summary
    pause("before_promote")
    new_pointer = {"model_name": model_name, "version": version, "manifest_sha256": manifest_sha,
                   "publish_id": publish_id, "decision": name, "promoted_at": now(),
                   "previous": summary["previous_champion"]}
    try:
        pointers.swap_champion(registry, model_name, new_pointer, tag)
    except ChampionConflict as exc:
        record_decision(registry, model_name, version, {**record, "decision": "conflict", "reasons": [str(exc)],
                                                       "decided_at": now()})
        raise
    summary.update(promoted=True, champion=version)
    return summary
