"""The model subcommands' usage and failure paths: exit 2 for usage, 1 with one clear line for a failed stage."""

from __future__ import annotations

import os
import subprocess
import sys

from support.models import make_workspace, set_args


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xray_tasks.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_the_model_stages():
    out = run("--help").stdout
    for stage in ("features", "train", "finetune", "evaluate"):
        assert stage in out


def test_later_stages_need_a_run(tmp_path):
    proc = run("finetune", "--workspace", str(tmp_path))
    assert proc.returncode == 2 and "--run-dir or --run-id is required" in proc.stderr
    proc = run("evaluate", "--workspace", str(tmp_path), "--run-dir", "a", "--run-id", "b")
    assert proc.returncode == 2 and "not both" in proc.stderr


def test_failed_stages_exit_1_with_the_reason(tmp_path):
    ws = make_workspace(tmp_path, patients=12, archives=1)
    proc = run("train", "--profile", "demo", "--workspace", ws, "--run-id", "r", *set_args())
    assert proc.returncode == 1 and "run `xray-tasks features`" in proc.stderr.strip().splitlines()[-1]
    proc = run("finetune", "--profile", "demo", "--workspace", ws, "--run-id", "r", *set_args())
    assert proc.returncode == 1 and "no trained head" in proc.stderr.strip().splitlines()[-1]
    empty = {name: str(tmp_path / "empty") for name in ("HOME", "KERAS_HOME", "TMPDIR")}  # no cached weights
    proc = run(
        "features",
        "--workspace",
        ws,
        "--set",
        "features.weights=imagenet",
        "--set",
        "features.base=resnet50",
        env=empty,
    )
    assert proc.returncode == 1 and "nothing is downloaded" in proc.stderr.strip().splitlines()[-1]
    proc = run("features", "--workspace", ws, "--set", "features.base=vgg16")
    assert proc.returncode == 1 and "features.base must be one of" in proc.stderr
