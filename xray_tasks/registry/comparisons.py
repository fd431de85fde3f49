"""The gate's paired comparisons, computed at publish time from predictions (never read from metrics.json).

Both take the candidate's staged ``predictions/test.parquet`` and a reference on the same test studies: the
champion's predictions (its published ``predictions/test.parquet`` on the same split, or its predictions on the
candidate's split when ``rescore`` re-scored it), or the metadata baseline's ``predictions/baseline-test.parquet``
that evaluate copied into the run.  One paired patient bootstrap of the AUROC difference (``ladder.compare``),
with the candidate's own number of resamples; a candidate evaluated without intervals gets ``None`` (champion:
the gate falls back to the point difference) or a point comparison (baseline).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from xray_tasks.config import EvalConfig
from xray_tasks.contracts import Metrics, PairedComparison
from xray_tasks.registry import catalog
from xray_tasks.registry.layout import RegistryError
from xray_tasks.workspace import RunDir


def resamples(metrics: Metrics) -> int:
    """The candidate's own bootstrap size (0: it was evaluated without intervals)."""
    return metrics.test.bootstrap.resamples if metrics.test.bootstrap else 0


def staged_test(staged: Path | str | None, baseline: bool = False) -> pd.DataFrame | None:
    """The staged run's test predictions (or its baseline's), ``None`` when the run has none."""
    if not staged:
        return None
    run = RunDir(str(staged))
    uri = run.baseline_predictions("test") if baseline else run.predictions("test")
    return pd.read_parquet(uri) if Path(uri).is_file() else None


def published_test(root: str, model_name: str, version: str) -> pd.DataFrame:
    """A published version's test predictions, checked against its manifest."""
    raw = catalog.read_artifact(root, model_name, version, f"{RunDir.PREDICTIONS}/test.parquet")
    return pd.read_parquet(io.BytesIO(raw))


def with_champion(
    candidate_test: pd.DataFrame | None, champion_test: pd.DataFrame, champion: str, metrics: Metrics
) -> PairedComparison | None:
    """Candidate minus champion on the candidate's test studies (``None`` without intervals or predictions).

    Raises:
        RegistryError: the champion's predictions do not cover the candidate's studies with the same labels.
    """
    from xray_tasks.evaluation import ladder

    n = resamples(metrics)
    if candidate_test is None or not n:
        return None
    try:
        return ladder.compare(candidate_test, champion_test, f"champion {champion}", EvalConfig(bootstrap=n))
    except ValueError as exc:
        raise RegistryError(
            f"the champion's predictions do not cover the candidate's test studies: {exc}"
        ) from exc


def with_baseline(staged: Path | str, metrics: Metrics) -> PairedComparison | None:
    """Candidate minus the metadata baseline on its test studies (``None`` when the run carries no baseline).

    Raises:
        RegistryError: the baseline's predictions are not on the run's test studies.
    """
    from xray_tasks.evaluation import ladder

    base, test = staged_test(staged, baseline=True), staged_test(staged)
    if base is None or test is None:
        return None
    try:
        return ladder.compare(test, base, "metadata baseline", EvalConfig(bootstrap=resamples(metrics)))
    except ValueError as exc:
        raise RegistryError(
            f"the run's baseline predictions do not match its test predictions: {exc}"
        ) from exc
