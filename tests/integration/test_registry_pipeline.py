"""The registry behind the real model stages: a run trained and evaluated by them (seconds-long settings) is
published, and the published model, fed the original PNG files, reproduces the run's own test predictions."""

from __future__ import annotations

import tarfile

import numpy as np
import pandas as pd
import pytest
from support.models import make_workspace, tiny_config

from xray_tasks.evaluation import evaluate
from xray_tasks.registry import list_versions, load, publish, version_details
from xray_tasks.training.features import extract_features
from xray_tasks.training.finetune import run_finetune
from xray_tasks.training.head import train_head

pytestmark = pytest.mark.slow


def test_an_evaluated_run_is_published_and_scores_its_test_pngs_as_evaluation_did(tmp_path):
    # Stored at 48 px, fed to the model at 64: both resize steps of the consumer are exercised.
    ws = make_workspace(tmp_path, patients=60, image_size=48, archives=1)
    cfg = tiny_config(ws, head__epochs="5", finetune__steps_per_epoch="2")
    run = tmp_path / "run"
    extract_features(ws, cfg.features)
    train_head(ws, str(run), cfg)
    run_finetune(ws, str(run), cfg)
    evaluate.run_evaluate(ws, str(run), cfg)

    registry = str(tmp_path / "registry")
    summary = publish(
        str(run), registry, force=True, reason="a seconds-long training, published to test the path"
    )
    assert summary.promoted and summary.version == "000001"
    details = version_details(registry, "xray-triage")
    assert {"plots/roc.png", "predictions/test.parquet", "model_card.md"} <= set(details["manifest"]["files"])
    assert details["manifest"]["data"]["test_digest"] == details["metrics"]["data"]["test_digest"]
    assert list_versions(registry, "xray-triage")[0]["summary"]["base"] == "mobilenetv3small"

    expected = pd.read_parquet(run / "predictions" / "test.parquet")
    with tarfile.open(next((tmp_path / "src").glob("images_*.tar.gz"))) as tar:
        blobs = [tar.extractfile(f"images/{name}").read() for name in expected["image_index"]]
    published = load(registry)
    got = published.probabilities(blobs)
    assert np.ptp(expected["probability"]) > 1e-4  # the predictions differ between images
    np.testing.assert_allclose(got, expected["probability"].to_numpy(), rtol=0, atol=1e-4)
    assert published.threshold == details["metrics"]["operating_point"]["threshold"]
