"""The publishing gate: absolute floors for every candidate, a floor over the metadata baseline, a change
threshold against the champion.

Pure functions over ``contracts.Metrics`` (metrics.json) and paired comparisons, so a decision can be recomputed
and tested without a model.  Both comparisons are paired, on the candidate's own test studies: ``registry.rescore``
scores the champion there (re-scoring it when it was evaluated on another split) and recomputes the baseline's
margin from the run's predictions; the gate holds the low end of each paired interval to its limit.
"""

from __future__ import annotations

import math
from typing import Any

from xray_tasks.config import GatePolicy
from xray_tasks.contracts import (
    ChampionScore,
    GateCheck,
    GateContext,
    GateResult,
    Metrics,
    PairedComparison,
)

Check = GateCheck


def validate_metrics(metrics: Any, where: str) -> Metrics:
    """``metrics`` (a parsed metrics.json) read as the contract the gate and the consumer rely on.

    Raises:
        ContractError (a ValueError): naming the file and the first missing or wrong field.
    """
    return Metrics.from_dict(metrics, where=where)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def floor_checks(metrics: Metrics, policy: GatePolicy) -> list[Check]:
    """The absolute floors: AUROC, its interval against the benchmark, sensitivity, healthy studies cleared."""
    return [
        _auroc_floor(metrics, policy),
        _interval_floor(metrics, policy),
        _sensitivity_floor(metrics, policy),
        _cleared_floor(metrics, policy),
    ]


def _auroc_floor(metrics: Metrics, policy: GatePolicy) -> Check:
    auroc = _num(metrics.test.auroc)
    ok = auroc >= policy.min_auroc
    return Check(
        "min_auroc",
        auroc,
        policy.min_auroc,
        ok,
        f"test AUROC {auroc:.4f} {'>=' if ok else 'is below'} the floor {policy.min_auroc:.4f}",
    )


def _interval_floor(metrics: Metrics, policy: GatePolicy) -> Check:
    ci = metrics.test.auroc_ci
    low = _num(ci[0]) if ci else math.nan
    if policy.min_auroc_ci_low <= 0:
        return Check("min_auroc_ci_low", low, 0.0, True, "AUROC interval check switched off")
    ok = low > policy.min_auroc_ci_low
    return Check(
        "min_auroc_ci_low",
        low,
        policy.min_auroc_ci_low,
        ok,
        f"test AUROC interval low end {low:.4f} is above {policy.min_auroc_ci_low:.4f} (the always-unhealthy "
        f"benchmark's AUROC)"
        if ok
        else f"test AUROC interval low end {low:.4f} does not clear {policy.min_auroc_ci_low:.4f}, the always-unhealthy "
        f"benchmark's AUROC (no interval means evaluate.bootstrap was 0)",
    )


def _sensitivity_floor(metrics: Metrics, policy: GatePolicy) -> Check:
    target = _num(metrics.operating_point.target_sensitivity)
    sensitivity = _num(metrics.test.at_operating_point.recall)
    floor = target - policy.sensitivity_tolerance
    ok = sensitivity >= floor - 1e-12
    return Check(
        "sensitivity",
        sensitivity,
        floor,
        ok,
        f"test sensitivity at the operating point {sensitivity:.4f} is "
        f"{'within' if ok else 'more than'} {policy.sensitivity_tolerance:.3f} {'of' if ok else 'below'} "
        f"the target {target:.3f}",
    )


def _cleared_floor(metrics: Metrics, policy: GatePolicy) -> Check:
    cleared = _num(metrics.test.at_operating_point.healthy_cleared)
    ok = cleared > policy.min_healthy_cleared
    return Check(
        "healthy_cleared",
        cleared,
        policy.min_healthy_cleared,
        ok,
        f"share of healthy test studies cleared {cleared:.4f} {'>' if ok else '<='} {policy.min_healthy_cleared:.4f}"
        + ("" if ok else ": the model saves no reading over the always-unhealthy benchmark"),
    )


def champion_check(metrics: Metrics, champion: ChampionScore, policy: GatePolicy) -> Check:
    """The change threshold: the low end of the paired interval of (candidate - champion) AUROC on the same test
    studies must not fall below ``-max_auroc_drop``; the verdict says whether the candidate is better beyond noise
    (``better``), passes without being shown better (``no_worse``), or may lose more than allowed
    (``may_be_worse``).  Without a paired
    interval (no bootstrap) the point difference is held to the same limit."""
    drop = policy.max_auroc_drop
    where = (
        "on the same test split"
        if champion.basis == "same_split"
        else "re-scored on the candidate's test split"
    )
    paired = champion.paired
    if paired is None or not paired.delta_ci:
        auroc = _num(metrics.test.auroc)
        delta = auroc - champion.auroc
        ok = delta >= -drop - 1e-12
        return Check(
            "champion_auroc",
            auroc,
            champion.auroc - drop,
            ok,
            f"test AUROC {auroc:.4f} vs champion {champion.version}'s {champion.auroc:.4f} {where} "
            f"(change {delta:+.4f}, allowed drop {drop:.4f}; point difference: no paired interval)",
            ("better" if delta > 0 else "no_worse") if ok else "may_be_worse",
        )
    low, high = paired.delta_ci[0], paired.delta_ci[-1]
    ok = low >= -drop - 1e-12
    verdict = ("better" if low > 0 else "no_worse") if ok else "may_be_worse"
    said = {
        "better": "better than the champion beyond sampling noise (the interval's low end is above 0)",
        "no_worse": f"no worse than the champion, not shown better: the low end {low:+.4f} clears the allowed "
        f"drop -{drop:.4f} but the interval includes 0",
        "may_be_worse": f"not shown to be within the allowed drop of the champion: the low end {low:+.4f} "
        f"falls below -{drop:.4f}, so it may be worse by more than allowed",
    }[verdict]
    return Check(
        "champion_auroc",
        low,
        -drop,
        ok,
        f"test AUROC {paired.candidate_auroc:.4f} vs champion {champion.version}'s {paired.reference_auroc:.4f} "
        f"{where}: paired difference {paired.delta:+.4f} (95% interval {low:+.4f} to {high:+.4f}, "
        f"{paired.resamples} patient resamples, {paired.n} studies); {said}",
        verdict,
    )


def baseline_check(baseline: PairedComparison | None, policy: GatePolicy) -> Check | None:
    """The floor over the metadata-only baseline: the paired interval's low end must be above
    ``min_margin_over_baseline``.  Only reported (never failing) when ``require_baseline`` is off."""
    margin = policy.min_margin_over_baseline
    if baseline is None:
        if not policy.require_baseline:
            return None
        return Check(
            "baseline_margin",
            None,
            margin,
            False,
            "the gate requires the metadata baseline (gate.require_baseline) but the run carries no baseline "
            "predictions: run `xray-tasks baseline` on the workspace, then evaluate again",
            "not_better",
        )
    ci = baseline.delta_ci
    low = ci[0] if ci else baseline.delta
    better = low > margin
    shown = (
        f"paired difference {baseline.delta:+.4f} (95% interval {ci[0]:+.4f} to {ci[-1]:+.4f}, "
        f"{baseline.resamples} patient resamples)"
        if ci
        else f"point difference {baseline.delta:+.4f} (no interval: evaluate.bootstrap was 0)"
    )
    words = (
        f"beats the metadata baseline: its low end {low:+.4f} is above the margin {margin:.4f}"
        if better
        else f"does not beat the metadata baseline (follow-up, age, sex, view): the low end {low:+.4f} is not "
        f"above the margin {margin:.4f}, so the model has not been shown to learn more from the pixels than "
        "the chart already says"
    )
    return Check(
        "baseline_margin",
        low,
        margin,
        better or not policy.require_baseline,
        f"test AUROC {baseline.candidate_auroc:.4f} vs the metadata baseline's {baseline.reference_auroc:.4f} "
        f"on the same {baseline.n} studies: {shown}; {words}"
        + ("" if policy.require_baseline else " (reported only: gate.require_baseline is off)"),
        "better" if better else "not_better",
    )


def evaluate(
    metrics: Metrics,
    policy: GatePolicy,
    champion: ChampionScore | None,
    baseline: PairedComparison | None = None,
) -> GateResult:
    """Run every check; the first model (no champion) is held to the floors (and the baseline) only.

    ``baseline``: the candidate against the metadata baseline on its test studies (``rescore.baseline_comparison``).
    """
    checks = floor_checks(metrics, policy)
    floor = baseline_check(baseline, policy)
    if floor is not None:
        checks.append(floor)
    if champion is not None:
        checks.append(champion_check(metrics, champion, policy))
    test = metrics.test
    context = GateContext(
        champion=champion,
        test_n=test.n,
        test_digest=metrics.data.test_digest,
        beta=metrics.beta,
        f_beta_at_operating_point=test.at_operating_point.f_beta,
        benchmark_f_beta=test.benchmark_always_unhealthy.f_beta,
        baseline=baseline,
    )
    return GateResult(all(c.passed for c in checks), tuple(checks), context)
