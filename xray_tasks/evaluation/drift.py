"""Drift: a scoring batch's profile against the champion's reference profile.

- PSI (population stability index) for every binned distribution: ``sum((b - r) * ln(b / r))`` over bins, with
  ``r`` and ``b`` the reference's and the batch's shares, each floored at ``EPSILON`` so an empty bin does not make
  it infinite.  The bins are the reference's deciles, so each holds about a tenth of the reference.  Its limit is
  ``psi_limit`` plus the PSI that sampling alone produces on average (``sampling_allowance``), so a batch of a
  hundred studies from the reference's own distribution does not read as drift.
- The two-sample Kolmogorov-Smirnov statistic of P(unhealthy), from ``scipy.stats.ks_2samp``.  It counts as drift
  when D passes its limit *and* the test is significant at ``ks_alpha`` (a large D on a handful of images is noise).
- The share flagged against the share the reference flagged at the same operating point.

Limits come from ``config.DriftConfig``.  A batch smaller than ``min_batch`` is reported as too small to judge,
never as drift.  ``write_plot`` draws the comparison.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from xray_tasks.config import DriftConfig
from xray_tasks.contracts import DriftCheck, DriftReport, Profile
from xray_tasks.errors import BadInput

logger = logging.getLogger(__name__)

EPSILON = 1e-4
BINNED = ("score", "mean_intensity", "std_intensity", "saturated_share", "original_size")
CATEGORIES = ("view", "sex", "age_band")
OK, DRIFT, TOO_SMALL, NO_REFERENCE = "ok", "drift", "too_small", "no_reference"


def psi(reference: Sequence[float], batch: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index between two count (or share) vectors over the same bins."""
    r, b = np.asarray(reference, dtype=np.float64), np.asarray(batch, dtype=np.float64)
    if r.shape != b.shape or r.ndim != 1 or not len(r):
        raise BadInput(f"psi needs two count vectors of one length, got shapes {r.shape} and {b.shape}")
    if r.sum() <= 0 or b.sum() <= 0 or (r < 0).any() or (b < 0).any():
        raise BadInput("psi needs non-negative counts with a positive total on both sides")
    r, b = np.maximum(r / r.sum(), epsilon), np.maximum(b / b.sum(), epsilon)
    return float(np.sum((b - r) * np.log(b / r)))


def ks(reference: Sequence[float], batch: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov ``(D, p-value)`` (``scipy.stats.ks_2samp``, two-sided)."""
    from scipy import stats

    if not len(reference) or not len(batch):
        raise BadInput("ks needs values on both sides")
    result = stats.ks_2samp(np.asarray(batch, dtype=np.float64), np.asarray(reference, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


def sampling_allowance(bins: int, n_reference: int, n_batch: int) -> float:
    """What PSI reaches on average with no drift at all, from sampling alone: ``(bins - 1) (1/n_r + 1/n_b)`` (its
    chi-square approximation).  Added to the PSI limit so that small batches and a small reference do not raise
    false alarms; it vanishes as the samples grow (0.118 for 10 bins at 183 vs 131 studies, 0.006 at 5,000 each)."""
    if bins < 2 or n_reference < 1 or n_batch < 1:
        return 0.0
    return (bins - 1) * (1.0 / n_reference + 1.0 / n_batch)


def _category_psi(ref: dict[str, int], got: dict[str, int]) -> float:
    keys = sorted(set(ref) | set(got))
    return psi([ref.get(k, 0) for k in keys], [got.get(k, 0) for k in keys])


def checks(reference: Profile, batch: Profile, cfg: DriftConfig) -> list[DriftCheck]:
    """Every comparison of ``batch`` (binned on ``reference``'s cut points) with ``reference``."""
    out: list[DriftCheck] = []

    def add(statistic: str, value: float | None, limit: float | None, detail: str, drifted=None) -> None:
        if drifted is None:
            drifted = value is not None and limit is not None and value > limit
        out.append(DriftCheck(statistic, value, limit, bool(drifted), detail))

    d, p = ks(reference.score.sample, batch.score.sample)
    add(
        "ks:score",
        d,
        cfg.ks_limit,
        f"D {d:.3f}, p {p:.2g} (drift needs D > {cfg.ks_limit:g} and p < {cfg.ks_alpha:g}); median "
        f"P(unhealthy) {reference.score.quantiles.get('p50', math.nan):.3f} -> "
        f"{batch.score.quantiles.get('p50', math.nan):.3f}",
        drifted=d > cfg.ks_limit and p < cfg.ks_alpha,
    )
    shift = batch.flagged_share - reference.flagged_share
    add(
        "flagged_share",
        abs(shift),
        cfg.flagged_share_limit,
        f"{batch.flagged_share:.3f} flagged vs {reference.flagged_share:.3f} expected at threshold "
        f"{reference.threshold:.4f} ({shift:+.3f})",
    )
    for name in BINNED:
        ref, got = getattr(reference, name), getattr(batch, name)
        if ref is None or got is None or not ref.n or not got.n:
            continue
        if tuple(got.edges) != tuple(ref.edges):
            raise BadInput(f"batch {name} is not binned on the reference's cut points")
        value = psi(ref.counts, got.counts)
        noise = sampling_allowance(len(ref.counts), ref.n, got.n)
        add(
            f"psi:{name}",
            value,
            round(cfg.psi_limit + noise, 4),
            f"mean {ref.mean:.4g} -> {got.mean:.4g} over {len(ref.counts)} reference bins; limit "
            f"{cfg.psi_limit:g} + {noise:.3f} sampling allowance (n {ref.n} vs {got.n})",
        )
    if sum(batch.intensity_histogram.counts) and sum(reference.intensity_histogram.counts):
        add(
            "psi:intensity_histogram",
            psi(reference.intensity_histogram.counts, batch.intensity_histogram.counts),
            cfg.psi_limit,
            "all stored pixels, 16 grey-level bins",
        )
    for name in CATEGORIES:
        ref, got = (reference.categories or {}).get(name), (batch.categories or {}).get(name)
        if ref and got:
            noise = sampling_allowance(len(set(ref) | set(got)), sum(ref.values()), sum(got.values()))
            add(f"psi:{name}", _category_psi(ref, got), round(cfg.psi_limit + noise, 4), f"{ref} -> {got}")
    return out


def compare(
    reference: Profile | None,
    batch: Profile,
    cfg: DriftConfig,
    *,
    model_name: str,
    version: str,
    worklist: str,
    seconds: float = 0.0,
) -> DriftReport:
    """The drift report of one scored batch (``status`` ok, drift, too_small or no_reference)."""
    found: list[DriftCheck] = []
    if reference is None:
        status = NO_REFERENCE
        message = (
            f"version {version} carries no reference profile (published before profiles): drift not checked"
        )
    elif batch.n < cfg.min_batch:
        status = TOO_SMALL
        message = (
            f"batch of {batch.n} scored image(s) is too small to judge drift (min_batch {cfg.min_batch}): "
            "not judged, not drift"
        )
    else:
        found = checks(reference, batch, cfg)
        past = [c for c in found if c.drifted]
        status = DRIFT if past else OK
        if past:
            message = f"drift in {batch.n} images against version {version}'s test profile: " + "; ".join(
                f"{c.statistic} = {c.value:.3f} > limit {c.limit:g} ({c.detail})" for c in past
            )
        else:
            worst = max(
                (c for c in found if c.limit and c.value is not None), key=lambda c: c.value / c.limit
            )
            message = (
                f"no drift in {batch.n} images: all {len(found)} checks within their limits (closest: "
                f"{worst.statistic} = {worst.value:.3f}, limit {worst.limit:g})"
            )
    return DriftReport(
        model_name=model_name,
        version=version,
        worklist=worklist,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        status=status,
        n=batch.n,
        min_batch=cfg.min_batch,
        checks=tuple(found),
        message=message,
        batch=batch,
        seconds=seconds,
    )


def _shares(counts: Sequence[int]) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum() if c.sum() else c


def write_plot(report: DriftReport, reference: Profile | None) -> bytes:
    """PNG bytes: P(unhealthy), per-image mean intensity and pixel histograms, reference vs batch, and each
    statistic as a share of its limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    batch = report.batch
    panels = (
        ("P(unhealthy), ten bins", "score_histogram", axes[0][0]),
        ("all stored pixels, 16 grey-level bins", "intensity_histogram", axes[0][1]),
    )
    for title, name, ax in panels:
        if reference is not None and batch is not None:
            ref, got = getattr(reference, name), getattr(batch, name)
            centers = (np.asarray(ref.edges[:-1]) + np.asarray(ref.edges[1:])) / 2
            width = (ref.edges[1] - ref.edges[0]) * 0.4
            ax.bar(centers - width / 2, _shares(ref.counts), width, label=f"reference (n={reference.n})")
            ax.bar(centers + width / 2, _shares(got.counts), width, label=f"batch (n={batch.n})")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("share")
    ax = axes[1][0]
    if reference is not None and batch is not None:
        x = np.arange(len(reference.mean_intensity.counts))
        ax.bar(x - 0.2, _shares(reference.mean_intensity.counts), 0.4, label="reference")
        ax.bar(x + 0.2, _shares(batch.mean_intensity.counts), 0.4, label="batch")
        ax.set_xlabel("reference decile bin of the per-image mean intensity")
        ax.legend(fontsize=8)
    ax.set_title("per-image mean intensity (PSI bins)", fontsize=10)
    ax = axes[1][1]
    judged = [c for c in report.checks if c.limit and c.value is not None]
    if judged:
        ratios = [c.value / c.limit for c in judged]
        ax.barh(
            [c.statistic for c in judged],
            ratios,
            color=["tab:red" if c.drifted else "tab:green" for c in judged],
        )
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("value / limit (past 1 = past the limit)")
    else:
        ax.text(0.5, 0.5, report.status.replace("_", " "), ha="center", va="center", fontsize=14)
        ax.set_axis_off()
    ax.set_title("statistics against their limits", fontsize=10)
    fig.suptitle(f"{report.model_name} v{report.version}: {report.status} ({report.n} images)", fontsize=11)
    fig.tight_layout()
    import io

    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()
