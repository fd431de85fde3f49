"""Typed contracts: every file and summary the stages hand each other, as frozen dataclasses.

``docs/CONTRACTS.md`` lists their fields; a test keeps the two in step.  Readers build these types from what they
read (``Type.from_dict(data, where=uri)``) and never index raw keys.
"""

import inspect

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
    SourceCheck,
    SourceObject,
    SourceState,
    SplitCount,
    ValidationSummary,
)
from xray_tasks.contracts.evaluation import (
    BaselineSummary,
    Bootstrap,
    DataInfo,
    EvaluateSummary,
    Ladder,
    LadderRung,
    Metrics,
    ModelInfo,
    OperatingPoint,
    PairedComparison,
    Rates,
    Sweep,
    TestMetrics,
    ValMetrics,
)
from xray_tasks.contracts.monitoring import (
    Distribution,
    DriftCheck,
    DriftReport,
    Histogram,
    Outcome,
    Profile,
)
from xray_tasks.contracts.registry import (
    ChampionScore,
    DecisionRecord,
    Forced,
    GateCheck,
    GateContext,
    GateResult,
    PromotionSummary,
    PublishSummary,
)
from xray_tasks.contracts.training import (
    BestEpoch,
    DeviceSettings,
    FeatureProvenance,
    FeaturesSummary,
    FinetuneSummary,
    Fingerprint,
    HeadSummary,
    RetrainOverride,
    SplitFeatures,
)

__all__ = [
    "ArchiveSummary",
    "BaselineSummary",
    "BestEpoch",
    "Bootstrap",
    "ChampionScore",
    "Contract",
    "ContractError",
    "DataInfo",
    "DecisionRecord",
    "DeviceSettings",
    "Distribution",
    "DriftCheck",
    "DriftReport",
    "EvaluateSummary",
    "Examples",
    "FeatureProvenance",
    "FeaturesSummary",
    "FinetuneSummary",
    "Fingerprint",
    "Forced",
    "GateCheck",
    "GateContext",
    "GateResult",
    "HeadSummary",
    "Histogram",
    "Ladder",
    "LadderRung",
    "ManifestCounts",
    "ManifestSummary",
    "MemberCounts",
    "Metrics",
    "ModelInfo",
    "OperatingPoint",
    "Outcome",
    "PairedComparison",
    "Profile",
    "PromotionSummary",
    "PublishSummary",
    "QuarantineReport",
    "Quarantined",
    "Rates",
    "RetrainOverride",
    "ShardEntry",
    "ShardFormat",
    "ShardMarker",
    "SourceCheck",
    "SourceObject",
    "SourceState",
    "SplitCount",
    "SplitFeatures",
    "Sweep",
    "TestMetrics",
    "ValMetrics",
    "ValidationSummary",
    "describe",
    "documented",
    "table",
]


def documented() -> list[type[Contract]]:
    """Every contract by phase (data, training, evaluation, registry, monitoring), each module's in definition order."""
    from xray_tasks.contracts import data, evaluation, monitoring, registry, training

    return [
        obj
        for module in (data, training, evaluation, registry, monitoring)
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Contract) and obj.__module__ == module.__name__
    ]


def table(cls: type[Contract]) -> str:
    """The Markdown section of one contract: heading, schema, fields (the test compares this with the doc)."""
    schema = f" (schema {cls.SCHEMA})" if cls.SCHEMA is not None else ""
    rows = "\n".join(
        f"| `{name}` | `{kind.replace('|', chr(92) + '|')}` | {meaning} |"
        for name, kind, meaning in describe(cls)
    )
    return f"### `{cls.__name__}`{schema}\n\n| field | type | meaning |\n| --- | --- | --- |\n{rows}"
