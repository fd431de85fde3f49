"""Typed contracts: every file and summary the stages hand each other, as frozen dataclasses.

``docs/CONTRACTS.md`` lists their fields; a test keeps the two in step.  Readers build these types from what they
read (``Type.from_dict(data, where=uri)``) and never index raw keys.
"""

from xray_tasks.contracts.base import Contract, ContractError, describe
from xray_tasks.contracts.data import (
    ArchiveSummary,
    Examples,
    ManifestCounts,
    ManifestSummary,
    MemberCounts,
    Quarantined,
    QuarantineReport,
    ShardEntry,
    ShardFormat,
    ShardMarker,
    SplitCount,
    ValidationSummary,
)
from xray_tasks.contracts.evaluation import (
    Bootstrap,
    DataInfo,
    EvaluateSummary,
    Metrics,
    ModelInfo,
    OperatingPoint,
    Rates,
    Sweep,
    TestMetrics,
    ValMetrics,
)
from xray_tasks.contracts.registry import (
    ChampionScore,
    DecisionRecord,
    Forced,
    GateCheck,
    GateContext,
    GateResult,
    PublishSummary,
)
from xray_tasks.contracts.training import (
    BestEpoch,
    DeviceSettings,
    FeatureProvenance,
    FeaturesSummary,
    FinetuneSummary,
    HeadSummary,
    SplitFeatures,
)

__all__ = [
    "ArchiveSummary",
    "BestEpoch",
    "Bootstrap",
    "ChampionScore",
    "Contract",
    "ContractError",
    "DataInfo",
    "DecisionRecord",
    "DeviceSettings",
    "EvaluateSummary",
    "Examples",
    "FeatureProvenance",
    "FeaturesSummary",
    "FinetuneSummary",
    "Forced",
    "GateCheck",
    "GateContext",
    "GateResult",
    "HeadSummary",
    "ManifestCounts",
    "ManifestSummary",
    "MemberCounts",
    "Metrics",
    "ModelInfo",
    "OperatingPoint",
    "PublishSummary",
    "QuarantineReport",
    "Quarantined",
    "Rates",
    "ShardEntry",
    "ShardFormat",
    "ShardMarker",
    "SplitCount",
    "SplitFeatures",
    "Sweep",
    "TestMetrics",
    "ValMetrics",
    "ValidationSummary",
    "describe",
]
