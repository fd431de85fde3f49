"""Contracts of publishing: the gate's checks and result, the decision log record, the publish summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from xray_tasks.contracts.base import Contract, doc
from xray_tasks.contracts.training import RetrainOverride


@dataclass(frozen=True)
class GateCheck(Contract):
    """One gate criterion: the value seen, the limit it was held to, whether it passed, and why in words."""

    name: str = doc("`min_auroc`, `min_auroc_ci_low`, `sensitivity`, `healthy_cleared` or `champion_auroc`")
    value: float | None = doc("the candidate's value")
    limit: float | None = doc("what it was held to")
    passed: bool = doc("whether it cleared the limit")
    detail: str = doc("the check in words")


@dataclass(frozen=True)
class ChampionScore(Contract):
    """The champion's test AUROC on the candidate's test split."""

    version: str = doc("the champion's version")
    auroc: float = doc("its test AUROC on the candidate's test split")
    basis: str = doc(
        "`same_split` (read from its metrics.json) or `rescored` (predicted on the candidate's split)"
    )


@dataclass(frozen=True)
class GateContext(Contract):
    champion: ChampionScore | None = doc("what the candidate was compared with (null for a first model)")
    test_n: int = doc("test studies")
    test_digest: str = doc("digest of the test split")
    beta: float = doc("the F-beta weight of the run's evaluation")
    f_beta_at_operating_point: float = doc("the candidate's F-beta at its operating point")
    benchmark_f_beta: float = doc("the always-unhealthy benchmark's F-beta on the same studies")


@dataclass(frozen=True)
class GateResult(Contract):
    """The gate's verdict on a candidate."""

    passed: bool = doc("every check passed")
    checks: tuple[GateCheck, ...] = doc("each criterion")
    context: GateContext = doc("what the decision was taken on")

    @property
    def reasons(self) -> list[str]:
        """Why it failed (empty when it passed)."""
        return [c.detail for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reasons": self.reasons}


@dataclass(frozen=True)
class Forced(Contract):
    by: str = doc("who forced the publish")
    reason: str = doc("why")


@dataclass(frozen=True)
class DecisionRecord(Contract):
    """``<version>/decisions/<time>-<publish>-<decision>.json``: one immutable entry of a version's decision log.

    Records written before schemas were numbered read as schema 0.
    """

    SCHEMA: ClassVar[int] = 1
    OLDEST_SCHEMA: ClassVar[int] = 0

    decision: str = doc("`approved`, `rejected`, `forced`, `conflict`")
    reasons: tuple[str, ...] = doc("why the gate failed (empty when it passed)")
    gate: GateResult | None = doc("the full gate result")
    policy: dict[str, Any] = doc("the gate policy applied (`config.GatePolicy`)")
    publish_id: str = doc("the publish attempt")
    decided_at: str = doc("UTC time, ISO 8601")
    run: str = doc("the run folder that was gated")
    version: str = doc("the version the decision is about")
    champion_before: str | None = doc("the champion when the decision was taken")
    forced: Forced | None = doc("who forced it and why, for `forced`")
    retrain: RetrainOverride | None = doc(
        "who forced training an unchanged fingerprint (`force_retrain`) and why", default=None
    )

    @classmethod
    def upgrade(cls, data: dict[str, Any], schema: int) -> dict[str, Any]:
        gate = data.get("gate")
        if isinstance(gate, dict) and isinstance(gate.get("context"), dict):  # schema 0 named the F score f3
            context = dict(gate["context"])
            context.setdefault("beta", 3.0)
            context.setdefault("f_beta_at_operating_point", context.get("f3_at_operating_point"))
            context.setdefault("benchmark_f_beta", context.get("benchmark_always_unhealthy_f3"))
            data = {**data, "gate": {**gate, "context": context}}
        return data


@dataclass(frozen=True)
class PublishSummary(Contract):
    """What ``xray-tasks publish`` prints (the training DAG's XCom of gate_and_publish)."""

    model_name: str = doc("the registry model")
    registry: str = doc("the registry root")
    run_dir: str = doc("the run that was gated")
    publish_id: str = doc("this publish attempt")
    previous_champion: str | None = doc("the champion before")
    reused: bool = doc("the run was already published complete: its version was re-gated, nothing uploaded")
    decision: str = doc("`approved`, `rejected`, `forced` or `unchanged`")
    promoted: bool = doc("whether the champion pointer moved to this version")
    reasons: tuple[str, ...] = doc("why the gate failed")
    version: str = doc("the version the run is published as")
    champion: str | None = doc("the champion after")
    uploaded_bytes: int = doc("bytes uploaded")
    decision_record: str | None = doc("file name of the decision log entry (null for `unchanged`)")
