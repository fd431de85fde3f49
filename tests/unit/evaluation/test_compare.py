"""Candidate against champion (xray_tasks.evaluation.compare): what a reviewer signs off on."""

from __future__ import annotations

from support.registry import metrics_json

from xray_tasks.contracts import Metrics
from xray_tasks.evaluation import compare

GATE = {
    "passed": True,
    "checks": [
        {
            "name": "min_auroc",
            "value": 0.8,
            "limit": 0.6,
            "passed": True,
            "detail": "test AUROC 0.800 >= 0.600",
        },
        {"name": "champion_auroc", "value": 0.8, "limit": 0.74, "passed": True, "detail": "beats champion"},
    ],
    "context": {"champion": {"version": "000001", "auroc": 0.7, "basis": "rescored"}},
}


def _m(**kw) -> Metrics:
    return Metrics.from_dict(metrics_json(**kw), where="metrics.json")


def test_rows_give_both_values_and_the_delta_and_the_auroc_comes_from_the_candidates_split():
    rows = {r.name: r for r in compare.compare(_m(auroc=0.8, recall=0.96), _m(auroc=0.75, recall=0.9), 0.7)}
    assert rows["test AUROC"].champion == 0.7  # the gate's re-scored value, not the champion's own 0.75
    assert abs(rows["test AUROC"].delta - 0.1) < 1e-9
    assert abs(rows["sensitivity at the operating point"].delta - 0.06) < 1e-9
    assert not rows["threshold (chosen on val)"].higher_is_better
    first = compare.compare(_m(), None)
    assert all(r.champion is None and r.delta is None for r in first)


def test_same_split_means_equal_digests():
    assert compare.same_split(_m(test_digest="a"), _m(test_digest="a"))
    assert not compare.same_split(_m(test_digest="a"), _m(test_digest="b"))
    assert not compare.same_split(_m(), None)


def test_the_review_body_shows_metrics_deltas_checks_forced_keys_and_the_models_link():
    body = compare.review_markdown(
        "xray-triage",
        "000002",
        _m(auroc=0.8, test_digest="b"),
        GATE,
        "000001",
        _m(auroc=0.75, test_digest="a"),
        "http://af/plugin/models",
        forced={"by": "airflow:ana", "reason": "hotfix", "changed_keys": ["gate.min_auroc"]},
    )
    assert "| test AUROC | 0.800 | 0.700 | +0.100 |" in body
    assert "re-scored on the candidate's test split" in body
    assert "**pass** `min_auroc`: test AUROC 0.800 >= 0.600" in body
    assert "Gate checks (passed)" in body
    assert "**Forced publish** by airflow:ana: hotfix (gate keys changed: `gate.min_auroc`)" in body
    assert "[Models page](http://af/plugin/models)" in body
    first = compare.review_markdown(
        "m", "000001", _m(), {"passed": False, "checks": []}, None, None, "/plugin/models"
    )
    assert "no champion yet" in first and "did not pass" in first and "no gate checks recorded" in first
