"""The deployment's policies: what a candidate must clear (the gate), who signs it off (approval), and the drift
limits scoring is held to.

They are sections of :class:`xray_tasks.config.PipelineConfig` like any other, but they belong to the deployment,
not to a run: a run that changes them is a forced publish (``xray_tasks.governance``).
"""

from __future__ import annotations

from dataclasses import dataclass

from xray_tasks.errors import BadInput


def check_choice(where: str, value: str, allowed: tuple[str, ...]) -> None:
    """:class:`BadInput` naming ``where`` when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise BadInput(f"{where} must be one of {list(allowed)}, got {value!r}")


@dataclass(frozen=True)
class GatePolicy:
    """What a candidate must clear to become champion (``xray_tasks.registry.gate``).

    Floors apply to every candidate; the change threshold only when there is a champion, compared on the
    candidate's test split (the champion is re-scored there when it was evaluated on another one).
    """

    min_auroc: float = 0.6
    """Test AUROC floor."""
    min_auroc_ci_low: float = 0.5
    """The low end of the test AUROC's bootstrap interval must be above this.  0.5 is what the always-unhealthy
    benchmark (and chance) scores, so the default asks for a model that beats it beyond sampling noise; 0 skips."""
    sensitivity_tolerance: float = 0.03
    """Test sensitivity at the operating point may fall at most this far below the target."""
    min_healthy_cleared: float = 0.0
    """Share of healthy test studies cleared at the operating point must be strictly above this (the benchmark
    clears none)."""
    max_auroc_drop: float = 0.01
    """AUROC a candidate may lose against the champion on the same test images: the low end of the paired
    patient-bootstrap interval of (candidate - champion) must not fall below ``-max_auroc_drop``.  A
    non-inferiority margin: 0.01 is about 2.5 standard errors of one AUROC on the full NIH test split.  Without
    intervals (``evaluate.bootstrap`` 0) the point difference is held to it instead."""
    require_baseline: bool = False
    """Hold the candidate to the metadata-only baseline (``xray-tasks baseline``): the low end of the paired
    interval of (candidate - baseline) must be above ``min_margin_over_baseline``.  On in the ``full`` profile."""
    min_margin_over_baseline: float = 0.0
    """The AUROC margin over the metadata baseline the paired interval's low end must exceed."""

    def __post_init__(self) -> None:
        for name in (
            "min_auroc",
            "min_auroc_ci_low",
            "sensitivity_tolerance",
            "min_healthy_cleared",
            "max_auroc_drop",
            "min_margin_over_baseline",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise BadInput(f"gate.{name} must be in [0, 1], got {value}")


APPROVAL_POLICIES = ("required", "auto")


@dataclass(frozen=True)
class ApprovalPolicy:
    """Who signs a candidate off before it becomes champion (the training DAG's ``approval`` task)."""

    policy: str = "required"
    """``required``: a reviewer approves or rejects the staged candidate in Airflow (human in the loop); ``auto``:
    a candidate that cleared the gate is promoted with no one asked (profile ``demo``)."""
    timeout_hours: float = 72.0
    """How long a candidate waits for a reviewer; then it is recorded as ``approval_timed_out``, not promoted."""

    def __post_init__(self) -> None:
        check_choice("approval.policy", self.policy, APPROVAL_POLICIES)
        if not 0.0 < self.timeout_hours <= 24 * 90:
            raise BadInput(f"approval.timeout_hours must be in (0, 2160], got {self.timeout_hours}")


@dataclass(frozen=True)
class DriftConfig:
    """Limits of the drift check every scoring run makes against the champion's reference profile
    (``xray_tasks.evaluation.drift``)."""

    min_batch: int = 50
    """Fewer scored images than this are reported as too small to judge, never as drift."""
    psi_limit: float = 0.25
    """PSI above this, on any binned distribution (scores, image statistics, sizes, metadata mix), is drift
    (0.1-0.25 is usually read as a moderate shift, above 0.25 as a major one)."""
    ks_limit: float = 0.25
    """Kolmogorov-Smirnov D of P(unhealthy) above this is drift, when also significant at ``ks_alpha``."""
    ks_alpha: float = 0.01
    flagged_share_limit: float = 0.2
    """The share flagged may differ at most this much (absolute) from the reference's share at the same
    operating point."""

    def __post_init__(self) -> None:
        if self.min_batch < 1:
            raise BadInput(f"drift.min_batch must be >= 1, got {self.min_batch}")
        for name in ("psi_limit", "ks_limit", "ks_alpha", "flagged_share_limit"):
            if not getattr(self, name) > 0:
                raise BadInput(f"drift.{name} must be > 0, got {getattr(self, name)}")
        if self.ks_limit > 1 or self.ks_alpha >= 1 or self.flagged_share_limit > 1:
            raise BadInput("drift.ks_limit and drift.flagged_share_limit must be <= 1, drift.ks_alpha < 1")
