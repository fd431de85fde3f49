"""bench/gpu.py: without a GPU it says so and measures nothing; with --allow-cpu it measures our model on a tiny
size, the numbers it prints being real rates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import REPO

BENCH = [sys.executable, str(REPO / "bench" / "gpu.py"), "--base", "mobilenetv3small", "--size", "32"]


def _run(*args: str) -> tuple[dict, str]:
    proc = subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_without_a_gpu_it_exits_cleanly_and_measures_nothing():
    summary, stderr = _run()
    assert summary["measured"] is False and summary["gpus"] == [] and summary["backend"] == "tensorflow"
    assert "no GPU is visible" in stderr


@pytest.mark.slow
def test_on_the_cpu_it_times_forward_and_fine_tune_steps_of_our_model():
    summary, _ = _run(
        "--allow-cpu", "--batch", "4", "--steps", "3", "--warmup", "1", "--precision", "float32"
    )
    assert summary["measured"] is True and summary["device"] == "cpu"
    assert summary["forward_images_per_s"] > 0 and summary["finetune_steps_per_s"] > 0
    assert summary["finetune_images_per_s"] == pytest.approx(4 * summary["finetune_steps_per_s"], rel=0.01)
    assert summary["finetune_to_forward"] == pytest.approx(
        summary["finetune_images_per_s"] / summary["forward_images_per_s"], rel=0.01
    )
