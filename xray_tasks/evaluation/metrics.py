"""Triage metrics in plain numpy: confusion counts, F-beta, ROC/PR, the threshold sweep, bootstrap intervals
(one model's, and the paired interval of two models' AUROC difference).

Conventions used everywhere: label 1 = unhealthy (a finding), 0 = healthy ("No Finding"); ``probs`` is
P(unhealthy); a study is flagged unhealthy when ``prob >= threshold``.  The report predicted "healthy" when
P(healthy) > 0.5, which is the same rule at 0.5.  Ratios with an empty denominator are 0.0 (no warning), like
scikit-learn's ``zero_division=0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from xray_tasks.contracts import Rates
from xray_tasks.errors import BadInput

CONFUSION_KEYS = ("tn", "fp", "fn", "tp")


def _arrays(
    labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise BadInput(f"labels and probs must be 1-d and equally long, got shapes {y.shape} and {p.shape}")
    if len(y) and not np.isin(y, (0, 1)).all():
        raise BadInput(f"labels must be 0/1, got values {np.unique(y)[:10].tolist()}")
    if not np.isfinite(p).all():
        raise BadInput(f"probs must be finite, got {int((~np.isfinite(p)).sum())} non-finite value(s)")
    return y.astype(np.int8), p


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def confusion(labels, probs, threshold: float) -> dict[str, int]:
    """Counts ``tn, fp, fn, tp`` when studies with ``prob >= threshold`` are flagged unhealthy."""
    y, p = _arrays(labels, probs)
    flagged = p >= threshold
    return {
        "tn": int(np.sum(~flagged & (y == 0))),
        "fp": int(np.sum(flagged & (y == 0))),
        "fn": int(np.sum(~flagged & (y == 1))),
        "tp": int(np.sum(flagged & (y == 1))),
    }


def f_beta(tp: int, fp: int, fn: int, beta: float = 3.0) -> float:
    """F-beta from counts: (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)."""
    if beta <= 0:
        raise BadInput(f"beta must be > 0, got {beta}")
    b2 = beta * beta
    return _ratio((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)


def rates(counts: dict[str, int], beta: float = 3.0) -> Rates:
    """The counts plus F-beta, accuracy, precision, recall, specificity and ``healthy_cleared``.

    ``healthy_cleared`` equals specificity, read as a workload figure: the share of healthy studies a doctor no
    longer needs to read.
    """
    missing = [k for k in CONFUSION_KEYS if k not in counts]
    if missing:
        raise BadInput(f"counts need keys {list(CONFUSION_KEYS)}, missing {missing}")
    tn, fp, fn, tp = (int(counts[k]) for k in CONFUSION_KEYS)
    specificity = _ratio(tn, tn + fp)
    return Rates(
        tn=tn,
        fp=fp,
        fn=fn,
        tp=tp,
        beta=float(beta),
        f_beta=f_beta(tp, fp, fn, beta),
        accuracy=_ratio(tp + tn, tn + fp + fn + tp),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        specificity=specificity,
        healthy_cleared=specificity,
    )


def summary_at(labels, probs, threshold: float, beta: float = 3.0) -> Rates:
    """``rates`` of the confusion counts at ``threshold``."""
    return rates(confusion(labels, probs, threshold), beta)


def always_unhealthy(labels, beta: float = 3.0) -> Rates:
    """The report's benchmark: every study flagged unhealthy (what reading every X-ray amounts to)."""
    y = np.asarray(labels)
    return rates({"tn": 0, "fp": int(np.sum(y == 0)), "fn": 0, "tp": int(np.sum(y == 1))}, beta)


def choose_threshold(labels, probs, target: float) -> float:
    """The operating point for a sensitivity target, chosen on these (validation) studies.

    Among the thresholds whose sensitivity reaches ``target``, the largest clears the most healthy studies. Below
    it, down to the highest-scored healthy study it still clears, lie only unhealthy studies: lowering the
    threshold there flags them at no cost, so the threshold goes midway between that healthy study and the next
    score above it. (Without this, a well-separated validation set puts the threshold inside the unhealthy
    scores and test sensitivity falls short of the target for no gain.)
    """
    if not 0.0 < target <= 1.0:
        raise BadInput(f"target sensitivity must be in (0, 1], got {target}")
    y, p = _arrays(labels, probs)
    positives = np.sort(p[y == 1])[::-1]
    if not len(positives):
        raise BadInput("cannot choose a threshold for a sensitivity target without unhealthy studies")
    k = max(1, math.ceil(target * len(positives) - 1e-9))
    strictest = float(positives[k - 1])  # flags exactly enough positives: clears the most healthy studies
    cleared = p[(y == 0) & (p < strictest)]
    if not len(cleared):  # nothing healthy is cleared anyway: flag everything, catch every positive
        return float(p.min())
    highest_cleared = float(cleared.max())
    next_score = float(p[p > highest_cleared].min())
    return (highest_cleared + next_score) / 2


def roc_curve(labels, probs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct probability, from the strictest threshold down; starts at (0, 0)."""
    y, p = _arrays(labels, probs)
    thresholds, tp, fp = _cumulative(y, p)
    pos, neg = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos], np.r_[np.inf, thresholds]


def pr_curve(labels, probs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct probability, from the strictest threshold down."""
    y, p = _arrays(labels, probs)
    thresholds, tp, fp = _cumulative(y, p)
    recall = tp / max(int(y.sum()), 1)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp, dtype=np.float64), where=(tp + fp) > 0)
    return precision, recall, thresholds


def _cumulative(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) and the TP/FP counts when flagging ``p >= threshold``."""
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last_of_group = (
        np.r_[np.nonzero(np.diff(p_sorted))[0], len(p_sorted) - 1] if len(p) else np.array([], int)
    )
    tp = np.cumsum(y_sorted, dtype=np.float64)[last_of_group]
    fp = (last_of_group + 1) - tp
    return p_sorted[last_of_group], tp, fp


def auroc(labels, probs) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half); NaN when a class is absent."""
    y, p = _arrays(labels, probs)
    return float(_weighted_auroc(y, p, np.ones((1, len(y))))[0])


def auprc(labels, probs) -> float:
    """Average precision: sum over thresholds of (recall step) x precision; NaN without unhealthy studies."""
    y, p = _arrays(labels, probs)
    if not y.sum():
        return float("nan")
    precision, recall, _ = pr_curve(y, p)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _weighted_auroc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of ``weights`` (sample multiplicities, e.g. bootstrap counts) with one sort."""
    order = np.argsort(p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order].astype(bool)
    w = weights[:, order]
    starts = np.r_[0, np.nonzero(np.diff(p_sorted))[0] + 1] if len(p) else np.array([0])
    if not len(p):
        return np.full(len(weights), np.nan)
    neg = np.add.reduceat(np.where(y_sorted, 0.0, w), starts, axis=1)
    pos = np.add.reduceat(np.where(y_sorted, w, 0.0), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        area = np.sum(pos * (neg_below + 0.5 * neg), axis=1) / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), area, np.nan)


def bootstrap_intervals(
    labels,
    probs,
    threshold: float,
    *,
    groups=None,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int = 100,
) -> dict[str, list[float] | int]:
    """Percentile intervals for AUROC and for sensitivity at a fixed ``threshold``.

    Resamples whole ``groups`` (patient ids) with replacement when given, since studies of one patient are not
    independent; otherwise single studies.  Resamples missing a class are dropped from the AUROC interval.
    Returns ``{"auroc_ci": [lo, hi], "sensitivity_ci": [lo, hi], "n": n}``.
    """
    if n < 1 or not 0.0 < level < 1.0:
        raise BadInput(f"need n >= 1 and level in (0, 1), got n={n}, level={level}")
    y, p = _arrays(labels, probs)
    if groups is None:
        codes = np.arange(len(y))
    else:
        _, codes = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    if not n_groups:
        raise BadInput("bootstrap needs at least one study")
    rng = np.random.default_rng(seed)
    flagged_pos = ((p >= threshold) & (y == 1)).astype(np.float64)
    is_pos = (y == 1).astype(np.float64)
    aurocs, sensitivities = [], []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        group_counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=size)
        w = group_counts[:, codes].astype(np.float64)
        aurocs.append(_weighted_auroc(y, p, w))
        with np.errstate(invalid="ignore", divide="ignore"):
            sensitivities.append((w @ flagged_pos) / (w @ is_pos))
    tail = (1.0 - level) / 2 * 100

    def interval(values: list[np.ndarray]) -> list[float]:
        v = np.concatenate(values)
        v = v[np.isfinite(v)]
        return (
            [float("nan"), float("nan")]
            if not len(v)
            else [float(x) for x in np.percentile(v, [tail, 100 - tail])]
        )

    return {"auroc_ci": interval(aurocs), "sensitivity_ci": interval(sensitivities), "n": n}


def paired_bootstrap_auroc(
    labels,
    candidate,
    reference,
    *,
    groups=None,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int = 100,
) -> dict[str, float | list[float] | int]:
    """The AUROC difference ``candidate - reference`` on the same studies, with a paired percentile interval.

    Both scores are resampled with the *same* draw of whole ``groups`` (patient ids) each time, so what the two
    models share (the hard patients, the easy ones) cancels out of the difference; that is why the paired
    interval is narrower than either model's own.  Resamples missing a class are dropped.  Returns
    ``{"candidate_auroc", "reference_auroc", "delta", "delta_ci": [lo, hi], "resamples", "n"}``.
    """
    if n < 1 or not 0.0 < level < 1.0:
        raise BadInput(f"need n >= 1 and level in (0, 1), got n={n}, level={level}")
    y, p_c = _arrays(labels, candidate)
    _, p_r = _arrays(labels, reference)
    codes = _group_codes(y, groups)
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    deltas = []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        group_counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=size)
        w = group_counts[:, codes].astype(np.float64)
        deltas.append(_weighted_auroc(y, p_c, w) - _weighted_auroc(y, p_r, w))
    values = np.concatenate(deltas)
    values = values[np.isfinite(values)]
    tail = (1.0 - level) / 2 * 100
    ci = [float(x) for x in np.percentile(values, [tail, 100 - tail])] if len(values) else [math.nan] * 2
    a_c, a_r = auroc(y, p_c), auroc(y, p_r)
    return {
        "candidate_auroc": a_c,
        "reference_auroc": a_r,
        "delta": a_c - a_r,
        "delta_ci": ci,
        "resamples": n,
        "n": len(y),
    }


def _group_codes(y: np.ndarray, groups) -> np.ndarray:
    """0..G-1 per study: its patient's code (each study its own group without ``groups``)."""
    if not len(y):
        raise BadInput("bootstrap needs at least one study")
    if groups is None:
        return np.arange(len(y))
    g = np.asarray(groups)
    if g.shape != y.shape:
        raise BadInput(f"groups must be one per study, got shape {g.shape} for {len(y)} studies")
    return np.unique(g, return_inverse=True)[1].reshape(-1)


def threshold_sweep(labels, probs, thresholds=None) -> dict[str, list[float] | list[int]]:
    """The report's Figure 10: healthy studies cleared (TN) and unhealthy studies missed (FN) per threshold.

    ``thresholds`` defaults to 0.00, 0.01, ..., 1.00.  A study is cleared when ``prob < threshold``.
    """
    y, p = _arrays(labels, probs)
    t = (
        np.round(np.linspace(0.0, 1.0, 101), 2)
        if thresholds is None
        else np.asarray(thresholds, dtype=np.float64)
    )
    healthy, unhealthy = np.sort(p[y == 0]), np.sort(p[y == 1])
    cleared = np.searchsorted(healthy, t, side="left")
    missed = np.searchsorted(unhealthy, t, side="left")
    return {
        "threshold": t.tolist(),
        "healthy_cleared": cleared.tolist(),
        "unhealthy_missed": missed.tolist(),
        "healthy": len(healthy),
        "unhealthy": len(unhealthy),
    }


def per_label_auroc(labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    """AUROC per column; NaN targets are skipped and a column with one class left gives ``None``."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2 or y.shape[1] != len(names):
        raise BadInput(f"labels and probs must both be [N, {len(names)}], got {y.shape} and {p.shape}")
    out: dict[str, float | None] = {}
    for i, name in enumerate(names):
        known = ~np.isnan(y[:, i])
        column = y[known, i].astype(np.int8)
        out[name] = auroc(column, p[known, i]) if 0 < column.sum() < len(column) else None
    return out
