"""metrics: known answers from the report, brute-force cross-checks, the threshold rule, bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xray_tasks.evaluation import metrics


def report_arrays(tn: int, fp: int, fn: int, tp: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities that give exactly this confusion matrix at 0.5."""
    labels = np.r_[np.zeros(tn + fp), np.ones(fn + tp)].astype(int)
    probs = np.r_[np.full(tn, 0.2), np.full(fp, 0.7), np.full(fn, 0.4), np.full(tp, 0.9)]
    return labels, probs


def test_report_confusion_matrix_gives_its_f3_and_accuracy():
    labels, probs = report_arrays(7937, 4193, 2936, 7358)
    cm = metrics.confusion(labels, probs, 0.5)
    assert cm == {"tn": 7937, "fp": 4193, "fn": 2936, "tp": 7358}
    summary = metrics.summary_at(labels, probs, 0.5)
    assert round(summary.f_beta, 4) == 0.7062
    assert round(summary.accuracy, 4) == 0.6821
    assert summary.recall == pytest.approx(7358 / 10294)
    assert summary.specificity == pytest.approx(7937 / 12130) == summary.healthy_cleared


def test_report_always_unhealthy_benchmark():
    labels, _ = report_arrays(7937, 4193, 2936, 7358)
    bench = metrics.always_unhealthy(labels)
    assert (bench.tn, bench.fp, bench.fn, bench.tp) == (0, 12130, 0, 10294)
    assert round(bench.f_beta, 4) == 0.8946
    assert round(bench.accuracy, 4) == 0.4591
    assert bench.recall == 1.0 and bench.specificity == 0.0


def test_f_beta_key_follows_beta_and_rejects_nonsense():
    summary = metrics.summary_at([0, 1], [0.1, 0.9], 0.5, beta=1)
    assert summary.f_beta == 1.0 and summary.beta == 1.0 and summary.f_key == "f1"
    with pytest.raises(ValueError, match="beta must be > 0, got 0"):
        metrics.f_beta(1, 0, 0, beta=0)
    with pytest.raises(ValueError, match="labels must be 0/1"):
        metrics.confusion([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="equally long"):
        metrics.confusion([0, 1, 1], [0.1, 0.2], 0.5)


def brute_auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    pos, neg = probs[labels == 1], probs[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def brute_average_precision(labels: np.ndarray, probs: np.ndarray) -> float:
    total, prev_recall = 0.0, 0.0
    for t in np.unique(probs)[::-1]:
        flagged = probs >= t
        recall = (flagged & (labels == 1)).sum() / labels.sum()
        precision = (flagged & (labels == 1)).sum() / flagged.sum()
        total += (recall - prev_recall) * precision
        prev_recall = recall
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_auprc_match_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    probs = np.round(rng.uniform(size=300) * 0.6 + 0.4 * labels, 1)  # coarse values: many ties
    assert metrics.auroc(labels, probs) == pytest.approx(brute_auroc(labels, probs), abs=1e-12)
    assert metrics.auprc(labels, probs) == pytest.approx(brute_average_precision(labels, probs), abs=1e-12)


def test_auroc_edge_cases():
    assert metrics.auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.auroc([0, 1], [0.5, 0.5]) == 0.5
    assert math.isnan(metrics.auroc([1, 1], [0.5, 0.7]))


def test_roc_curve_ends_at_one_one_and_is_monotone():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    fpr, tpr, thresholds = metrics.roc_curve(labels, rng.uniform(size=200))
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thresholds) < 0)


def test_area_under_the_roc_points_is_the_auroc():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 300)
    probs = np.round(rng.uniform(size=300), 2)
    fpr, tpr, _ = metrics.roc_curve(labels, probs)
    assert np.trapz(tpr, fpr) == pytest.approx(metrics.auroc(labels, probs), abs=1e-12)


def _best_operating_point(labels, probs, target):
    """Brute force: among thresholds meeting the target, the most healthy cleared, then the most caught."""
    scores = np.unique(probs)
    candidates = np.r_[scores, (scores[:-1] + scores[1:]) / 2, scores[-1] + 1]
    feasible = [metrics.summary_at(labels, probs, t) for t in candidates]
    feasible = [s for s in feasible if s.recall >= target]
    return max((s.specificity, s.recall) for s in feasible)


@pytest.mark.parametrize("seed", range(6))
def test_choose_threshold_clears_the_most_then_catches_the_most(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=200) < 0.4).astype(int)
    probs = np.round(np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1), 2)  # ties on purpose
    for target in (0.8, 0.95, 1.0):
        t = metrics.choose_threshold(labels, probs, target)
        chosen = metrics.summary_at(labels, probs, t)
        assert chosen.recall >= target
        assert (chosen.specificity, chosen.recall) == _best_operating_point(labels, probs, target)


def test_choose_threshold_on_a_well_separated_validation_set():
    labels = np.r_[np.zeros(5), np.ones(20)].astype(int)
    probs = np.r_[[0.01, 0.02, 0.03, 0.05, 0.2], np.linspace(0.97, 1.0, 20)]
    t = metrics.choose_threshold(labels, probs, 0.95)
    assert t == pytest.approx((0.2 + 0.97) / 2)  # midway into the gap, not inside the unhealthy scores
    assert metrics.summary_at(labels, probs, t).recall == 1.0


def test_choose_threshold_examples_and_errors():
    labels = np.r_[np.zeros(5), np.ones(10)].astype(int)
    probs = np.r_[[0.05, 0.35, 0.5, 0.62, 0.95], np.linspace(0.1, 1.0, 10)]
    # 8 of 10 positives are >= 0.3, which clears 0.05 only; lowering to just above 0.05 costs nothing
    assert metrics.choose_threshold(labels, probs, 0.8) == pytest.approx((0.05 + 0.1) / 2)
    assert metrics.choose_threshold(labels, probs, 1.0) == pytest.approx((0.05 + 0.1) / 2)
    assert metrics.choose_threshold([0, 1, 1], [0.9, 0.2, 0.8], 1.0) == pytest.approx(
        0.2
    )  # nothing clearable
    with pytest.raises(ValueError, match=r"must be in \(0, 1\], got 1.5"):
        metrics.choose_threshold(labels, probs, 1.5)
    with pytest.raises(ValueError, match="without unhealthy studies"):
        metrics.choose_threshold([0, 0], [0.1, 0.2], 0.9)


def test_threshold_sweep_counts_cleared_and_missed():
    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([0.1, 0.4, 0.6, 0.3, 0.8])
    sweep = metrics.threshold_sweep(labels, probs, [0.0, 0.35, 0.5, 1.0])
    assert sweep["healthy_cleared"] == [0, 1, 2, 3]
    assert sweep["unhealthy_missed"] == [0, 1, 1, 2]
    full = metrics.threshold_sweep(labels, probs)
    assert len(full["threshold"]) == 101 and full["threshold"][50] == 0.5


def test_bootstrap_intervals_cover_the_estimate_and_group_by_patient():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    probs = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    patients = np.repeat(np.arange(200), 2)
    point = metrics.auroc(labels, probs)
    ci = metrics.bootstrap_intervals(labels, probs, 0.5, groups=patients, n=300, seed=1)
    lo, hi = ci["auroc_ci"]
    assert lo < point < hi and hi - lo < 0.2
    sens = metrics.summary_at(labels, probs, 0.5).recall
    assert ci["sensitivity_ci"][0] < sens < ci["sensitivity_ci"][1]
    again = metrics.bootstrap_intervals(labels, probs, 0.5, groups=patients, n=300, seed=1)
    assert again == ci  # seeded: reproducible


def test_weighted_auroc_equals_auroc_of_the_expanded_sample():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 50)
    probs = np.round(rng.uniform(size=50), 1)
    counts = rng.integers(0, 4, 50)
    expanded = np.repeat(np.arange(50), counts)
    got = metrics._weighted_auroc(labels.astype(np.int8), probs, counts[None, :].astype(float))[0]
    assert got == pytest.approx(brute_auroc(labels[expanded], probs[expanded]), abs=1e-12)


def test_per_label_auroc_skips_nan_and_one_class_columns():
    names = ("A", "B", "C")
    labels = np.array([[0, 1, 0], [1, 1, np.nan], [0, 1, 1], [1, 1, 0]], dtype=float)
    probs = np.array([[0.1, 0.5, 0.2], [0.9, 0.5, 0.9], [0.2, 0.5, 0.8], [0.8, 0.5, 0.1]])
    out = metrics.per_label_auroc(labels, probs, names)
    assert out == {"A": 1.0, "B": None, "C": 1.0}
    with pytest.raises(ValueError, match=r"must both be \[N, 3\]"):
        metrics.per_label_auroc(labels[:, :2], probs[:, :2], names)


def brute_paired_deltas(labels, cand, ref, patients, n, seed):
    """The paired bootstrap spelled out: draw patients, copy each drawn patient's studies, score both models."""
    ids = np.unique(patients)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=n)
    deltas = []
    for counts in draws:
        rows = np.concatenate([np.flatnonzero(patients == pid).repeat(c) for pid, c in zip(ids, counts)])
        y = labels[rows]
        if 0 < y.sum() < len(y):
            deltas.append(brute_auroc(y, cand[rows]) - brute_auroc(y, ref[rows]))
    return np.array(deltas)


@pytest.mark.parametrize("seed", [0, 3])
def test_paired_bootstrap_matches_resampling_patients_by_hand(seed):
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(9), rng.integers(1, 4, 9))  # 9 patients, 1-3 studies each
    rng.shuffle(patients)
    labels = rng.integers(0, 2, len(patients))
    cand = np.round(np.clip(rng.normal(0.4 + 0.3 * labels, 0.25), 0, 1), 1)  # rounded: ties
    ref = np.round(rng.uniform(size=len(patients)), 1)
    got = metrics.paired_bootstrap_auroc(labels, cand, ref, groups=patients, n=200, seed=seed, chunk=200)
    deltas = brute_paired_deltas(labels, cand, ref, patients, 200, seed)
    assert got["delta_ci"] == pytest.approx(np.percentile(deltas, [2.5, 97.5]).tolist(), abs=1e-12)
    assert got["delta"] == pytest.approx(brute_auroc(labels, cand) - brute_auroc(labels, ref), abs=1e-12)
    assert got["n"] == len(labels) and got["resamples"] == 200


def test_paired_bootstrap_known_answers():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    perfect = labels * 0.5 + 0.25
    reversed_ = 1.0 - perfect
    flip = metrics.paired_bootstrap_auroc(labels, perfect, reversed_, n=300)
    assert flip["delta"] == 1.0 and flip["delta_ci"] == [1.0, 1.0]  # every resample: 1 - 0
    same = metrics.paired_bootstrap_auroc(labels, perfect, perfect.copy(), groups=np.arange(8) // 2, n=300)
    assert same["delta"] == 0.0 and same["delta_ci"] == [0.0, 0.0]  # paired: the noise cancels exactly


def test_paired_interval_is_narrower_than_either_models_own():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    shared = rng.normal(size=2000)  # what both models see: the paired draws cancel it
    ref = shared + 0.8 * labels + rng.normal(0, 0.3, 2000)
    cand = ref + 0.05 * labels + rng.normal(0, 0.1, 2000)
    paired = metrics.paired_bootstrap_auroc(labels, cand, ref, n=300, seed=2)
    own = metrics.bootstrap_intervals(labels, cand, 0.5, n=300, seed=2)["auroc_ci"]
    assert paired["delta_ci"][0] < paired["delta"] < paired["delta_ci"][1]
    assert paired["delta_ci"][1] - paired["delta_ci"][0] < (own[1] - own[0]) / 2
    with pytest.raises(ValueError, match="groups must be one per study"):
        metrics.paired_bootstrap_auroc(labels, cand, ref, groups=[1, 2])
