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
from xray_tasks.contracts import DecisionRecord, Forced, Metrics, PublishSummary
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
from xray_tasks.storage import conditional, staging
from xray_tasks.training.networks import IMAGE_INPUT, TRIAGE_OUTPUT
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)

PUBLISHED_FILES = RunDir.PUBLISHED_FILES
PUBLISHED_DIRS = RunDir.PUBLISHED_DIRS
REQUIRED = (*PUBLISHED_FILES, f"{RunDir.PREDICTIONS}/test.parquet")


@dataclass(frozen=True)
class Candidate:
    """A run directory snapshot staged locally: what gets gated, hashed and uploaded."""

    run_dir: str
    staged: Path
    files: dict[str, dict[str, Any]]
    metrics: Metrics
    run_sha256: str


def stage_run(run_dir: str, dest: Path) -> Candidate:
    """Copy the publishable files of a run directory into ``dest`` and hash them.

    Raises:
        BadInput: required files are missing; a stored name with a ``..``, empty or absolute segment, or one
            resolving outside ``dest``; a symbolic link in a local run (``storage.staging.UnsafeName``).
        ContractError: metrics.json does not match its contract.
    """
    prefix = str(run_dir).rstrip("/")
    staging.refuse_symlinks(prefix)  # a local run: links are refused, never followed
    present = {}
    for uri in storage.list_files(prefix):
        rel = staging.relative_name(prefix, uri)  # no "..", empty or absolute segments: refused, not staged
        if rel in PUBLISHED_FILES or rel.startswith(PUBLISHED_DIRS):
            present[rel] = uri
    missing = [rel for rel in REQUIRED if rel not in present]
    if missing:
        raise BadInput(f"{run_dir}: not a complete evaluated run, missing {missing} (see docs/CONTRACTS.md)")
    staging.stage_files(((uri, rel) for rel, uri in present.items()), dest, storage.get_file)
    metrics = gate.validate_metrics(
        storage.read_json(str(dest / RunDir.METRICS)), f"{run_dir}/{RunDir.METRICS}"
    )
    files = integrity.tree_digests(dest)
    return Candidate(str(run_dir), dest, files, metrics, integrity.combined_digest(files))


def export_serving(candidate: Candidate, out: Path) -> None:
    """Check the model's interface against the contract and write the SavedModel TF Serving loads.

    Raises:
        ValueError: the input is not ``image`` [None, S, S, 3] with S = metrics' input_size, or no ``triage`` output.
    """
    import keras

    model = keras.saving.load_model(candidate.staged / RunDir.MODEL, compile=False, safe_mode=True)
    size = candidate.metrics.model.input_size
    inputs = [(t.name, tuple(t.shape)) for t in model.inputs]
    if inputs != [(IMAGE_INPUT, (None, size, size, 3))]:
        raise BadInput(
            f"model.keras must take one input {IMAGE_INPUT!r} of shape (None, {size}, {size}, 3), "
            f"got {inputs}"
        )
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
    local = {
        **{rel: candidate.staged / rel for rel in candidate.files},
        **{f"{SERVING}/{rel}": serving / rel for rel in exported},
    }
    total = 0
    for rel in sorted(files):
        storage.put_file(local[rel], storage.join(vuri, *rel.split("/")))
        total += files[rel]["size"]
        pause("after_upload")
    integrity.verify_remote(vuri, files)
    m = candidate.metrics
    at_op = m.test.at_operating_point
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "model_name": model_name,
        "version": version,
        "publish_id": publish_id,
        "created_at": now(),
        "files": files,
        "code_version": integrity.code_version(),
        "run": {"uri": candidate.run_dir, "sha256": candidate.run_sha256},
        "data": {
            k: getattr(m.data, k) for k in ("manifest_sha256", "test_digest", "val_digest", "workspace")
        },
        "serving": {"path": SERVING, "version": int(version)},
        "summary": {
            "test_auroc": m.test.auroc,
            "threshold": m.operating_point.threshold,
            "sensitivity": at_op.recall,
            "healthy_cleared": at_op.healthy_cleared,
            "base": m.model.base,
            "input_size": m.model.input_size,
        },
    }
    raw = integrity.encode(manifest)
    conditional.write_bytes_if(storage.join(vuri, MANIFEST), raw, absent=True)
    logger.info("%s version %s complete: %d files, %d bytes", model_name, version, len(files), total)
    return version, integrity.digest_bytes(raw)["sha256"], total


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


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return os.environ.get("XRAY_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "unknown"


def publish(
    run_dir: str,
    registry: str,
    *,
    model_name: str = "xray-triage",
    policy: GatePolicy | None = None,
    force: bool = False,
    reason: str = "",
    actor: str | None = None,
    workspace: str | None = None,
) -> PublishSummary:
    """Gate an evaluated run against the champion and publish it as a new immutable version.

    Every outcome is recorded in the version's decision log; only ``approved`` (or ``forced``) ones move the
    champion.  Returns the decision, whether the champion moved, the reasons, the version.

    Raises:
        BadInput: bad arguments or an incomplete run directory.
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
        previous = pointer["version"] if pointer else None
        summary = PublishSummary(
            model_name=model_name,
            registry=registry,
            run_dir=run_dir,
            publish_id=publish_id,
            previous_champion=previous,
            reused=False,
            decision="unchanged",
            promoted=False,
            reasons=(),
            version="",
            champion=previous,
            uploaded_bytes=0,
            decision_record=None,
        )
        existing = find_published(registry, model_name, candidate.run_sha256)
        if existing and existing == previous:
            logger.info("run already published as %s, which is the champion: nothing to do", existing)
            return summary.replace(reused=True, version=existing)
        result = _gate(registry, model_name, candidate, previous, policy, workspace)
        decision = "forced" if force else ("approved" if result.passed else "rejected")
        logger.info("gate: %s%s", decision, "" if result.passed else f" ({'; '.join(result.reasons)})")
        version, manifest_sha, uploaded = _version_for(registry, model_name, candidate, publish_id, existing)
    record = DecisionRecord(
        decision=decision,
        reasons=tuple(result.reasons),
        gate=result,
        policy=to_dict(policy),
        publish_id=publish_id,
        decided_at=now(),
        run=run_dir,
        version=version,
        champion_before=previous,
        forced=Forced(by=_actor(actor), reason=reason) if force else None,
    )
    name = record_decision(registry, model_name, version, record)
    summary = summary.replace(
        reused=existing is not None,
        decision=decision,
        reasons=record.reasons,
        version=version,
        uploaded_bytes=uploaded,
        decision_record=name,
    )
    if decision == "rejected":
        return summary
    _promote(registry, model_name, record, manifest_sha, name, tag)
    return summary.replace(promoted=True, champion=version)


def _gate(
    registry: str,
    model_name: str,
    candidate: Candidate,
    champion: str | None,
    policy: GatePolicy,
    workspace: str | None,
):
    """The gate's result for a candidate, against the champion on the candidate's test split when there is one."""
    score = None
    if champion:
        score = rescore.champion_score(registry, model_name, champion, candidate.metrics, workspace)
    return gate.evaluate(candidate.metrics, policy, score)


def _version_for(
    registry: str, model_name: str, candidate: Candidate, publish_id: str, existing: str | None
) -> tuple[str, str, int]:
    """``(version, manifest sha256, bytes uploaded)``: the complete version already holding this run, or a new one."""
    if existing:
        raw = integrity.read_manifest(version_uri(registry, model_name, existing))[1]
        return existing, integrity.digest_bytes(raw)["sha256"], 0
    return upload_version(registry, model_name, candidate, publish_id)


def _promote(
    registry: str, model_name: str, record: DecisionRecord, manifest_sha: str, name: str, tag: str | None
) -> None:
    """Move the champion pointer to the record's version by compare-and-swap; a lost race is logged as
    ``conflict`` and raised."""
    pause("before_promote")
    new_pointer = {
        "model_name": model_name,
        "version": record.version,
        "manifest_sha256": manifest_sha,
        "publish_id": record.publish_id,
        "decision": name,
        "promoted_at": now(),
        "previous": record.champion_before,
    }
    try:
        pointers.swap_champion(registry, model_name, new_pointer, tag)
    except ChampionConflict as exc:
        record_decision(
            registry,
            model_name,
            record.version,
            record.replace(decision="conflict", reasons=(str(exc),), decided_at=now()),
        )
        raise
