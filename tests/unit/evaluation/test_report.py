"""report: every plot is a real PNG (training curves when histories exist); the model card states its use and
limits and carries the numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from xray_tasks.config import EvalConfig, PipelineConfig
from xray_tasks.contracts import DataInfo, ManifestCounts, Metrics, ModelInfo
from xray_tasks.evaluation import evaluate, report


def predictions(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n).astype(np.int8)
    return pd.DataFrame(
        {
            "image_index": [f"{seed}_{i}.png" for i in range(n)],
            "patient_id": np.arange(n),
            "probability": np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0, 1),
            "label": label,
        }
    )


def document(val: pd.DataFrame, test: pd.DataFrame) -> Metrics:
    scores = evaluate.score(val, test, EvalConfig(bootstrap=100))
    return Metrics(
        model=ModelInfo(
            base="resnet50",
            weights="random:seed=0",
            input_size=512,
            stored_image_size=512,
            input_name="image",
            output="triage",
        ),
        data=DataInfo(
            workspace="/ws",
            manifest_sha256="ab" * 32,
            test_digest=evaluate.digest(test),
            val_digest=evaluate.digest(val),
            counts={"test": ManifestCounts(images=len(test), patients=len(test), healthy=1, unhealthy=2)},
        ),
        operating_point=scores.operating_point,
        test=scores.test,
        val=scores.val,
    )


def test_every_plot_is_a_png_and_training_curves_follow_the_histories(tmp_path):
    val, test = predictions(200, 1), predictions(300, 2)
    run = tmp_path / "run"
    (run / "head").mkdir(parents=True)
    (run / "head" / "history.json").write_text(
        json.dumps(
            {
                "best_epoch": 2,
                "history": {
                    "loss": [0.7, 0.6, 0.65],
                    "val_loss": [0.72, 0.61, 0.7],
                    "accuracy": [0.5, 0.6, 0.62],
                    "val_accuracy": [0.5, 0.58, 0.57],
                },
            }
        )
    )
    plots = report.write_plots(str(run), val, test, document(val, test))
    assert set(plots) == {"roc", "pr", "threshold_sweep", "confusion_matrix", "training_head"}
    for uri in plots.values():
        with Image.open(uri) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200


def test_model_card_states_use_limits_and_numbers():
    val, test = predictions(200, 1), predictions(300, 2)
    doc = document(val, test)
    card = report.model_card(doc, PipelineConfig())
    assert "not a diagnostic device" in card and "## Known limits" in card
    assert f"threshold {doc.operating_point.threshold:.4f}" in card
    assert f"{doc.test.auroc:.4f}" in card and "always unhealthy (benchmark)" in card
    assert "| F3 |" in card and f"{doc.test.at_operating_point.f_beta:.4f}" in card
    assert '"base": "resnet50"' in card


def test_the_roc_and_the_sweep_draw_the_baseline_beside_the_model():
    val, test = predictions(80, 1), predictions(120, 2)
    baseline = test.assign(probability=np.random.default_rng(3).uniform(size=len(test)))
    doc = document(val, test)
    plt = report._pyplot()
    roc = report._roc(plt, val, test, doc, doc.operating_point.threshold, baseline)
    sweep = report._sweep(plt, test, doc.operating_point.threshold, baseline)
    labels = [t.get_text() for fig in (roc, sweep) for t in fig.axes[0].get_legend().get_texts()]
    plt.close("all")
    assert sum("metadata baseline" in label for label in labels) == 3  # ROC curve, cleared, missed
    plain = report._roc(plt, val, test, doc, doc.operating_point.threshold)
    assert not any("baseline" in t.get_text() for t in plain.axes[0].get_legend().get_texts())
