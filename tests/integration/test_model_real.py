"""Every model stage on the real NIH slice (320 PNGs, official lists decide the test split), through the CLI.

The base is random (nothing may be downloaded here), so the numbers say nothing about the method; the test
checks that real data flows through every stage and that every artifact of the run directory appears, and that
the gate refuses the model for not beating the metadata-only baseline, saying so."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from support.models import cli, set_args

from xray_tasks.data import dataset

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_real_slice_runs_every_stage_and_draws_every_plot(nih_dir, tmp_path):
    source, ws = tmp_path / "src", str(tmp_path / "ws")
    cli("pack", str(nih_dir / "images"), str(nih_dir / "meta"), str(source), "--archives", "2")
    # a larger validation share: the slice has 55 healthy studies, and early stopping needs both classes in val
    cli(
        "ingest",
        "--profile",
        "demo",
        "--source",
        str(source),
        "--workspace",
        ws,
        "--set",
        "ingest.image_size=64",
        "--set",
        "ingest.val_fraction=0.2",
    )
    settings = set_args(head__epochs=20, head__patience=5)
    features, _ = cli("features", "--profile", "demo", "--workspace", ws, *settings)
    assert sum(s["images"] for s in features["splits"].values()) == 320
    cli("train", "--profile", "demo", "--workspace", ws, "--run-id", "real", *settings)
    cli("finetune", "--workspace", ws, "--run-id", "real")
    summary, _ = cli("evaluate", "--workspace", ws, "--run-id", "real")

    run = Path(ws) / "runs" / "real"
    doc = json.loads((run / "metrics.json").read_text())
    test = doc["test"]
    assert test["n"] == dataset.split_size(ws, "test") and 0 < test["positives"] < test["n"]
    assert 0.0 <= test["auroc"] <= 1.0 and len(test["auroc_ci"]) == 2
    at = test["at_operating_point"]
    assert at["tn"] + at["fp"] + at["fn"] + at["tp"] == test["n"]
    test_names = set(pd.read_parquet(run / "predictions" / "test.parquet")["image_index"])
    official = set((nih_dir / "meta" / "test_list.txt").read_text().split())
    assert test_names <= official  # the official list, not a random split, decides what is test
    assert set(summary["plots"]) == {
        "roc",
        "pr",
        "threshold_sweep",
        "confusion_matrix",
        "training_head",
        "training_finetune",
    }
    for name in summary["plots"]:
        with Image.open(run / "plots" / f"{name}.png") as img:
            assert img.format == "PNG"
    card = (run / "model_card.md").read_text()
    assert "not a diagnostic device" in card and f"{test['auroc']:.4f}" in card

    # The ladder on the same test studies, and the gate against the metadata baseline: without pretrained
    # weights the demo's model does not beat what the chart says, and the refusal names that reason.
    ladder = doc["ladder"]
    assert [r["name"] for r in ladder["rungs"]] == ["always_unhealthy", "metadata_baseline", "model"]
    versus = ladder["model_vs_baseline"]
    assert versus["n"] == test["n"] and "## The ladder" in card and f"{versus['delta']:+.4f}" in card
    published, _ = cli(
        "publish",
        "--profile",
        "demo",
        "--deployment-set",  # the deployment's own policy: a --set gate.* would make it a forced publish
        "gate.require_baseline=true",
        "--run-dir",
        str(run),
        "--registry",
        str(tmp_path / "registry"),
    )
    assert published["decision"] == "rejected" and not published["promoted"]
    why = [r for r in published["reasons"] if "does not beat the metadata baseline" in r]
    assert len(why) == 1 and f"{versus['delta']:+.4f}" in why[0], published["reasons"]
