"""The fingerprint of a training run: one digest of everything that determines the model.

Parts: the manifest (labels and splits), the committed shard set (each shard's path and sha256, as the archive
markers list them), the resolved config without its run-local fields, the code version and the base weights'
identity.  Two runs with one fingerprint would train the same model, so the training DAG's plan looks it up in
the registry (``registry.catalog.find_by_fingerprint``) and skips a run whose fingerprint a complete version
already has.  Nothing here imports TensorFlow: the plan computes it in a light child process.

The code version comes from the caller (``registry.integrity.code_version`` in the CLI), which keeps this module
below the registry in the layering.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from xray_tasks import storage
from xray_tasks.config import PipelineConfig, to_dict
from xray_tasks.contracts import Fingerprint, RetrainOverride
from xray_tasks.errors import MissingInput
from xray_tasks.workspace import RunDir, Workspace

logger = logging.getLogger(__name__)

RUN_LOCAL = ("workspace", "source", "registry", "model_name", "gate")
"""Config fields left out: where things live, which registry lineage, and the publish-time gate policy (a policy
change re-gates through promotion, it does not change the model)."""

PARTS = ("data", "config", "code", "weights")
"""What :func:`changes` reports, in this order."""


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def model_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The resolved config as it enters the fingerprint: every section but the run-local fields."""
    data = to_dict(cfg)
    for name in RUN_LOCAL:
        data.pop(name, None)
    return data


def code_label(code: Mapping[str, Any]) -> str:
    """``<package>+<commit>`` from ``registry.integrity.code_version()`` (``+unknown`` outside a checkout)."""
    return f"{code.get('package')}+{code.get('commit') or 'unknown'}"


def shard_set_digest(workspace: str) -> tuple[str, int]:
    """sha256 over the sorted (shard path, shard sha256) pairs of every committed marker, and the shard count.

    The markers' own bytes are not used: they carry timings and timestamps, which a byte-identical re-ingest
    changes.

    Raises:
        MissingInput: nothing is committed.
    """
    from xray_tasks.data import shards

    entries = sorted((e.path, e.sha256) for m in shards.read_markers(workspace) for e in m.shards)
    if not entries:
        raise MissingInput(f"{Workspace(workspace).markers}: no committed shards to fingerprint (run ingest)")
    digest = hashlib.sha256()
    for path, sha in entries:
        digest.update(f"{path}\0{sha}\n".encode())
    return digest.hexdigest(), len(entries)


def compute(
    workspace: str, cfg: PipelineConfig, code: Mapping[str, Any], retrain: RetrainOverride | None = None
) -> Fingerprint:
    """The fingerprint of training ``cfg`` on ``workspace`` with this code.

    Raises:
        MissingInput: no manifest, no committed shards, or ImageNet/file weights that are not there.
    """
    from xray_tasks.data.manifest import manifest_sha256
    from xray_tasks.training.networks import resolve_weights

    ws = Workspace(workspace)
    if not storage.exists(ws.manifest):
        raise MissingInput(f"{ws.manifest}: no manifest to fingerprint (run ingest)")
    manifest = manifest_sha256(workspace)
    shards_sha, count = shard_set_digest(workspace)
    _, weights = resolve_weights(cfg.features.base, cfg.features.weights, cfg.features.seed)
    config_sha = _sha256_json(model_config(cfg))
    label = code_label(code)
    digest = _sha256_json(
        {"manifest": manifest, "shards": shards_sha, "config": config_sha, "code": label, "weights": weights}
    )
    return Fingerprint(
        digest=digest,
        manifest_sha256=manifest,
        shards_sha256=shards_sha,
        shards=count,
        config_sha256=config_sha,
        code=label,
        weights=weights,
        retrain=retrain,
    )


def write(run_dir: str, fingerprint: Fingerprint) -> str:
    """Save the run's fingerprint (``<run>/fingerprint.json``); returns its URI."""
    uri = RunDir(run_dir).fingerprint
    storage.write_json(uri, fingerprint.to_dict())
    return uri


def read(run_dir: str) -> Fingerprint | None:
    """The run's fingerprint, or ``None`` for a run started before fingerprints existed."""
    uri = RunDir(run_dir).fingerprint
    if not storage.exists(uri):
        return None
    return Fingerprint.from_dict(storage.read_json(uri), where=uri)


def changes(previous: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> list[str]:
    """Which parts differ between two fingerprints (as dicts): ``["data", "config", ...]``.

    ``["first"]`` when there is no previous one, ``["unknown"]`` when either lacks a fingerprint, ``[]`` when
    they are equal part by part.
    """
    if current is None:
        return ["unknown"]
    if previous is None:
        return ["first"]
    try:
        a = Fingerprint.from_dict(dict(previous), "previous fingerprint").parts()
        b = Fingerprint.from_dict(dict(current), "current fingerprint").parts()
    except ValueError:
        return ["unknown"]
    return [part for part in PARTS if a[part] != b[part]]
