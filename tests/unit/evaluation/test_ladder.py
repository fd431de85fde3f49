"""The ladder: three rungs on the same test studies, the baseline's threshold from its own validation scores, the
paired margin in metrics.json and in words on the model card, and a baseline from another split refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xray_tasks.config import EvalConfig
from xray_tasks.contracts import Metrics
from xray_tasks.evaluation import ladder, metrics


def scored(n: int, seed: int, signal: float, names: list[str] | None = None, labels=None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n).astype(np.int8) if labels is None else labels
    return pd.DataFrame(
        {
            "image_index": names or [f"{i:05d}.png" for i in range(n)],
            "patient_id": np.arange(n) // 2,
            "probability": np.clip(rng.normal(0.4 + signal * label, 0.2), 0, 1),
            "label": label,
        }
    )


CFG = EvalConfig(bootstrap=200)


def test_three_rungs_on_the_same_studies_with_the_paired_margin():
    test = scored(600, 0, 0.3)
    base_test = scored(600, 1, 0.05, labels=test["label"].to_numpy()).iloc[::-1]  # any order, same studies
    base_val = scored(300, 2, 0.05, names=[f"v{i}" for i in range(300)])
    climbed = ladder.build(test, 0.45, CFG, base_val, base_test, "/ws/baseline/x", ("age",))
    assert [r.name for r in climbed.rungs] == ["always_unhealthy", "metadata_baseline", "model"]
    always, base, model = climbed.rungs
    assert always.auroc == 0.5 and always.at_operating_point.healthy_cleared == 0.0
    assert always.at_operating_point.recall == 1.0
    assert base.threshold == metrics.choose_threshold(base_val["label"], base_val["probability"], 0.95)
    assert model.threshold == 0.45 and model.auroc == pytest.approx(
        metrics.auroc(test["label"], test["probability"])
    )
    versus = climbed.model_vs_baseline
    assert versus.reference_auroc == pytest.approx(base.auroc) and versus.delta == pytest.approx(
        model.auroc - base.auroc
    )
    assert versus.delta_ci[0] > 0  # a clear margin: beyond the noise
    assert "beats the baseline beyond sampling noise" in ladder.in_words(climbed)
    card = ladder.card_section(climbed)
    assert "| metadata baseline |" in card and f"{versus.delta:+.4f}" in card and "(age)" in card
    assert Metrics.__dataclass_fields__["ladder"].default is None  # older metrics.json files still read


def test_a_margin_within_the_noise_and_a_loss_are_said_so():
    test = scored(200, 3, 0.2)
    near = test.assign(probability=test["probability"] + np.random.default_rng(4).normal(0, 0.02, 200))
    tied = ladder.build(test, 0.4, CFG, near, near)
    assert "within sampling noise" in ladder.in_words(tied)
    worse = ladder.build(test.assign(probability=1 - test["probability"]), 0.4, CFG, test, test)
    assert "worse than the baseline beyond sampling noise" in ladder.in_words(worse)
    assert "unknown" in ladder.in_words(ladder.build(test, 0.4, CFG))


def test_a_baseline_on_other_studies_or_labels_is_refused():
    test = scored(50, 5, 0.3)
    with pytest.raises(ValueError, match="no prediction for 1 of the 50 test studies"):
        ladder.align(test, test.iloc[1:], "the metadata baseline")
    with pytest.raises(ValueError, match="labels the test studies differently"):
        ladder.align(test, test.assign(label=1 - test["label"]), "the metadata baseline")
