"""The gate's paired comparisons, through publish: a candidate that beats the champion by less than the noise
passes as "no worse" (not "better"), the same candidate is refused when no loss is allowed (the point rule
would have passed it), and a candidate that does not beat the metadata baseline is rejected with that reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.registry import metrics_doc, write_run

from xray_tasks.config import GatePolicy
from xray_tasks.contracts import ChampionScore, PairedComparison
from xray_tasks.registry import gate, publish, read_decisions

NAME = "xray-triage"
N, RESAMPLES = 600, 300
FLOORS_OFF = {"min_auroc": 0.0, "min_auroc_ci_low": 0.0}
LABELS = np.random.default_rng(0).integers(0, 2, N).astype(np.int8)
SHARED = np.random.default_rng(1).normal(size=N)  # what every model sees in a study


def table(probability: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_index": [f"{i:08d}_000.png" for i in range(N)],
            "patient_id": np.arange(N) // 2,
            "probability": 1 / (1 + np.exp(-probability)),
            "label": LABELS,
        }
    )


def scores(signal: float, seed: int, noise: float = 0.3) -> np.ndarray:
    return SHARED + signal * LABELS + np.random.default_rng(seed).normal(0, noise, N)


def evaluated_run(path, test: pd.DataFrame, baseline: pd.DataFrame | None = None, seed: int = 0) -> str:
    """A run directory whose metrics.json is computed from its predictions (``test``; validation is the same
    scores on other patients), bootstrapped with ``RESAMPLES`` patient draws."""
    val = test.assign(
        image_index=[f"v{name}" for name in test["image_index"]], patient_id=test["patient_id"] + N
    )
    write_run(path, seed=seed, baseline=False, bootstrap=RESAMPLES, predictions={"val": val, "test": test})
    if baseline is not None:
        baseline.to_parquet(path / "predictions" / "baseline-test.parquet", index=False)
    return str(path)


@pytest.fixture
def champion(tmp_path):
    """A registry whose champion scores ``scores(1.0, seed=2)`` on the test studies."""
    registry = str(tmp_path / "registry")
    run = evaluated_run(tmp_path / "champion", table(scores(1.0, 2)), seed=1)
    assert publish(run, registry, policy=GatePolicy(**FLOORS_OFF)).promoted
    return registry


# the champion's scores, a hair better on average, with noise of their own: +0.0074, interval [-0.0029, +0.0165]
SLIGHTLY = scores(1.0, 2) + np.random.default_rng(13).normal(0, 0.25, N) + 0.08 * LABELS


def champion_check(registry: str, version: str) -> dict:
    record = read_decisions(registry, NAME, version)[0]
    return next(c for c in record["gate"]["checks"] if c["name"] == "champion_auroc") | {"record": record}


def test_a_gain_smaller_than_the_noise_passes_as_no_worse_not_better(champion, tmp_path):
    slightly = table(SLIGHTLY)
    summary = publish(
        evaluated_run(tmp_path / "cand", slightly, seed=2), champion, policy=GatePolicy(**FLOORS_OFF)
    )
    assert (summary.decision, summary.promoted, summary.reasons) == ("approved", True, ())
    check = champion_check(champion, summary.version)
    paired = check["record"]["gate"]["context"]["champion"]["paired"]
    low, high = paired["delta_ci"]
    assert 0 < paired["delta"] < high and -0.01 <= low <= 0  # a point gain, inside the noise
    assert check["verdict"] == "no_worse" and check["passed"] and check["value"] == low
    assert "no worse than the champion, not shown better" in check["detail"]
    assert paired["resamples"] == RESAMPLES and paired["n"] == N and paired["reference"] == "champion 000001"


def test_a_point_gain_inside_the_noise_is_refused_when_no_loss_is_allowed(champion, tmp_path):
    candidate = evaluated_run(tmp_path / "cand", table(SLIGHTLY), seed=2)
    strict = GatePolicy(**FLOORS_OFF, max_auroc_drop=0.0)  # no loss allowed: the point rule would pass it
    summary = publish(candidate, champion, policy=strict)
    check = champion_check(champion, summary.version)
    paired = check["record"]["gate"]["context"]["champion"]["paired"]
    assert paired["delta"] > 0 > paired["delta_ci"][0]
    assert summary.decision == "rejected" and check["verdict"] == "may_be_worse"
    assert "not shown to be within the allowed drop of the champion" in summary.reasons[0]


def test_a_clear_gain_is_better(champion, tmp_path):
    clearly = table(scores(1.0, 2) + 0.6 * LABELS)
    summary = publish(
        evaluated_run(tmp_path / "cand", clearly, seed=2), champion, policy=GatePolicy(**FLOORS_OFF)
    )
    check = champion_check(champion, summary.version)
    assert summary.promoted and check["verdict"] == "better" and check["value"] > 0


def test_a_candidate_that_does_not_beat_the_metadata_baseline_is_rejected_with_that_reason(tmp_path):
    registry = str(tmp_path / "registry")
    model = table(scores(1.0, 2))
    baseline = table(scores(1.0, 2) + np.random.default_rng(5).normal(0, 0.05, N))  # as good as the model
    run = evaluated_run(tmp_path / "cand", model, baseline)
    summary = publish(run, registry, policy=GatePolicy(**FLOORS_OFF, require_baseline=True))
    assert (summary.decision, summary.champion) == ("rejected", None)
    assert len(summary.reasons) == 1 and "does not beat the metadata baseline" in summary.reasons[0]
    context = read_decisions(registry, NAME, summary.version)[0]["gate"]["context"]["baseline"]
    assert context["reference"] == "metadata baseline" and context["delta_ci"][0] <= 0
    # the same run clears the floor when the baseline is clearly weaker
    weak = table(scores(0.3, 6))
    again = publish(
        evaluated_run(tmp_path / "cand2", model, weak, seed=3),
        registry,
        policy=GatePolicy(**FLOORS_OFF, require_baseline=True),
    )
    assert again.promoted, again.reasons


def paired(low: float, high: float, delta: float = 0.0) -> PairedComparison:
    return PairedComparison("metadata baseline", 0.7 + delta, 0.7, delta, (low, high), 100, 400)


def test_the_baseline_floor_without_predictions_and_when_switched_off():
    doc = metrics_doc()
    required = GatePolicy(require_baseline=True)
    result = gate.evaluate(doc, required, None, None)
    assert not result.passed and "carries no baseline predictions" in result.reasons[0]
    assert gate.evaluate(doc, GatePolicy(), None, None).passed  # off: no check at all
    reported = gate.evaluate(doc, GatePolicy(), None, paired(-0.02, 0.01))
    check = reported.checks[-1]
    assert reported.passed and check.verdict == "not_better" and "reported only" in check.detail
    margin = GatePolicy(require_baseline=True, min_margin_over_baseline=0.02)
    assert not gate.evaluate(doc, margin, None, paired(0.01, 0.05, 0.03)).passed  # above 0, not above 0.02
    assert gate.evaluate(doc, margin, None, paired(0.021, 0.05, 0.03)).passed


def test_the_point_rule_still_holds_without_a_paired_interval():
    doc = metrics_doc(auroc=0.80)
    champion = ChampionScore("000001", 0.805, "same_split")  # no paired: the candidate had no bootstrap
    check = gate.evaluate(doc, GatePolicy(), champion).checks[-1]
    assert check.passed and check.verdict == "no_worse" and "point difference" in check.detail
