"""The metadata baseline: the fit recovers known weights, the stage writes one folder per manifest and reuses it,
its threshold is chosen on validation, and unusable input is refused with the reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xray_tasks.config import PATHOLOGIES, profile
from xray_tasks.data import manifest
from xray_tasks.evaluation import baseline, evaluate, metrics


def metadata_table(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Manifest rows whose label depends on follow-up and age (as in NIH), sex and view carry nothing."""
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n // 3, n)
    follow = rng.integers(0, 30, n)
    age = rng.uniform(10, 90, n)
    logit = 0.8 * (np.log1p(follow) - 1.9) + 0.02 * (age - 50)
    label = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    split = np.array(["train", "train", "train", "val", "test"])[patients % 5]
    table = pd.DataFrame(
        {
            "image_index": [f"{i:08d}_000.png" for i in range(n)],
            "patient_id": patients.astype(np.int64),
            "follow_up": follow.astype(np.int32),
            "age": np.where(rng.uniform(size=n) < 0.01, np.nan, age).astype(np.float32),
            "sex": rng.choice(["M", "F"], n),
            "view": rng.choice(["PA", "AP"], n),
            "finding_labels": np.where(label == 1, "Effusion", "No Finding"),
            "label": label,
            "split": split,
        }
    )
    for name in PATHOLOGIES:
        table[name] = (label * (name == "Effusion")).astype(np.int8)
    return table


def write_workspace(path, table: pd.DataFrame) -> str:
    manifest.write_manifest(table, {"counts": manifest.counts(table)}, str(path))
    return str(path)


def test_the_fit_recovers_known_weights():
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(size=20000), rng.normal(size=20000), rng.integers(0, 2, 20000)])
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    y = rng.uniform(size=20000) < 1 / (1 + np.exp(-(0.3 + 1.0 * z[:, 0] - 0.5 * z[:, 1])))
    model = baseline.fit_logistic(x.astype(float), y, ridge=0.0)
    assert model.intercept == pytest.approx(0.3, abs=0.05)
    assert model.coef == pytest.approx((1.0, -0.5, 0.0), abs=0.05)


def test_a_constant_or_missing_field_does_not_break_the_fit():
    x = np.column_stack([np.zeros(100), np.full(100, np.nan), np.arange(100.0)])
    model = baseline.fit_logistic(x, np.arange(100) >= 50)
    assert model.coef[0] == 0.0 and model.coef[1] == 0.0 and model.coef[2] > 0
    assert np.isfinite(model.predict(x)).all()


def test_the_stage_fits_once_per_manifest_and_chooses_its_threshold_on_val(tmp_path):
    ws = write_workspace(tmp_path / "ws", metadata_table())
    cfg = profile("demo", workspace=ws)
    first = baseline.run_baseline(ws, cfg)
    sha = manifest.manifest_sha256(ws)
    assert first.dir.endswith(f"baseline/{sha}") and not first.reused
    doc = evaluate.read_metrics(first.metrics)  # the Metrics contract, like a run's
    assert doc.data.manifest_sha256 == sha and doc.model.base == "metadata-logistic"
    val = pd.read_parquet(first.predictions["val"])
    test = pd.read_parquet(first.predictions["test"])
    assert first.operating_point.threshold == metrics.choose_threshold(
        val["label"], val["probability"], cfg.evaluate.target_sensitivity
    )
    assert first.test_auroc == pytest.approx(metrics.auroc(test["label"], test["probability"]))
    assert 0.6 < first.test_auroc < 0.9 and first.test_auroc_ci[0] < first.test_auroc < first.test_auroc_ci[1]
    assert first.coefficients["log_follow_up"] > 0.3 > abs(first.coefficients["male"])
    again = baseline.run_baseline(ws, cfg)
    assert again.reused and again.test_auroc == first.test_auroc and again.fit_seconds == 0.0
    other = write_workspace(tmp_path / "ws", metadata_table(seed=2))  # a new manifest: a new folder
    assert not baseline.run_baseline(other, cfg).reused


def test_a_manifest_without_the_metadata_fields_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"lacks metadata column\(s\) \['age'\]"):
        baseline.design(metadata_table(50).drop(columns=["age"]))
    one_class = metadata_table(300).assign(label=np.int8(0))
    ws = write_workspace(tmp_path / "ws", one_class)
    with pytest.raises(ValueError, match="needs both classes in the train split"):
        baseline.run_baseline(ws, profile("demo", workspace=ws))


@pytest.mark.s3
def test_the_stage_runs_on_an_s3_workspace(s3_bucket):
    ws = write_workspace(f"{s3_bucket}/ws", metadata_table(600))
    summary = baseline.run_baseline(ws, profile("demo", workspace=ws))
    assert summary.dir.startswith(f"{s3_bucket}/ws/baseline/") and summary.metrics.startswith("s3://")
    assert evaluate.read_predictions(summary.dir, "test")["image_index"].is_unique
    assert baseline.run_baseline(ws, profile("demo", workspace=ws)).reused
