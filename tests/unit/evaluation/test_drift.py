"""Drift: PSI and KS against hand-computed values, no false alarm on batches from the reference distribution,
drift on a shifted batch, small batches not judged, the report and its plot."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xray_tasks.config import DriftConfig
from xray_tasks.contracts import DriftReport, Profile
from xray_tasks.errors import BadInput
from xray_tasks.evaluation import drift
from xray_tasks.evaluation.profile import ProfileBuilder, distribution


def test_psi_matches_the_hand_computed_value():
    # shares 0.5/0.5 -> 0.25/0.75: (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert drift.psi([50, 50], [25, 75]) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.274653, abs=1e-6)
    assert drift.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-12)  # same shares, any totals


def test_psi_floors_empty_bins_instead_of_going_infinite():
    # every share moves to the other bin: 2 * (1 - 1e-4) * ln(1 / 1e-4)
    assert drift.psi([1, 0], [0, 1]) == pytest.approx(2 * (1 - 1e-4) * math.log(1e4), rel=1e-9)
    with pytest.raises(BadInput, match="one length"):
        drift.psi([1, 2], [1, 2, 3])
    with pytest.raises(BadInput, match="positive total"):
        drift.psi([0, 0], [1, 2])


def test_ks_matches_the_hand_computed_values():
    d, p = drift.ks([1, 2, 3, 4], [3, 4, 5, 6])
    assert d == pytest.approx(0.5)  # at x = 2 the reference's ECDF is 0.5, the batch's 0
    d, p = drift.ks([1, 2, 3], [4, 5, 6])
    # disjoint samples: D = 1; exact two-sided p = 2 / C(6, 3) (the two orderings as extreme)
    assert d == 1.0 and p == pytest.approx(2 / 20)


def test_distribution_bins_on_deciles_and_reuses_the_reference_cut_points():
    ref = distribution(np.arange(100))
    assert len(ref.edges) == 9 and ref.counts == (10,) * 10 and ref.n == 100
    assert ref.quantiles["p50"] == pytest.approx(49.5) and ref.sample[:3] == (0.0, 1.0, 2.0)
    later = distribution(np.arange(100) + 1000, ref.edges)
    assert later.edges == ref.edges and later.counts == (0,) * 9 + (100,)
    constant = distribution([256.0] * 20)
    assert constant.edges == (256.0,) and constant.counts == (0, 20)


def _studies(n: int, seed: int, brightness: float = 0.0, contrast: float = 1.0, size: int = 16):
    """``n`` small radiograph-like images, their scores and metadata; ``brightness``/``contrast`` as a scanner."""
    rng = np.random.default_rng(seed)
    level = rng.normal(120, 12, n)[:, None, None]
    images = level + rng.normal(0, 25, (n, size, size))
    images = 128 + contrast * (images - 128) + brightness
    pixels = np.clip(np.round(images), 0, 255).astype(np.uint8)
    scores = rng.beta(2, 3, n)
    views = rng.choice(["PA", "AP"], n, p=[0.6, 0.4])
    return pixels, scores, views


def _profile(pixels, scores, views, reference: Profile | None = None, threshold: float = 0.5) -> Profile:
    builder = ProfileBuilder()
    for start in range(0, len(pixels), 32):
        builder.add_pixels(pixels[start : start + 32, ..., None])
        builder.add_scores(scores[start : start + 32])
    builder.add_sides([1024.0] * len(pixels))
    builder.add_category("view", views.tolist())
    return builder.build("test", threshold, reference)


@pytest.fixture(scope="module")
def reference() -> Profile:
    return _profile(*_studies(600, seed=0))


def _check(reference: Profile, batch: Profile, cfg: DriftConfig | None = None) -> DriftReport:
    cfg = cfg or DriftConfig()
    return drift.compare(reference, batch, cfg, model_name="m", version="000001", worklist="w.csv")


def test_no_false_alarm_on_batches_from_the_reference_distribution(reference):
    worst: dict[str, float] = {}
    for seed in range(1, 41):
        report = _check(reference, _profile(*_studies(150, seed=seed), reference=reference))
        assert report.status == drift.OK, report.message
        for c in report.checks:
            worst[c.statistic] = max(worst.get(c.statistic, 0.0), c.value / c.limit)
    # every statistic was judged, and even the worst seed stays clear of its limit
    assert {"ks:score", "flagged_share", "psi:score", "psi:mean_intensity", "psi:view"} <= set(worst)
    assert max(worst.values()) < 1.0


def test_a_new_scanner_is_drift_naming_the_statistic_its_value_and_the_limit(reference):
    batch = _profile(*_studies(150, seed=99, brightness=45, contrast=0.6), reference=reference)
    report = _check(reference, batch)
    assert report.status == drift.DRIFT
    past = {c.statistic: c for c in report.checks if c.drifted}
    assert "psi:mean_intensity" in past and "psi:std_intensity" in past and "psi:score" not in past
    check = past["psi:mean_intensity"]
    # the limit: 0.25 plus what sampling alone gives, 9 * (1/600 + 1/150) with ten reference bins
    assert check.limit == pytest.approx(0.25 + 9 * (1 / 600 + 1 / 150), abs=1e-4)
    assert f"psi:mean_intensity = {check.value:.3f} > limit {check.limit:g}" in report.message


def test_the_sampling_allowance_is_the_expected_psi_without_drift():
    assert drift.sampling_allowance(10, 183, 131) == pytest.approx(9 * (1 / 183 + 1 / 131))
    assert drift.sampling_allowance(10, 5000, 5000) < 0.004 and drift.sampling_allowance(1, 10, 10) == 0.0
    # the mean PSI of same-distribution batches is close to it (200 draws of 150 against 600, ten bins)
    rng = np.random.default_rng(0)
    ref = distribution(rng.normal(size=600))
    values = [drift.psi(ref.counts, distribution(rng.normal(size=150), ref.edges).counts) for _ in range(200)]
    assert np.mean(values) == pytest.approx(drift.sampling_allowance(10, 600, 150), rel=0.3)


def test_a_shifted_score_distribution_trips_ks_and_the_flagged_share(reference):
    pixels, scores, views = _studies(150, seed=5)
    report = _check(reference, _profile(pixels, np.clip(scores + 0.3, 0, 1), views, reference=reference))
    past = {c.statistic for c in report.checks if c.drifted}
    assert {"ks:score", "flagged_share", "psi:score"} <= past and "psi:mean_intensity" not in past


def test_a_batch_too_small_is_reported_as_such_not_as_drift(reference):
    batch = _profile(*_studies(20, seed=3, brightness=80), reference=reference)
    report = _check(reference, batch)
    assert report.status == drift.TOO_SMALL and report.checks == ()
    assert "too small to judge" in report.message and "20" in report.message
    assert _check(reference, batch, DriftConfig(min_batch=10)).status == drift.DRIFT


def test_a_version_without_reference_is_not_judged():
    report = drift.compare(
        None, _profile(*_studies(80, seed=1)), DriftConfig(), model_name="m", version="000003", worklist="w"
    )
    assert report.status == drift.NO_REFERENCE and "no reference profile" in report.message


def test_the_report_round_trips_and_plots(reference):
    report = _check(reference, _profile(*_studies(150, seed=99, brightness=45), reference=reference))
    again = DriftReport.from_dict(report.to_dict(), where="drift.json")
    assert again == report
    png = drift.write_plot(report, reference)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_limits_are_checked():
    with pytest.raises(BadInput, match="min_batch"):
        DriftConfig(min_batch=0)
    with pytest.raises(BadInput, match="psi_limit"):
        DriftConfig(psi_limit=0)


def test_check_drift_fails_or_announces_as_configured_and_never_for_small_batches(reference):
    from xray_tasks.registry.monitoring import verdict

    shifted = _check(
        reference, _profile(*_studies(150, seed=99, brightness=45, contrast=0.6), reference=reference)
    )
    result, failure = verdict(shifted, "fail")
    assert failure == shifted.message and "psi:mean_intensity" in failure and not result["announce"]
    result, failure = verdict(shifted, "asset")
    assert failure is None and result["announce"] and "psi:mean_intensity" in result["drifted"]
    small = _check(reference, _profile(*_studies(20, seed=3, brightness=80), reference=reference))
    for action in ("fail", "asset"):
        result, failure = verdict(small, action)
        assert failure is None and not result["announce"] and result["status"] == "too_small"
    with pytest.raises(BadInput, match="drift_action"):
        verdict(small, "email")
