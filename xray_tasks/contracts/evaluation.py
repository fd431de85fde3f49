"""Contracts of evaluation: ``metrics.json`` (the document everything downstream judges a model by) and the
evaluate stage's summary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from xray_tasks.contracts.base import Contract, doc
from xray_tasks.contracts.data import ManifestCounts
from xray_tasks.contracts.training import Fingerprint


@dataclass(frozen=True)
class Rates(Contract):
    """Confusion counts at one threshold (a study is flagged unhealthy when P(unhealthy) >= threshold) and the
    rates derived from them; ratios with an empty denominator are 0."""

    tn: int = doc("healthy studies cleared")
    fp: int = doc("healthy studies flagged")
    fn: int = doc("unhealthy studies missed")
    tp: int = doc("unhealthy studies flagged")
    beta: float = doc("the F-beta weight (the report's F3: 3)")
    f_beta: float = doc("F-beta = (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)")
    accuracy: float = doc("(TP + TN) / all")
    precision: float = doc("TP / (TP + FP)")
    recall: float = doc("sensitivity: TP / (TP + FN)")
    specificity: float = doc("TN / (TN + FP)")
    healthy_cleared: float = doc(
        "specificity read as workload: the share of healthy studies nobody needs to read"
    )

    @property
    def f_key(self) -> str:
        """How the report names this F score: ``f3`` at beta 3."""
        return f"f{self.beta:g}"


@dataclass(frozen=True)
class ModelInfo(Contract):
    base: str = doc("base network")
    weights: str = doc("weights id of the base")
    input_size: int = doc("side of the square image the model takes")
    stored_image_size: int = doc("side of the stored images it was trained on")
    input_name: str = doc("name of the model's input (`image`)")
    output: str = doc("name of the triage output (`triage`, softmax [N, 2], column 1 = P(unhealthy))")
    outputs: tuple[str, ...] = doc("every output name", default=())


@dataclass(frozen=True)
class DataInfo(Contract):
    workspace: str | None = doc("the workspace evaluated on")
    manifest_sha256: str = doc("sha256 of manifest.parquet (labels and splits)")
    test_digest: str = doc("sha256 of the sorted test image names (names only; kept for older readers)")
    val_digest: str = doc("the same for validation")
    counts: dict[str, ManifestCounts] | None = doc("images, patients and classes per split")
    test_split_digest: str | None = doc(
        "sha256 over the test studies' names, labels and patient ids: equal digests, same test split "
        "(null in runs evaluated before it existed: those are never taken as the same split)",
        default=None,
    )
    val_split_digest: str | None = doc("the same for validation", default=None)


@dataclass(frozen=True)
class OperatingPoint(Contract):
    threshold: float = doc("P(unhealthy) at or above which a study is flagged")
    target_sensitivity: float = doc("the sensitivity the threshold was chosen for")
    chosen_on: str = doc("the split it was chosen on (always `val`)")


@dataclass(frozen=True)
class Sweep(Contract):
    """The report's Figure 10 as counts: per threshold, healthy studies cleared and unhealthy studies missed."""

    threshold: tuple[float, ...] = doc("0.00, 0.01, ..., 1.00")
    healthy_cleared: tuple[int, ...] = doc("healthy test studies below each threshold")
    unhealthy_missed: tuple[int, ...] = doc("unhealthy test studies below each threshold")
    healthy: int = doc("healthy test studies")
    unhealthy: int = doc("unhealthy test studies")


@dataclass(frozen=True)
class Bootstrap(Contract):
    resamples: int = doc("resamples drawn")
    unit: str = doc("what was resampled (`patient`)")
    level: float = doc("interval level (0.95)")


@dataclass(frozen=True)
class TestMetrics(Contract):
    __test__: ClassVar[bool] = False  # not a pytest test class, whatever its name

    n: int = doc("test studies")
    positives: int = doc("unhealthy test studies")
    at_half: Rates = doc("rates at threshold 0.5 (the report's rule)", key="at_0.5")
    at_operating_point: Rates = doc("rates at the validation-chosen threshold")
    auroc: float = doc("area under the ROC curve (ties count one half)")
    auprc: float = doc("average precision")
    auroc_ci: tuple[float, ...] | None = doc("95% patient-bootstrap interval of the AUROC [lo, hi]")
    sensitivity_ci: tuple[float, ...] | None = doc("95% interval of the sensitivity at the operating point")
    benchmark_always_unhealthy: Rates = doc("the report's benchmark on the same studies: every study flagged")
    per_pathology_auroc: dict[str, float | None] | None = doc(
        "AUROC per finding when the model has that output"
    )
    threshold_sweep: Sweep | None = doc("healthy cleared / unhealthy missed per threshold", default=None)
    bootstrap: Bootstrap | None = doc("how the intervals were drawn (null without intervals)", default=None)


@dataclass(frozen=True)
class ValMetrics(Contract):
    n: int = doc("validation studies")
    positives: int = doc("unhealthy validation studies")
    auroc: float = doc("validation AUROC")
    at_operating_point: Rates = doc("rates at the chosen threshold")


@dataclass(frozen=True)
class PairedComparison(Contract):
    """Candidate minus reference AUROC on the same test studies, with a paired patient-bootstrap interval (both
    models scored on the same resample each time: ``metrics.paired_bootstrap_auroc``)."""

    reference: str = doc("what the candidate was compared with (`metadata baseline`, `champion 000003`)")
    candidate_auroc: float = doc("the candidate's test AUROC on these studies")
    reference_auroc: float = doc("the reference's test AUROC on the same studies")
    delta: float = doc("candidate minus reference")
    delta_ci: tuple[float, ...] | None = doc(
        "95% paired interval of the difference [lo, hi] (null: no bootstrap)"
    )
    resamples: int = doc("patient resamples drawn (0: no interval)")
    n: int = doc("test studies compared")


@dataclass(frozen=True)
class LadderRung(Contract):
    """One benchmark (or the model) on the run's test studies, at its own validation-chosen operating point."""

    name: str = doc("`always_unhealthy`, `metadata_baseline` or `model`")
    auroc: float = doc("test AUROC (0.5 for always-unhealthy: one score for every study)")
    auroc_ci: tuple[float, ...] | None = doc("95% patient-bootstrap interval [lo, hi]")
    threshold: float | None = doc("its operating point, chosen on validation (null: flags every study)")
    at_operating_point: Rates = doc("test rates there: recall = sensitivity, healthy_cleared, f_beta (F3)")


@dataclass(frozen=True)
class Ladder(Contract):
    """The run's test split, climbed: always-unhealthy, the metadata-only baseline, the model."""

    rungs: tuple[LadderRung, ...] = doc(
        "lowest first; the baseline's rung is absent when it could not be fitted"
    )
    model_vs_baseline: PairedComparison | None = doc("the model's AUROC margin over the baseline, paired")
    baseline: str | None = doc("the baseline folder (`<workspace>/baseline/<manifest_sha256>`)")
    baseline_features: tuple[str, ...] = doc("the metadata fields the baseline uses", default=())

    def rung(self, name: str) -> LadderRung | None:
        return next((r for r in self.rungs if r.name == name), None)


_F_KEY = re.compile(r"^f(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Metrics(Contract):
    """``metrics.json`` of an evaluated run (and of every published version).

    Schema 1 named the F score after beta (``f3``); schema 2 stores ``beta`` and ``f_beta``.  Schema 1 files are
    read by recovering beta from that key.
    """

    SCHEMA: ClassVar[int] = 2
    OLDEST_SCHEMA: ClassVar[int] = 1

    model: ModelInfo = doc("what was evaluated")
    data: DataInfo = doc("on which data")
    operating_point: OperatingPoint = doc("the threshold, chosen on validation")
    test: TestMetrics = doc("results on the patient-wise test split")
    val: ValMetrics = doc("results on validation")
    ladder: Ladder | None = doc(
        "always-unhealthy, the metadata baseline and the model on the test split (null: written before)",
        default=None,
    )
    fingerprint: Fingerprint | None = doc(
        "what determined the model (the run's fingerprint.json); null for runs before fingerprints",
        default=None,
    )

    @classmethod
    def upgrade(cls, data: dict[str, Any], schema: int) -> dict[str, Any]:
        data = {**data, "schema": cls.SCHEMA}
        test, val = dict(data.get("test") or {}), dict(data.get("val") or {})
        for section, keys in (
            (test, ("at_0.5", "at_operating_point", "benchmark_always_unhealthy")),
            (val, ("at_operating_point",)),
        ):
            for key in keys:
                if isinstance(section.get(key), dict):
                    section[key] = _rates_v1(section[key])
        return {**data, "test": test, "val": val}

    @property
    def beta(self) -> float:
        return self.test.at_operating_point.beta


def _rates_v1(rates: dict[str, Any]) -> dict[str, Any]:
    out = dict(rates)
    for key, value in rates.items():
        match = _F_KEY.match(key)
        if match:
            out.setdefault("beta", float(match.group(1)))
            out.setdefault("f_beta", value)
    if "specificity" in out:
        out.setdefault("healthy_cleared", out["specificity"])
    return out


@dataclass(frozen=True)
class EvaluateSummary(Contract):
    """What ``xray-tasks evaluate`` prints."""

    run_dir: str = doc("the run folder")
    metrics: str = doc("URI of metrics.json")
    model_card: str = doc("URI of model_card.md")
    plots: dict[str, str] = doc("plot name -> URI")
    predictions: dict[str, str] = doc("split -> URI of its predictions Parquet")
    test_auroc: float = doc("test AUROC")
    test_auroc_ci: tuple[float, ...] | None = doc("its 95% interval")
    test_auprc: float = doc("test average precision")
    operating_point: OperatingPoint = doc("the validation-chosen threshold")
    test_at_operating_point: Rates = doc("test rates at that threshold")


@dataclass(frozen=True)
class BaselineSummary(Contract):
    """What ``xray-tasks baseline`` prints: the metadata-only model of one manifest, fitted once."""

    dir: str = doc("`<workspace>/baseline/<manifest_sha256>`")
    metrics: str = doc("URI of its metrics.json (the `Metrics` contract)")
    predictions: dict[str, str] = doc("split -> URI of its predictions Parquet")
    manifest_sha256: str = doc("the manifest it was fitted on")
    features: tuple[str, ...] = doc("the metadata fields it uses")
    coefficients: dict[str, float] = doc(
        "logistic-regression weights per standardised feature, and `intercept`"
    )
    train_n: int = doc("training studies")
    test_auroc: float = doc("test AUROC")
    test_auroc_ci: tuple[float, ...] | None = doc("its 95% patient-bootstrap interval")
    operating_point: OperatingPoint = doc("the threshold, chosen on validation")
    test_at_operating_point: Rates = doc("test rates at that threshold")
    reused: bool = doc("already fitted for this manifest: read back, nothing recomputed")
    fit_seconds: float = doc("seconds to fit (0 when reused)")
    seconds: float = doc("seconds for the whole stage")
