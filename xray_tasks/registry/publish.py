"""Publishing one evaluated run: gate, claim, upload, verify, manifest, decision, champion swap, in that order.

Before anything is gated, ``recompute.verify_run`` recomputes every judged number from the run's predictions and
the manifest's labels; a metrics.json that disagrees is refused.  The order is the safety argument.  Nothing a reader trusts exists until its inputs are complete: a version is
complete only once ``MANIFEST.json`` exists, written after every file was read back from storage and matched its
sha256; the champion pointer moves last, by compare-and-swap against the state the gate decided on.  A crash or an
outage at any step leaves the champion untouched and at worst an incomplete version (listed as such, never loaded);
a re-run claims a fresh id.  A run already published complete is not uploaded again: its version is re-gated.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xray_tasks import storage
from xray_tasks.config import GatePolicy, to_dict
from xray_tasks.contracts import DecisionRecord, Forced, Metrics, PublishSummary
from xray_tasks.errors import BadInput
from xray_tasks.registry import (
    comparisons,
    gate,
    integrity,
    pointers,
    recompute,
    rescore,
    serving,
    signing,
    versions,
)
from xray_tasks.registry.layout import (
    SERVING,
    ChampionConflict,
    check_name,
    new_id,
    now,
    pause,
    version_uri,
)
from xray_tasks.storage import staging
from xray_tasks.training.networks import IMAGE_INPUT, TRIAGE_OUTPUT
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)

PUBLISHED_FILES = RunDir.PUBLISHED_FILES
PUBLISHED_DIRS = RunDir.PUBLISHED_DIRS
REQUIRED = (*PUBLISHED_FILES, f"{RunDir.PREDICTIONS}/val.parquet", f"{RunDir.PREDICTIONS}/test.parquet")


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
        if rel in PUBLISHED_FILES or rel in RunDir.PUBLISHED_IF_PRESENT or rel.startswith(PUBLISHED_DIRS):
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

    Two signatures (``serving.export``): ``serving_default`` / ``serve`` take float32 pixels as the Keras model
    does; ``serve_png`` takes encoded PNG files and preprocesses them in the graph as ``predict`` does.

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
    serving.export(model, out, stored_size=candidate.metrics.model.stored_image_size, input_size=size)


def upload_version(
    root: str, model_name: str, candidate: Candidate, publish_id: str, key: signing.SigningKey | None = None
) -> tuple[str, str, int, str | None]:
    """Claim an id, export for TF Serving, upload, read back, sign, write the manifest.

    Returns ``(version, manifest_sha256, bytes, key id)``.
    """
    version = pointers.claim_version(root, model_name, publish_id, {"run_sha256": candidate.run_sha256})
    serving = candidate.staged.parent / "serving"
    export_serving(candidate, serving / str(int(version)))
    exported = integrity.tree_digests(serving)
    files = {**candidate.files, **{f"{SERVING}/{rel}": d for rel, d in exported.items()}}
    local = {
        **{rel: candidate.staged / rel for rel in candidate.files},
        **{f"{SERVING}/{rel}": serving / rel for rel in exported},
    }
    sha, total, key_id = versions.upload(
        root,
        model_name,
        publish_id=publish_id,
        run={"uri": candidate.run_dir, "sha256": candidate.run_sha256},
        files=files,
        local=local,
        metrics=candidate.metrics,
        version=version,
        key=key,
    )
    return version, sha, total, key_id


def changed_gate_keys(policy: GatePolicy, deployment: GatePolicy | None) -> tuple[str, ...]:
    """``gate.<key>`` names whose value in ``policy`` differs from the deployment's policy."""
    if deployment is None:
        return ()
    mine, theirs = to_dict(policy), to_dict(deployment)
    return tuple(f"gate.{k}" for k in sorted(mine) if mine[k] != theirs.get(k))


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
    stage: bool = False,
    deployment_policy: GatePolicy | None = None,
    signing_key: signing.SigningKey | None = None,
) -> PublishSummary:
    """Gate an evaluated run against the champion and publish it as a new immutable version.

    Every outcome is recorded in the version's decision log.  Without ``stage`` an ``approved`` (or ``forced``)
    version becomes champion at once; with ``stage`` it is recorded as ``candidate`` and the champion stays until
    ``promotion.promote`` (a reviewer's sign-off).  A ``policy`` that differs from ``deployment_policy`` makes
    the publish a forced one (reason and actor required; the changed keys are recorded).  The signing key comes
    from ``signing_key`` or the environment (``signing.signing_key_from_env``).

    Raises:
        BadInput: bad arguments or an incomplete run directory.
        IntegrityError: the run's metrics.json disagrees with its predictions, or a reused version fails to verify.
        ChampionConflict: another publish moved the champion meanwhile (recorded as ``conflict``; nothing lost).
        RegistryError / StorageError: the champion cannot be compared, or storage failed (champion untouched).
    """
    check_name(model_name)
    policy = policy or GatePolicy()
    changed = changed_gate_keys(policy, deployment_policy)
    forced = force or bool(changed)
    who = versions.actor(actor)
    if forced and not reason.strip():
        what = f"changes {list(changed)} against the deployment's gate policy" if changed else "is forced"
        raise BadInput(
            f"this publish {what}: it needs a reason (--reason TEXT); it is recorded as forced with who did it"
        )
    if forced and who == "unknown":
        raise BadInput("a forced publish needs an actor (--actor NAME or $XRAY_ACTOR): it is recorded")
    key = signing_key if signing_key is not None else signing.signing_key_from_env()
    publish_id = new_id()
    with tempfile.TemporaryDirectory(prefix="xray-publish-") as tmp:
        candidate = stage_run(run_dir, Path(tmp) / "run")
        checked, fields = recompute.verify_run(
            candidate.staged, candidate.metrics, workspace=workspace, where=run_dir
        )
        candidate = dataclasses.replace(candidate, metrics=checked)
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
            changed_keys=changed,
        )
        existing = versions.find_published(registry, model_name, candidate.run_sha256)
        if existing and existing == previous:
            logger.info("run already published as %s, which is the champion: nothing to do", existing)
            return summary.replace(reused=True, version=existing)
        result = _gate(registry, model_name, candidate, previous, policy, workspace)
        result = result.replace(
            context=result.context.replace(
                test_split_digest=checked.data.test_split_digest, recomputed=fields
            )
        )
        if result.passed or force:
            decision = "candidate" if stage else ("forced" if forced else "approved")
        else:
            decision = "rejected"
        logger.info("gate: %s%s", decision, "" if result.passed else f" ({'; '.join(result.reasons)})")
        verified, uploaded = _version_for(registry, model_name, candidate, publish_id, existing, key)
    record = DecisionRecord(
        decision=decision,
        reasons=tuple(result.reasons),
        gate=result,
        policy=to_dict(policy),
        publish_id=publish_id,
        decided_at=now(),
        run=run_dir,
        version=verified.version,
        champion_before=previous,
        forced=Forced(by=who, reason=reason) if forced else None,
        actor=who,
        comment=reason.strip() or None,
        changed_keys=changed,
        key_id=verified.key_id,
        retrain=candidate.metrics.fingerprint.retrain if candidate.metrics.fingerprint else None,
    )
    name = versions.record_decision(registry, model_name, verified.version, record)
    summary = summary.replace(
        reused=existing is not None,
        decision=decision,
        reasons=record.reasons,
        version=verified.version,
        uploaded_bytes=uploaded,
        decision_record=name,
        key_id=verified.key_id,
    )
    if decision in ("rejected", "candidate"):
        return summary
    _promote(registry, model_name, record, verified, name, tag)
    return summary.replace(promoted=True, champion=verified.version)


def _gate(
    registry: str,
    model_name: str,
    candidate: Candidate,
    champion: str | None,
    policy: GatePolicy,
    workspace: str | None,
):
    """The gate's result for a candidate, against the champion on the candidate's test split when there is one
    and the metadata baseline; both paired comparisons are computed from the staged predictions."""
    score = None
    if champion:
        score = rescore.champion_score(
            registry, model_name, champion, candidate.metrics, workspace, candidate.staged
        )
    baseline = comparisons.with_baseline(candidate.staged, candidate.metrics)
    return gate.evaluate(candidate.metrics, policy, score, baseline)


def _version_for(
    registry: str,
    model_name: str,
    candidate: Candidate,
    publish_id: str,
    existing: str | None,
    key: signing.SigningKey | None,
) -> tuple[versions.Verified, int]:
    """The complete version already holding this run (re-verified: every file and, under keys, its signature),
    or a new one; and the bytes uploaded."""
    if existing:
        logger.info("run already published complete as %s: re-verifying it instead of uploading", existing)
        return versions.verify(registry, model_name, existing), 0
    version, sha, uploaded, key_id = upload_version(registry, model_name, candidate, publish_id, key)
    manifest = integrity.read_manifest(version_uri(registry, model_name, version))[0]
    return versions.Verified(version, manifest, sha, key_id), uploaded


def _promote(
    registry: str,
    model_name: str,
    record: DecisionRecord,
    verified: versions.Verified,
    name: str,
    tag: str | None,
) -> None:
    """Move the champion pointer to the record's version by compare-and-swap; a lost race is logged as
    ``conflict`` and raised."""
    pause("before_promote")
    new_pointer = versions.champion_pointer(
        model_name, verified, record.publish_id, name, record.champion_before
    )
    try:
        pointers.swap_champion(registry, model_name, new_pointer, tag)
    except ChampionConflict as exc:
        versions.record_decision(
            registry,
            model_name,
            record.version,
            record.replace(decision="conflict", reasons=(str(exc),), decided_at=now()),
        )
        raise
