"""Contracts of publishing: the gate's checks and result, the decision log record, the publish summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from xray_tasks.contracts.base import Contract, doc
from xray_tasks.contracts.evaluation import PairedComparison
from xray_tasks.contracts.training import RetrainOverride


@dataclass(frozen=True)
class GateCheck(Contract):
    """One gate criterion: the value seen, the limit it was held to, whether it passed, and why in words."""

    name: str = doc(
        "`min_auroc`, `min_auroc_ci_low`, `sensitivity`, `healthy_cleared`, `champion_auroc` or `baseline_margin`"
    )
    value: float | None = doc("the candidate's value")
    limit: float | None = doc("what it was held to")
    passed: bool = doc("whether it cleared the limit")
    detail: str = doc("the check in words")
    verdict: str | None = doc(
        "comparisons only: `better`, `no_worse` (passes, not shown better) or `may_be_worse` (fails) against "
        "the champion; "
        "`better` or `not_better` against the metadata baseline",
        default=None,
    )


@dataclass(frozen=True)
class ChampionScore(Contract):
    """The champion's test AUROC on the candidate's test split."""

    version: str = doc("the champion's version")
    auroc: float = doc("its test AUROC on the candidate's test split")
    basis: str = doc(
        "`same_split` (read from its metrics.json) or `rescored` (predicted on the candidate's split)"
    )
    paired: PairedComparison | None = doc(
        "candidate minus champion on the candidate's test studies, paired (null: no intervals, point rule)",
        default=None,
    )


@dataclass(frozen=True)
class GateContext(Contract):
    champion: ChampionScore | None = doc("what the candidate was compared with (null for a first model)")
    test_n: int = doc("test studies")
    test_digest: str = doc("digest of the test split")
    beta: float = doc("the F-beta weight of the run's evaluation")
    f_beta_at_operating_point: float = doc("the candidate's F-beta at its operating point")
    benchmark_f_beta: float = doc("the always-unhealthy benchmark's F-beta on the same studies")
    test_split_digest: str | None = doc(
        "digest of the test split's names, labels and patient ids (null in decisions written before it)",
        default=None,
    )
    recomputed: tuple[str, ...] = doc(
        "the metrics.json fields publish recomputed from the run's predictions and found equal", default=()
    )
    baseline: PairedComparison | None = doc(
        "candidate minus the metadata baseline, paired, recomputed from the run's predictions", default=None
    )


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

    decision: str = doc(
        "`approved`, `rejected`, `forced`, `conflict`, `candidate` (staged, awaiting sign-off), "
        "`rejected_by_reviewer`, `approval_timed_out`, `rolled_back`"
    )
    reasons: tuple[str, ...] = doc("why the gate failed (empty when it passed)")
    gate: GateResult | None = doc("the full gate result")
    policy: dict[str, Any] = doc("the gate policy applied (`config.GatePolicy`)")
    publish_id: str = doc("the publish attempt")
    decided_at: str = doc("UTC time, ISO 8601")
    run: str = doc("the run folder that was gated")
    version: str = doc("the version the decision is about")
    champion_before: str | None = doc("the champion when the decision was taken")
    forced: Forced | None = doc("who forced it and why, for `forced`")
    actor: str | None = doc(
        "who took the decision (reviewer, operator, or the publishing user)", default=None
    )
    comment: str | None = doc("the reviewer's comment or the operator's reason, in their words", default=None)
    changed_keys: tuple[str, ...] = doc(
        "gate policy keys this run changed against the deployment's policy (a `forced` publish)", default=()
    )
    key_id: str | None = doc(
        "id of the key the version's manifest is signed with (null: unsigned)", default=None
    )
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
    decision: str = doc("`approved`, `rejected`, `forced`, `candidate` (with `--stage`) or `unchanged`")
    promoted: bool = doc("whether the champion pointer moved to this version")
    reasons: tuple[str, ...] = doc("why the gate failed")
    version: str = doc("the version the run is published as")
    champion: str | None = doc("the champion after")
    uploaded_bytes: int = doc("bytes uploaded")
    decision_record: str | None = doc("file name of the decision log entry (null for `unchanged`)")
    key_id: str | None = doc("id of the key the version is signed with (null: unsigned)", default=None)
    changed_keys: tuple[str, ...] = doc("gate keys changed against the deployment's policy", default=())


@dataclass(frozen=True)
class PromotionSummary(Contract):
    """What ``xray-tasks models promote`` and ``models reject`` print."""

    model_name: str = doc("the registry model")
    version: str = doc("the version decided on")
    previous_champion: str | None = doc("the champion before")
    champion: str | None = doc("the champion after")
    decision: str = doc(
        "`approved`, `rolled_back`, `forced` (promote), `unchanged` (it already was the champion) or "
        "`rejected_by_reviewer`, `approval_timed_out` (reject)"
    )
    promoted: bool = doc("whether the champion pointer moved to this version")
    actor: str = doc("who decided")
    decision_record: str | None = doc("file name of the decision log entry (null for `unchanged`)")
    key_id: str | None = doc("the key the version is signed with (null: unsigned)", default=None)
