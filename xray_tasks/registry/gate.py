"""The publishing gate: absolute floors for every candidate, a change threshold against the champion.

Pure functions over ``metrics.json`` dicts (schema 1, docs/CONTRACTS.md), so a decision can be recomputed and
tested without a model.  The champion comparison takes the champion's AUROC *on the candidate's test split*:
``registry.rescore`` provides it when the two were evaluated on different splits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from xray_tasks.config import GatePolicy
from xray_tasks.errors import BadInput

METRICS_SCHEMA = 1
_REQUIRED = {
    "model": ("input_size", "stored_image_size"),
    "data": ("test_digest",),
    "operating_point": ("threshold", "target_sensitivity"),
    "test": ("n", "auroc", "at_operating_point"),
}


@dataclass(frozen=True)
class Check:
    """One gate criterion: the value seen, the limit it was held to, whether it passed, and why in words."""

    name: str
    value: float | None
    limit: float | None
    passed: bool
    detail: str


@dataclass(frozen=True)
class ChampionScore:
    """The champion's test AUROC on the candidate's test split; ``basis`` says how it was obtained."""

    version: str
    auroc: float
    basis: str
    """``same_split`` (read from the champion's metrics.json) or ``rescored`` (predicted on the candidate's split)."""


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: tuple[Check, ...]
    context: dict[str, Any]

    @property
    def reasons(self) -> list[str]:
        """Why it failed (empty when it passed)."""
        return [c.detail for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks],
                "context": self.context}


def validate_metrics(metrics: Any, where: str) -> dict[str, Any]:
    """Return ``metrics`` if it is a schema-1 metrics.json with what the gate and the consumer read.

    Raises:
        ValueError: naming the file and the first missing or wrong field.
    """
    if not isinstance(metrics, dict) or metrics.get("schema") != METRICS_SCHEMA:
        got = metrics.get("schema") if isinstance(metrics, dict) else type(metrics).__name__
        raise BadInput(f"{where}: expected metrics.json schema {METRICS_SCHEMA}, got {got!r}")
    for section, keys in _REQUIRED.items():
        block = metrics.get(section)
        missing = [k for k in keys if k not in block] if isinstance(block, dict) else list(keys)
        if missing:
            raise BadInput(f"{where}: metrics.json section {section!r} lacks {missing}")
    return metrics


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def floor_checks(metrics: dict[str, Any], policy: GatePolicy) -> list[Check]:
    """The absolute floors: AUROC, its interval against the benchmark, sensitivity, healthy studies cleared."""
    test, op = metrics["test"], metrics["operating_point"]
    at_op = test["at_operating_point"]
    auroc = _num(test.get("auroc"))
    checks = [Check("min_auroc", auroc, policy.min_auroc, auroc >= policy.min_auroc,
                    f"test AUROC {auroc:.4f} {'>=' if auroc >= policy.min_auroc else 'is below'} the floor "
                    f"{policy.min_auroc:.4f}")]

    ci = test.get("auroc_ci")
    low = _num(ci[0]) if isinstance(ci, list | tuple) and ci else math.nan
    if policy.min_auroc_ci_low <= 0:
        checks.append(Check("min_auroc_ci_low", low, 0.0, True, "AUROC interval check switched off"))
    else:
        ok = low > policy.min_auroc_ci_low
        checks.append(Check(
            "min_auroc_ci_low", low, policy.min_auroc_ci_low, ok,
            f"test AUROC interval low end {low:.4f} is above {policy.min_auroc_ci_low:.4f} (the always-unhealthy "
            f"benchmark's AUROC)" if ok else
            f"test AUROC interval low end {low:.4f} does not clear {policy.min_auroc_ci_low:.4f}, the always-unhealthy "
            f"benchmark's AUROC (no interval means evaluate.bootstrap was 0)",
        ))

    target = _num(op.get("target_sensitivity"))
    sensitivity = _num(at_op.get("recall"))
    floor = target - policy.sensitivity_tolerance
    ok = sensitivity >= floor - 1e-12
    checks.append(Check(
        "sensitivity", sensitivity, floor, ok,
        f"test sensitivity at the operating point {sensitivity:.4f} is "
        f"{'within' if ok else 'more than'} {policy.sensitivity_tolerance:.3f} {'of' if ok else 'below'} "
        f"the target {target:.3f}",
    ))

    cleared = _num(at_op.get("healthy_cleared"))
    ok = cleared > policy.min_healthy_cleared
    checks.append(Check(
        "healthy_cleared", cleared, policy.min_healthy_cleared, ok,
        f"share of healthy test studies cleared {cleared:.4f} {'>' if ok else '<='} {policy.min_healthy_cleared:.4f}"
        + ("" if ok else ": the model saves no reading over the always-unhealthy benchmark"),
    ))
    return checks


def champion_check(metrics: dict[str, Any], champion: ChampionScore, policy: GatePolicy) -> Check:
    """The change threshold: the candidate may lose at most ``max_auroc_drop`` AUROC on the same test images."""
    auroc = _num(metrics["test"].get("auroc"))
    delta = auroc - champion.auroc
    ok = delta >= -policy.max_auroc_drop - 1e-12
    where = "on the same test split" if champion.basis == "same_split" else "re-scored on the candidate's test split"
    return Check(
        "champion_auroc", auroc, champion.auroc - policy.max_auroc_drop, ok,
        f"test AUROC {auroc:.4f} vs champion {champion.version}'s {champion.auroc:.4f} {where} "
        f"(change {delta:+.4f}, allowed drop {policy.max_auroc_drop:.4f})",
    )


def evaluate(metrics: dict[str, Any], policy: GatePolicy, champion: ChampionScore | None) -> GateResult:
    """Run every check; the first model (no champion) is held to the floors only."""
    validate_metrics(metrics, "candidate")
    checks = floor_checks(metrics, policy)
    if champion is not None:
        checks.append(champion_check(metrics, champion, policy))
    test = metrics["test"]
    benchmark = test.get("benchmark_always_unhealthy") or {}
    context = {
        "champion": asdict(champion) if champion else None,
        "test_n": test.get("n"),
        "test_digest": metrics["data"]["test_digest"],
        "f3_at_operating_point": test["at_operating_point"].get("f3"),
        "benchmark_always_unhealthy_f3": benchmark.get("f3"),
    }
    return GateResult(all(c.passed for c in checks), tuple(checks), context)
