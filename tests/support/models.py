"""Helpers for the model-stage tests: a small ingested synthetic workspace and a CPU-sized config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from xray_tasks.config import IngestConfig, PipelineConfig, override, profile
from xray_tasks.data.ingest import ingest_archive, list_archives
from xray_tasks.data.manifest import run_manifest
from xray_tasks.data.synth import generate

TINY_SETTINGS = {
    "features.base": "mobilenetv3small",
    "features.weights": "none",
    "features.input_size": "64",
    "features.batch_size": "32",
    "head.epochs": "40",
    "head.patience": "8",
    "head.batch_size": "32",
    "finetune.epochs": "1",
    "finetune.batch_size": "16",
    "evaluate.bootstrap": "200",
    "evaluate.batch_size": "64",
}
"""A random MobileNetV3Small at 64 px: the demo profile's model, sized for seconds on two cores."""


def make_workspace(
    root: Path,
    *,
    patients: int = 120,
    image_size: int = 64,
    signal: float = 1.0,
    archives: int = 2,
    shard_mb: float = 0.06,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> str:
    """Synthetic NIH tree -> manifest -> committed shards (several per split); returns the workspace path."""
    source, workspace = root / "src", root / "ws"
    generate(
        source, patients=patients, archives=archives, image_size=max(image_size, 64), signal=signal, seed=seed
    )
    cfg = IngestConfig(image_size=image_size, shard_target_mb=shard_mb, val_fraction=val_fraction)
    run_manifest(str(source), str(workspace), cfg)
    for archive in list_archives(str(source)):
        ingest_archive(archive, str(workspace), cfg)
    return str(workspace)


def tiny_config(workspace: str, **settings: str) -> PipelineConfig:
    values = {**TINY_SETTINGS, **{k.replace("__", "."): str(v) for k, v in settings.items()}}
    return override(profile("demo", workspace=workspace), values)


def cli(
    *args: str, env: dict | None = None, timeout: float = 600
) -> tuple[dict, subprocess.CompletedProcess]:
    """Run ``xray-tasks`` in a child process; returns (last stdout line as JSON, the process)."""
    proc = subprocess.run(
        [sys.executable, "-m", "xray_tasks.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"xray-tasks {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def set_args(**settings: str) -> list[str]:
    """``--set`` flags for the tiny settings plus overrides (``head__epochs=5`` style keys)."""
    values = {**TINY_SETTINGS, **{k.replace("__", "."): str(v) for k, v in settings.items()}}
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
