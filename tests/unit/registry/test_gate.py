"""The publishing gate: floors, the change threshold against the champion, and the policy's own validation."""

from __future__ import annotations

import math

import pytest
from support.registry import metrics_doc, metrics_json

from xray_tasks.config import GatePolicy, PipelineConfig, override
from xray_tasks.registry import gate
from xray_tasks.registry.gate import ChampionScore

POLICY = GatePolicy()


def failed(result: gate.GateResult) -> list[str]:
    return [c.name for c in result.checks if not c.passed]


def test_a_good_first_model_passes_the_floors_alone():
    result = gate.evaluate(metrics_doc(), POLICY, champion=None)
    assert result.passed and result.reasons == []
    assert [c.name for c in result.checks] == [
        "min_auroc",
        "min_auroc_ci_low",
        "sensitivity",
        "healthy_cleared",
    ]
    assert result.context.champion is None


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"auroc": 0.55}, "min_auroc"),
        ({"auroc": math.nan}, "min_auroc"),
        ({"ci": (0.49, 0.7)}, "min_auroc_ci_low"),
        ({"ci": None}, "min_auroc_ci_low"),
        ({"recall": 0.91, "target": 0.95}, "sensitivity"),
        ({"healthy_cleared": 0.0}, "healthy_cleared"),
    ],
)
def test_each_floor_rejects_on_its_own(change, check):
    result = gate.evaluate(metrics_doc(**change), POLICY, champion=None)
    assert not result.passed
    assert failed(result) == [check]
    assert len(result.reasons) == 1


def test_sensitivity_within_the_tolerance_passes():
    result = gate.evaluate(metrics_doc(recall=0.925, target=0.95), POLICY, champion=None)
    assert "sensitivity" not in failed(result)


def test_healthy_cleared_reason_names_the_benchmark():
    result = gate.evaluate(metrics_doc(healthy_cleared=0.0), POLICY, champion=None)
    assert "always-unhealthy benchmark" in result.reasons[0]


def test_a_worse_candidate_fails_against_the_champion():
    champion = ChampionScore("000003", 0.82, "same_split")
    result = gate.evaluate(metrics_doc(auroc=0.80), POLICY, champion)
    assert failed(result) == ["champion_auroc"]
    assert "000003" in result.reasons[0] and "-0.0200" in result.reasons[0]


def test_an_equal_or_better_candidate_passes_and_the_drop_allowance_is_honoured():
    assert gate.evaluate(metrics_doc(auroc=0.80), POLICY, ChampionScore("000001", 0.80, "same_split")).passed
    assert gate.evaluate(metrics_doc(auroc=0.85), POLICY, ChampionScore("000001", 0.80, "rescored")).passed
    lenient = GatePolicy(max_auroc_drop=0.03)
    assert gate.evaluate(metrics_doc(auroc=0.80), lenient, ChampionScore("000001", 0.82, "same_split")).passed


def test_rescored_comparison_says_so():
    result = gate.evaluate(metrics_doc(auroc=0.7), POLICY, ChampionScore("000002", 0.9, "rescored"))
    assert "re-scored on the candidate's test split" in result.reasons[0]


def test_switching_the_interval_check_off():
    result = gate.evaluate(metrics_doc(ci=None), GatePolicy(min_auroc_ci_low=0.0), champion=None)
    assert result.passed


def test_result_is_json_shaped():
    data = gate.evaluate(metrics_doc(auroc=0.5), POLICY, None).to_dict()
    assert data["passed"] is False and data["reasons"] and data["checks"][0]["name"] == "min_auroc"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.update(schema=3), "schema 1..2"),
        (lambda m: m.pop("operating_point"), "operating_point"),
        (lambda m: m["test"].pop("auroc"), "auroc"),
    ],
)
def test_metrics_that_do_not_match_the_contract_are_refused(mutate, message):
    metrics = metrics_json()
    mutate(metrics)
    with pytest.raises(ValueError, match=message):
        gate.validate_metrics(metrics, "run/metrics.json")


def test_policy_values_are_validated_and_overridable():
    with pytest.raises(ValueError, match="gate.max_auroc_drop"):
        GatePolicy(max_auroc_drop=-0.1)
    cfg = override(PipelineConfig(), {"gate.min_auroc": "0.7"})
    assert cfg.gate.min_auroc == 0.7


def test_the_gate_context_carries_the_f_score_whatever_beta_was():
    # A run evaluated with beta = 2 writes f_beta with beta 2; schema 1 named it "f2", and the context read "f3".
    from xray_tasks.contracts import Metrics
    from xray_tasks.evaluation import metrics as m

    doc = metrics_json()
    f2 = m.rates({"tn": 3, "fp": 7, "fn": 1, "tp": 19}, beta=2)
    doc["test"]["at_operating_point"] = {**f2.to_dict(), "recall": 0.95, "healthy_cleared": 0.3}
    doc["test"]["benchmark_always_unhealthy"] = m.rates(
        {"tn": 0, "fp": 10, "fn": 0, "tp": 20}, beta=2
    ).to_dict()
    context = gate.evaluate(Metrics.from_dict(doc, "metrics.json"), POLICY, champion=None).context
    assert context.beta == 2.0 and context.f_beta_at_operating_point == f2.f_beta > 0
    assert context.benchmark_f_beta == pytest.approx(5 * 20 / (5 * 20 + 10))
    # The schema-1 file of such a run (key "f2") reads the same way.
    old = metrics_json()
    old["test"]["at_operating_point"] = {
        k: v for k, v in doc["test"]["at_operating_point"].items() if k not in ("beta", "f_beta")
    } | {"f2": f2.f_beta}
    legacy = gate.evaluate(Metrics.from_dict(old, "metrics.json"), POLICY, None).context
    assert (legacy.beta, legacy.f_beta_at_operating_point) == (2.0, f2.f_beta)
