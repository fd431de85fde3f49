"""The champion's score on the candidate's test split, so the gate never compares numbers from different images.

The "same split" test is ``data.test_split_digest``: the studies' names, labels and patient ids (publish recomputes
it from the candidate's predictions; a champion's comes from its manifest or metrics.json).  Equal digests: the
champion's own test AUROC is comparable as is.  Different digests (new data, a changed split, relabelled studies),
or a champion published before split digests existed (its names-only ``test_digest`` cannot tell a relabelled
split apart): the champion is loaded (verified) and predicts the candidate's test shards; its AUROC there is what
the candidate must match.  When those shards cannot be read, or are not the split
the candidate was evaluated on, the publish stops with the reason instead of comparing mismatched numbers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from xray_tasks.contracts import Metrics
from xray_tasks.registry import catalog, comparisons, integrity
from xray_tasks.registry.gate import ChampionScore, validate_metrics
from xray_tasks.registry.layout import RegistryError, version_uri
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)


def champion_score(
    root: str,
    model_name: str,
    champion: str,
    candidate_metrics: Metrics,
    workspace: str | None = None,
    staged: Path | None = None,
) -> ChampionScore:
    """The champion's test AUROC on the candidate's test split (read or re-scored), and the paired comparison of
    the two on those studies (``comparisons.with_champion``).

    Args:
        workspace: where the candidate's test shards are; default ``metrics.data.workspace``.
        staged: the staged candidate run, whose ``predictions/test.parquet`` is paired with the champion's.

    Raises:
        RegistryError: the champion must be re-scored and the candidate's test shards are unreadable or differ
            from the split the candidate was evaluated on.
    """
    manifest, _ = integrity.read_manifest(version_uri(root, model_name, champion))
    raw = catalog.read_artifact(root, model_name, champion, RunDir.METRICS, manifest=manifest)
    champion_metrics = validate_metrics(json.loads(raw), f"champion {champion} metrics.json")
    wanted = candidate_metrics.data.test_split_digest
    if wanted is None:
        raise RegistryError(
            "the candidate has no test split digest (publish recomputes it; a bug if missing)"
        )
    theirs = manifest.get("data", {}).get("test_split_digest") or champion_metrics.data.test_split_digest
    if theirs == wanted:
        candidate_test = comparisons.staged_test(staged)
        paired = None
        if candidate_test is not None and comparisons.resamples(candidate_metrics):
            theirs_test = comparisons.published_test(root, model_name, champion)
            paired = comparisons.with_champion(candidate_test, theirs_test, champion, candidate_metrics)
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
        (theirs or "none (published before split digests)")[:24],
        wanted[:24],
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
    found = evaluate.split_digest(frame)
    if found != wanted:
        raise RegistryError(
            f"the test shards at {workspace} ({len(frame)} images, split digest {found[:24]}) "
            f"are not the split the candidate was evaluated on (names, labels and patient ids; digest "
            f"{wanted[:24]}); refusing to compare"
        )
    auroc = metrics.auroc(frame["label"].to_numpy(), frame["probability"].to_numpy())
    logger.info("champion %s re-scored on the candidate's test split: AUROC %.4f", champion, auroc)
    paired = comparisons.with_champion(comparisons.staged_test(staged), frame, champion, candidate_metrics)
    return ChampionScore(champion, auroc, "rescored", paired)
