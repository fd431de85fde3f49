"""The ladder on a run's test split: always-unhealthy, the metadata-only baseline, the model.

Each rung is scored on the same test studies at its own operating point, chosen on validation by the same rule
(``metrics.choose_threshold``): AUROC with its patient-bootstrap interval, sensitivity, healthy studies cleared
and F-beta.  The model's margin over the baseline is a paired comparison (``metrics.paired_bootstrap_auroc``):
both are scored on the same patient resamples, so the interval is about the *difference*, not two separate
noises.  ``compare`` is the same computation the registry's gate uses against the champion.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from xray_tasks.config import EvalConfig, PipelineConfig
from xray_tasks.contracts import Ladder, LadderRung, PairedComparison
from xray_tasks.errors import BadInput, MissingInput
from xray_tasks.evaluation import metrics
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)

ALWAYS_UNHEALTHY, BASELINE, MODEL = "always_unhealthy", "metadata_baseline", "model"


def align(test: pd.DataFrame, other: pd.DataFrame, what: str) -> pd.DataFrame:
    """``other``'s rows for ``test``'s studies, in ``test``'s order, with matching labels.

    Raises:
        BadInput: ``other`` lacks some of the studies, or labels them differently (not the same split).
    """
    indexed = other.drop_duplicates("image_index").set_index("image_index")
    missing = ~test["image_index"].isin(indexed.index)
    if missing.any():
        raise BadInput(
            f"{what} has no prediction for {int(missing.sum())} of the {len(test)} test studies "
            f"(e.g. {test.loc[missing, 'image_index'].iloc[0]}): not the same test split"
        )
    out = indexed.loc[test["image_index"].to_numpy()].reset_index()
    if not np.array_equal(out["label"].to_numpy(), test["label"].to_numpy()):
        raise BadInput(f"{what} labels the test studies differently: not the same manifest")
    return out


def compare(test: pd.DataFrame, reference: pd.DataFrame, name: str, cfg: EvalConfig) -> PairedComparison:
    """Candidate (``test``) minus ``reference`` AUROC on ``test``'s studies; paired interval unless
    ``cfg.bootstrap`` is 0."""
    ref = align(test, reference, name)
    y, cand = test["label"].to_numpy(), test["probability"].to_numpy()
    if cfg.bootstrap:
        out = metrics.paired_bootstrap_auroc(
            y,
            cand,
            ref["probability"].to_numpy(),
            groups=test["patient_id"].to_numpy(),
            n=cfg.bootstrap,
            seed=cfg.seed,
        )
        ci, resamples = tuple(out["delta_ci"]), cfg.bootstrap
        a_c, a_r = out["candidate_auroc"], out["reference_auroc"]
    else:
        ci, resamples = None, 0
        a_c, a_r = metrics.auroc(y, cand), metrics.auroc(y, ref["probability"].to_numpy())
    return PairedComparison(
        reference=name,
        candidate_auroc=a_c,
        reference_auroc=a_r,
        delta=a_c - a_r,
        delta_ci=ci,
        resamples=resamples,
        n=len(test),
    )


def _rung(
    name: str, test: pd.DataFrame, threshold: float, cfg: EvalConfig, ci: tuple[float, ...] | None = None
) -> LadderRung:
    """One rung; ``ci``: its AUROC interval when already drawn (the model's, by ``evaluate.score``)."""
    y, p = test["label"].to_numpy(), test["probability"].to_numpy()
    if ci is None and cfg.bootstrap:
        found = metrics.bootstrap_intervals(
            y, p, threshold, groups=test["patient_id"].to_numpy(), n=cfg.bootstrap, seed=cfg.seed
        )
        ci = tuple(found["auroc_ci"])
    return LadderRung(
        name=name,
        auroc=metrics.auroc(y, p),
        auroc_ci=ci,
        threshold=threshold,
        at_operating_point=metrics.summary_at(y, p, threshold, cfg.beta),
    )


def build(
    test: pd.DataFrame,
    model_threshold: float,
    cfg: EvalConfig,
    baseline_val: pd.DataFrame | None = None,
    baseline_test: pd.DataFrame | None = None,
    baseline_uri: str | None = None,
    features: tuple[str, ...] = (),
    model_ci: tuple[float, ...] | None = None,
) -> Ladder:
    """The ladder from the model's test predictions and (when given) the baseline's val and test predictions;
    ``model_ci``: the model's AUROC interval when already drawn with the same resamples and seed."""
    y = test["label"].to_numpy()
    rungs = [
        LadderRung(
            name=ALWAYS_UNHEALTHY,
            auroc=0.5,
            auroc_ci=(0.5, 0.5) if cfg.bootstrap else None,
            threshold=None,
            at_operating_point=metrics.always_unhealthy(y, cfg.beta),
        )
    ]
    versus = None
    if baseline_test is not None and baseline_val is not None:
        aligned = align(test, baseline_test, "the metadata baseline")
        threshold = metrics.choose_threshold(
            baseline_val["label"], baseline_val["probability"], cfg.target_sensitivity
        )
        rungs.append(_rung(BASELINE, aligned, threshold, cfg))
        versus = compare(test, aligned, "metadata baseline", cfg)
    rungs.append(_rung(MODEL, test, model_threshold, cfg, model_ci))
    return Ladder(
        rungs=tuple(rungs), model_vs_baseline=versus, baseline=baseline_uri, baseline_features=features
    )


def for_run(
    workspace: str,
    run: RunDir,
    frames: dict[str, pd.DataFrame],
    threshold: float,
    cfg: PipelineConfig,
    model_ci: tuple[float, ...] | None = None,
) -> tuple[Ladder, pd.DataFrame | None]:
    """The ladder of an evaluated run, fitting the workspace's baseline first when it is not there yet (seconds);
    the baseline's predictions are copied into the run, so a published version carries them.

    Returns the ladder and the baseline's predictions on the run's test studies (``None`` without a baseline).

    Raises:
        BadInput / MissingInput: the baseline cannot be fitted and ``gate.require_baseline`` is on.
    """
    from xray_tasks.evaluation import baseline, evaluate

    try:
        summary = baseline.run_baseline(workspace, cfg)
        folder = RunDir(summary.dir)
        base_val = baseline.read_predictions(folder, "val")
        base_test = align(frames["test"], baseline.read_predictions(folder, "test"), "the metadata baseline")
    except (BadInput, MissingInput) as exc:
        if cfg.gate.require_baseline:
            raise BadInput(f"the gate requires the metadata baseline and it cannot be fitted: {exc}") from exc
        logger.warning("ladder without the metadata baseline: %s", exc)
        return build(frames["test"], threshold, cfg.evaluate, model_ci=model_ci), None
    evaluate.write_parquet(base_val, run.baseline_predictions("val"))
    evaluate.write_parquet(base_test, run.baseline_predictions("test"))
    climbed = build(
        frames["test"], threshold, cfg.evaluate, base_val, base_test, summary.dir, summary.features, model_ci
    )
    logger.info("ladder: %s", in_words(climbed))
    return climbed, base_test


def in_words(ladder: Ladder) -> str:
    """The model's margin over the metadata baseline in one sentence (the model card's)."""
    versus = ladder.model_vs_baseline
    if versus is None:
        return "No metadata baseline was fitted for this run, so the model's margin over it is unknown."
    ci = versus.delta_ci
    span = f" (95% paired interval {ci[0]:+.4f} to {ci[1]:+.4f})" if ci else ""
    if ci is None:
        verdict = "without an interval (bootstrap off), so whether it is beyond noise is not known"
    elif ci[0] > 0:
        verdict = "it beats the baseline beyond sampling noise"
    elif ci[1] < 0:
        verdict = "it is worse than the baseline beyond sampling noise: it has learned less from the pixels than the chart already says"
    else:
        verdict = "the difference is within sampling noise: it has not been shown to beat what the chart already says"
    return (
        f"On the same {versus.n} test studies the model's AUROC is {versus.candidate_auroc:.4f} against the "
        f"metadata baseline's {versus.reference_auroc:.4f}, a margin of {versus.delta:+.4f}{span}; {verdict}."
    )


RUNG_NAMES = {ALWAYS_UNHEALTHY: "always unhealthy", BASELINE: "metadata baseline", MODEL: "this model"}


def card_section(ladder: Ladder) -> str:
    """The model card's ladder: each rung on the same test studies, then the margin over the baseline in words."""

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    rows = []
    for r in ladder.rungs:
        ci = f" [{r.auroc_ci[0]:.4f}, {r.auroc_ci[-1]:.4f}]" if r.auroc_ci else ""
        op = r.at_operating_point
        rows.append(
            f"| {RUNG_NAMES.get(r.name, r.name)} | {r.auroc:.4f}{ci} | {cell(r.threshold)} | {op.recall:.4f} | "
            f"{op.healthy_cleared:.4f} | {op.f_beta:.4f} |"
        )
    features = ", ".join(ladder.baseline_features) or "none"
    return (
        "## The ladder: benchmarks on the same test studies\n"
        "Each at its own operating point, chosen on validation by the same rule.  The metadata baseline is a "
        f"logistic regression on the chart alone ({features}), fitted on the train split.\n\n"
        "| rung | AUROC [95% CI] | threshold | sensitivity | healthy cleared | F-beta |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + f"\n\n{in_words(ladder)}\n"
    )
