"""Gate integrity: publish recomputes every judged number from the run's predictions and the manifest's labels,
refuses a metrics.json that disagrees (naming the field), and tells a relabelled test split from the same one.
On a local root and on the S3 API server."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from support.registry import write_run

from xray_tasks import storage
from xray_tasks.config import GatePolicy
from xray_tasks.errors import IntegrityError
from xray_tasks.registry import RegistryError, list_versions, publish, read_decisions
from xray_tasks.registry.layout import version_uri

NAME = "xray-triage"


def edit_metrics(run, change) -> None:
    path = run / "metrics.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("test.auroc", lambda d: d["test"].update(auroc=0.97)),
        ("test.auroc_ci", lambda d: d["test"].update(auroc_ci=[0.9, 0.99])),
        ("operating_point.threshold", lambda d: d["operating_point"].update(threshold=0.2)),
        ("test.at_operating_point.recall", lambda d: d["test"]["at_operating_point"].update(recall=1.0)),
        (
            "test.at_operating_point.healthy_cleared",
            lambda d: d["test"]["at_operating_point"].update(healthy_cleared=0.9),
        ),
        ("data.test_split_digest", lambda d: d["data"].update(test_split_digest="split-v1:" + "0" * 64)),
    ],
)
def test_a_metrics_json_edited_after_evaluation_is_refused(registry, tmp_path, field, change):
    run = write_run(tmp_path / "run", auroc=0.62)
    edit_metrics(run, change)
    with pytest.raises(
        IntegrityError, match=rf"{field.replace('.', '[.]')} is .* in metrics.json, .* recomputed"
    ):
        publish(str(run), registry)
    assert list_versions(registry, NAME) == []  # refused before a version was claimed


def test_the_gate_judges_the_recomputed_numbers_and_records_what_it_checked(registry, tmp_path):
    summary = publish(str(write_run(tmp_path / "run", auroc=0.8)), registry)
    assert summary.decision == "approved"
    context = read_decisions(registry, NAME, summary.version)[0]["gate"]["context"]
    assert {"test.auroc", "test.auroc_ci", "operating_point.threshold"} <= set(context["recomputed"])
    assert context["test_split_digest"].startswith("split-v1:")


def test_predictions_whose_labels_differ_from_the_manifest_are_refused(registry, tmp_path):
    run = write_run(tmp_path / "run")
    path = run / "predictions" / "test.parquet"
    frame = pd.read_parquet(path)
    frame.loc[0, "label"] = 1 - frame.loc[0, "label"]
    frame.to_parquet(path, index=False)
    with pytest.raises(IntegrityError, match="the label of 1 studies differs from the workspace manifest"):
        publish(str(run), registry)


def test_a_non_finite_prediction_or_another_manifest_is_refused(registry, tmp_path):
    run = write_run(tmp_path / "run")
    path = run / "predictions" / "val.parquet"
    good = pd.read_parquet(path)
    bad = good.copy()
    bad.loc[3, "probability"] = np.nan
    bad.to_parquet(path, index=False)
    with pytest.raises(IntegrityError, match="val.parquet has 1 probabilities that are not finite"):
        publish(str(run), registry)
    good.to_parquet(path, index=False)
    edit_metrics(run, lambda d: d["data"].update(manifest_sha256="0" * 64))
    with pytest.raises(IntegrityError, match="data.manifest_sha256"):
        publish(str(run), registry)
    edit_metrics(run, lambda d: d["data"].update(workspace=None))
    with pytest.raises(ValueError, match="names no workspace"):
        publish(str(run), registry)


def test_a_relabelled_test_split_is_not_the_same_split(registry, tmp_path):
    lenient = GatePolicy(min_auroc=0.0, min_auroc_ci_low=0.0)
    publish(str(write_run(tmp_path / "old", seed=1, auroc=0.8)), registry, policy=lenient)
    same = write_run(tmp_path / "same", seed=2, auroc=0.85)
    relabelled = write_run(tmp_path / "relabelled", seed=3, auroc=0.85, relabel=("00020000_000.png",))
    old, new = (json.loads((r / "metrics.json").read_text())["data"] for r in (same, relabelled))
    assert old["test_digest"] == new["test_digest"]  # the names-only digest cannot tell them apart
    assert old["test_split_digest"] != new["test_split_digest"]

    # Labels changed: the champion's own number is not comparable; it must be re-scored on the candidate's
    # shards, which this labels-only workspace does not have, so the publish stops instead of comparing.
    with pytest.raises(RegistryError, match="must be re-scored on the candidate's test split"):
        publish(str(relabelled), registry, policy=lenient)
    assert [r["version"] for r in list_versions(registry, NAME)] == ["000001"]
    summary = publish(str(same), registry, policy=lenient)
    champion = read_decisions(registry, NAME, summary.version)[0]["gate"]["context"]["champion"]
    assert champion["basis"] == "same_split" and summary.decision == "approved"


def test_a_run_evaluated_before_split_digests_still_publishes(registry, tmp_path):
    run = write_run(tmp_path / "run", auroc=0.8)
    edit_metrics(run, lambda d: [d["data"].pop(k) for k in ("test_split_digest", "val_split_digest")])
    summary = publish(str(run), registry)
    assert summary.decision == "approved"
    manifest = storage.read_json(storage.join(version_uri(registry, NAME, summary.version), "MANIFEST.json"))
    assert manifest["data"]["test_split_digest"].startswith("split-v1:")  # recomputed at publish
