"""Contracts of monitoring a model in the field: the reference ``profile.json`` a version carries, the
``drift.json`` every scoring run writes beside its worklist, and the outcomes recorded when ground truth comes
back."""

from __future__ import annotations

from dataclasses import dataclass

from xray_tasks.contracts.base import Contract, doc


@dataclass(frozen=True)
class Distribution(Contract):
    """One per-image quantity of a set of studies, binned on the reference's own cut points so that a batch can
    be compared bin by bin (PSI)."""

    n: int = doc("values counted")
    edges: tuple[float, ...] = doc(
        "interior cut points (the reference's deciles, duplicates dropped): bin i holds edges[i-1] <= x < "
        "edges[i], the first bin everything below edges[0], the last everything from edges[-1] up"
    )
    counts: tuple[int, ...] = doc("values per bin (len(edges) + 1 bins)")
    quantiles: dict[str, float] = doc("the 1, 5, 25, 50, 75, 95 and 99th percentiles, keyed `p01` .. `p99`")
    mean: float | None = doc("mean value (null when n is 0)")
    sample: tuple[float, ...] = doc(
        "sorted values (at most 2,000: evenly spaced quantiles beyond that), for two-sample tests", default=()
    )


@dataclass(frozen=True)
class Histogram(Contract):
    """Counts over fixed bins (pixel intensities)."""

    edges: tuple[float, ...] = doc("bin edges, len(counts) + 1 of them (bin i: edges[i] <= x < edges[i+1])")
    counts: tuple[int, ...] = doc("values per bin")


@dataclass(frozen=True)
class Profile(Contract):
    """``profile.json``: what a set of scored studies looked like.  Evaluation writes the test split's as the
    version's reference (published, so checksummed with the rest); every scoring run computes its batch's."""

    SCHEMA = 1

    source: str = doc("what was profiled: `test split of <workspace>` or the scored images' location")
    n: int = doc("studies profiled")
    threshold: float = doc("the operating point the flagged share is counted at")
    flagged_share: float = doc("share of studies with P(unhealthy) >= threshold")
    score: Distribution = doc("P(unhealthy)")
    score_histogram: Histogram = doc("P(unhealthy) in ten equal bins over [0, 1] (for plots)")
    mean_intensity: Distribution = doc("per-image mean of the stored 8-bit pixels")
    std_intensity: Distribution = doc("per-image standard deviation of the stored pixels")
    saturated_share: Distribution = doc("per-image share of stored pixels at 0 or 255")
    intensity_histogram: Histogram = doc("all stored pixels, 16 bins of 16 grey levels")
    original_size: Distribution | None = doc(
        "the longer side of the original image in pixels (metadata at evaluation, the PNG header when "
        "scoring); null when unknown"
    )
    categories: dict[str, dict[str, int]] | None = doc(
        "counts of `view`, `sex` and `age_band` where metadata gave them (null or absent keys: not known)",
        default=None,
    )
    stored_image_size: int | None = doc(
        "side of the stored images the pixel statistics are computed on", default=None
    )


@dataclass(frozen=True)
class DriftCheck(Contract):
    """One comparison of a batch with the reference."""

    statistic: str = doc(
        "`psi:<quantity>` (population stability index), `ks:score` (two-sample Kolmogorov-Smirnov D of "
        "P(unhealthy)) or `flagged_share` (batch share flagged minus the share expected at the operating point)"
    )
    value: float | None = doc("the statistic's value (null when it could not be computed)")
    limit: float | None = doc("the configured limit (null: reported only)")
    drifted: bool = doc("value past the limit")
    detail: str = doc("the figures behind it, in words", default="")


@dataclass(frozen=True)
class DriftReport(Contract):
    """``<worklist>.drift.json``: a scoring run's batch compared with the champion's reference profile."""

    SCHEMA = 1

    model_name: str = doc("registry model name")
    version: str = doc("the version that scored (its reference profile is the baseline)")
    worklist: str = doc("the worklist this report belongs to")
    created_at: str = doc("UTC time of the check")
    status: str = doc(
        "`ok` (every check within its limit), `drift` (at least one past it), `too_small` (fewer scored "
        "images than `min_batch`: not judged) or `no_reference` (the version carries no profile)"
    )
    n: int = doc("images scored (readable ones)")
    min_batch: int = doc("the smallest batch judged")
    checks: tuple[DriftCheck, ...] = doc("every comparison made, in a fixed order")
    message: str = doc(
        "one line for a person: what drifted, its value and the limit, or why nothing was judged"
    )
    batch: Profile | None = doc("the batch's own profile", default=None)
    seconds: float = doc("time spent profiling the batch and comparing (not scoring)", default=0.0)


@dataclass(frozen=True)
class Outcome(Contract):
    """``outcomes/<time>.json`` under a version's monitoring folder: what the model achieved on studies whose
    ground truth came back, beside what its evaluation promised."""

    SCHEMA = 1

    model_name: str = doc("registry model name")
    version: str = doc("the version that scored the studies")
    worklist: str = doc("the worklist the outcomes are joined to")
    labels: str = doc("the ground-truth CSV (image, label)")
    created_at: str = doc("UTC time of the computation")
    n: int = doc("scored studies with a recorded outcome")
    positives: int = doc("of them unhealthy")
    unmatched: int = doc("outcome rows with no scored image of that name")
    threshold: float = doc("the version's operating point")
    sensitivity: float = doc("unhealthy studies flagged / unhealthy studies")
    sensitivity_ci: tuple[float, ...] | None = doc("95% bootstrap interval of the sensitivity")
    healthy_cleared: float = doc("healthy studies cleared / healthy studies")
    promised_sensitivity: float = doc("test sensitivity at the operating point in the version's metrics")
    promised_healthy_cleared: float = doc("test healthy cleared in the version's metrics")
    target_sensitivity: float = doc("the sensitivity target the operating point was chosen for")
    tolerance: float = doc("how far below the target the achieved sensitivity may fall")
    below_target: bool = doc("achieved sensitivity < target - tolerance")
    message: str = doc("one line for a person")
