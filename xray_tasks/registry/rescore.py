"""The champion's score on the candidate's test split, so the gate never compares numbers from different images;
and the paired comparisons the gate holds a candidate to.

``metrics.json`` carries ``data.test_digest``.  Equal digests: the champion's own test predictions (published with
it) are on the same studies.  Different digests (new data, a changed split): the champion is loaded (verified) and
predicts the candidate's test shards.  When those shards cannot be read, or are not the split the candidate was
evaluated on, the publish stops with the reason instead of comparing mismatched numbers.  Either way the champion's
predictions and the candidate's feed one paired patient bootstrap of the AUROC difference (``ladder.compare``),
with the candidate's own number of resamples; a candidate evaluated without intervals gets the point comparison.
The metadata baseline's margin is recomputed the same way from the baseline predictions the run carries.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pandas as pd

from xray_tasks.config import EvalConfig
from xray_tasks.contracts import Metrics, PairedComparison
from xray_tasks.registry import catalog
from xray_tasks.registry.gate import ChampionScore, validate_metrics
from xray_tasks.registry.layout import RegistryError
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)


def _resamples(metrics: Metrics) -> int:
    """The candidate's own bootstrap size (0: it was evaluated without intervals)."""
    return metrics.test.bootstrap.resamples if metrics.test.bootstrap else 0


def _staged(uri: str | None) -> pd.DataFrame | None:
    """A predictions table of the locally staged run, ``None`` when the run has none."""
    return pd.read_parquet(uri) if uri and Path(uri).is_file() else None


def baseline_comparison(staged: Path, candidate_metrics: Metrics) -> PairedComparison | None:
    """The candidate minus the metadata baseline on its test studies, recomputed from the staged run's
    ``predictions/test.parquet`` and ``predictions/baseline-test.parquet`` (``None`` when the run has none)."""
    from xray_tasks.evaluation import ladder

    run = RunDir(str(staged))
    base, test = _staged(run.baseline_predictions("test")), _staged(run.predictions("test"))
    if base is None or test is None:
        return None
    cfg = EvalConfig(bootstrap=_resamples(candidate_metrics))
    try:
        return ladder.compare(test, base, "metadata baseline", cfg)
    except ValueError as exc:
        raise RegistryError(
            f"the run's baseline predictions do not match its test predictions: {exc}"
        ) from exc


def _paired(
    candidate_test: pd.DataFrame | None, champion_test: pd.DataFrame, champion: str, metrics: Metrics
) -> PairedComparison | None:
    from xray_tasks.evaluation import ladder

    resamples = _resamples(metrics)
    if candidate_test is None or not resamples:
        return None
    try:
        return ladder.compare(
            candidate_test, champion_test, f"champion {champion}", EvalConfig(bootstrap=resamples)
        )
    except ValueError as exc:
        raise RegistryError(
            f"the champion's predictions do not cover the candidate's test studies: {exc}"
        ) from exc


def champion_score(
    root: str,
    model_name: str,
    champion: str,
    candidate_metrics: Metrics,
    workspace: str | None = None,
    staged: Path | None = None,
) -> ChampionScore:
    """The champion's test AUROC on the candidate's test split (read or re-scored), with the paired comparison.

    Args:
        workspace: where the candidate's test shards are; default ``metrics.data.workspace``.
        staged: the staged candidate run; its ``predictions/test.parquet`` is paired with the champion's.

    Raises:
        RegistryError: the champion must be re-scored and the candidate's test shards are unreadable or differ
            from the split the candidate was evaluated on.
    """
    raw = catalog.read_artifact(root, model_name, champion, RunDir.METRICS)
    champion_metrics = validate_metrics(json.loads(raw), f"champion {champion} metrics.json")
    wanted = candidate_metrics.data.test_digest
    candidate_test = _staged(RunDir(str(staged)).predictions("test")) if staged else None
    if champion_metrics.data.test_digest == wanted:
        paired = None
        if candidate_test is not None and _resamples(candidate_metrics):
            raw = catalog.read_artifact(root, model_name, champion, f"{RunDir.PREDICTIONS}/test.parquet")
            paired = _paired(candidate_test, pd.read_parquet(io.BytesIO(raw)), champion, candidate_metrics)
        return ChampionScore(champion, float(champion_metrics.test.auroc), "same_split", paired)

    from xray_tasks.evaluation import evaluate, metrics
    from xray_tasks.registry import consumer

    workspace = workspace or candidate_metrics.data.workspace
    if not workspace:
        raise RegistryError(
            "the champion was evaluated on another test split and the candidate's metrics.json "
            "names no workspace to re-score it on; pass the workspace explicitly"
        )
    logger.info(
        "champion %s was tested on another split (digest %s vs %s): re-scoring it on %s",
        champion,
        champion_metrics.data.test_digest[:12],
        wanted[:12],
        workspace,
    )
    published = consumer.load(root, model_name, champion)
    try:
        frame = evaluate.predict_split(published.model, workspace, "test")
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise RegistryError(
            f"the champion must be re-scored on the candidate's test split but {workspace} cannot "
            f"be read: {exc}"
        ) from exc
    if evaluate.digest(frame) != wanted:
        raise RegistryError(
            f"the test shards at {workspace} ({len(frame)} images, digest {evaluate.digest(frame)[:12]}) "
            f"are not the split the candidate was evaluated on (digest "
            f"{wanted[:12]}); refusing to compare"
        )
    auroc = metrics.auroc(frame["label"].to_numpy(), frame["probability"].to_numpy())
    logger.info("champion %s re-scored on the candidate's test split: AUROC %.4f", champion, auroc)
    return ChampionScore(
        champion, auroc, "rescored", _paired(candidate_test, frame, champion, candidate_metrics)
    )
