"""The publishing gate: absolute floors for every candidate, a change threshold against the champion.

Pure functions over ``contracts.Metrics`` (metrics.json), so a decision can be recomputed and tested without a
model.  The champion comparison takes the champion's AUROC *on the candidate's test split*: ``registry.rescore``
provides it when the two were evaluated on different splits.
"""

from __future__ import annotations

import math
from typing import Any

from xray_tasks.config import GatePolicy
from xray_tasks.contracts import ChampionScore, GateCheck, GateContext, GateResult, Metrics

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
    """The change threshold: the candidate may lose at most ``max_auroc_drop`` AUROC on the same test images."""
    auroc = _num(metrics.test.auroc)
    delta = auroc - champion.auroc
    ok = delta >= -policy.max_auroc_drop - 1e-12
    where = (
        "on the same test split"
        if champion.basis == "same_split"
        else "re-scored on the candidate's test split"
    )
    return Check(
        "champion_auroc",
        auroc,
        champion.auroc - policy.max_auroc_drop,
        ok,
        f"test AUROC {auroc:.4f} vs champion {champion.version}'s {champion.auroc:.4f} {where} "
        f"(change {delta:+.4f}, allowed drop {policy.max_auroc_drop:.4f})",
    )


def evaluate(metrics: Metrics, policy: GatePolicy, champion: ChampionScore | None) -> GateResult:
    """Run every check; the first model (no champion) is held to the floors only."""
    checks = floor_checks(metrics, policy)
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
    )
    return GateResult(all(c.passed for c in checks), tuple(checks), context)
