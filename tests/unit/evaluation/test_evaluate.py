"""evaluate: the operating point comes from validation, every test figure has its benchmark, predictions are
deterministic and complete, metrics.json follows docs/CONTRACTS.md."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from support.models import make_workspace, tiny_config

from xray_tasks.config import PATHOLOGIES, EvalConfig
from xray_tasks.data import dataset
from xray_tasks.evaluation import evaluate, metrics
from xray_tasks.training import networks


def frame(n: int, seed: int, shift: float = 0.3, multilabel: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n).astype(np.int8)
    out = pd.DataFrame(
        {
            "image_index": [f"{seed:03d}_{i:05d}.png" for i in range(n)],
            "patient_id": rng.integers(0, n // 2, n).astype(np.int64),
            "probability": np.clip(rng.normal(0.4 + shift * label, 0.15), 0, 1).astype(np.float32),
            "label": label,
        }
    )
    if multilabel:
        for i, name in enumerate(PATHOLOGIES):
            out[f"label_{name}"] = (rng.uniform(size=n) < 0.2).astype(np.int8) * label
            out[f"prob_{name}"] = rng.uniform(size=n).astype(np.float32)
    return out


def test_score_chooses_the_threshold_on_val_and_applies_it_to_test():
    val, test = frame(300, 1), frame(500, 2)
    cfg = EvalConfig(target_sensitivity=0.9, bootstrap=200)
    scored = evaluate.score(val, test, cfg)
    threshold = metrics.choose_threshold(val["label"], val["probability"], 0.9)
    assert scored.operating_point.to_dict() == {
        "threshold": threshold,
        "target_sensitivity": 0.9,
        "chosen_on": "val",
    }
    assert scored.val.at_operating_point.recall >= 0.9
    expected = metrics.summary_at(test["label"], test["probability"], threshold)
    assert scored.test.at_operating_point == expected
    assert scored.test.at_operating_point.healthy_cleared == expected.specificity
    bench = scored.test.benchmark_always_unhealthy
    assert bench.tp == int(test["label"].sum()) and bench.tn == 0
    lo, hi = scored.test.auroc_ci
    assert lo < scored.test.auroc < hi
    assert scored.test.sensitivity_ci[0] <= expected.recall <= scored.test.sensitivity_ci[1]
    assert scored.test.per_pathology_auroc is None


def test_score_reports_per_pathology_auroc_and_can_skip_the_bootstrap():
    scored = evaluate.score(
        frame(100, 3, multilabel=True), frame(200, 4, multilabel=True), EvalConfig(bootstrap=0)
    )
    per = scored.test.per_pathology_auroc
    assert list(per) == list(PATHOLOGIES) and all(v is None or 0 <= v <= 1 for v in per.values())
    assert scored.test.auroc_ci is None


def test_score_rejects_tables_without_the_prediction_columns_or_positives():
    with pytest.raises(ValueError, match="val predictions lack columns"):
        evaluate.score(frame(10, 1).drop(columns=["patient_id"]), frame(10, 2), EvalConfig())
    healthy = frame(20, 1).assign(label=np.int8(0))
    with pytest.raises(ValueError, match="val holds 0 and test .* unhealthy studies"):
        evaluate.score(healthy, frame(20, 2), EvalConfig())


def test_digest_ignores_row_order():
    f = frame(50, 5)
    assert evaluate.digest(f) == evaluate.digest(f.sample(frac=1, random_state=0))
    assert evaluate.digest(f) != evaluate.digest(f.iloc[1:])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A workspace and a run directory holding an untrained (random) final model."""
    root = tmp_path_factory.mktemp("evaluate")
    ws = make_workspace(root, patients=90)
    cfg = tiny_config(ws, head__multilabel="true", head__hidden_units="8", head__standardize="false")
    base = networks.build_base("mobilenetv3small", 64, None, 0)
    full = networks.assemble(base, networks.build_head(576, cfg.head))
    run = root / "run"
    networks.save_model(full, str(run / "model.keras"))
    return ws, str(run), cfg, full


def test_predict_split_covers_the_split_deterministically(tiny_run):
    ws, _, _, full = tiny_run
    first = evaluate.predict_split(full, ws, "test", batch_size=7)
    again = evaluate.predict_split(full, ws, "test", batch_size=32)
    assert len(first) == dataset.split_size(ws, "test") and first["image_index"].is_unique
    assert list(first.columns[:4]) == ["image_index", "patient_id", "probability", "label"]
    assert first["probability"].between(0, 1).all() and f"prob_{PATHOLOGIES[0]}" in first.columns
    np.testing.assert_allclose(first["probability"], again["probability"], rtol=1e-6)
    batch = next(iter(dataset.split_dataset(ws, "test", batch_size=5, output_size=64)))
    direct = networks.triage_probability(full.predict(batch["image"].numpy().astype(np.float32), verbose=0))
    by_name = first.set_index("image_index")["probability"]
    np.testing.assert_allclose(by_name[[b.decode() for b in batch["image_index"].numpy()]], direct, rtol=1e-5)


def test_run_evaluate_writes_the_contracted_run_directory(tiny_run):
    ws, run, cfg, _ = tiny_run
    summary = evaluate.run_evaluate(ws, run, cfg)
    with open(summary.metrics) as fh:
        doc = json.load(fh)
    assert doc["schema"] == 2
    assert doc["model"] == {
        "base": "mobilenetv3small",
        "weights": "none",
        "input_size": 64,
        "stored_image_size": 64,
        "input_name": "image",
        "output": "triage",
        "outputs": ["pathologies", "triage"],
    }
    assert set(doc["data"]) >= {"workspace", "manifest_sha256", "test_digest", "val_digest", "counts"}
    assert doc["operating_point"]["chosen_on"] == "val"
    keys = {"tn", "fp", "fn", "tp", "beta", "f_beta", "accuracy", "precision", "recall", "specificity"}
    test = doc["test"]
    assert keys <= set(test["at_0.5"]) and keys | {"healthy_cleared"} <= set(test["at_operating_point"])
    assert keys <= set(test["benchmark_always_unhealthy"])
    assert {"n", "positives", "auroc", "auroc_ci", "auprc", "sensitivity_ci", "per_pathology_auroc"} <= set(
        test
    )
    assert {"n", "positives", "auroc", "at_operating_point"} <= set(doc["val"])
    for split in ("val", "test"):
        preds = pd.read_parquet(summary.predictions[split])
        assert len(preds) == doc[split]["n"] and evaluate.digest(preds) == doc["data"][f"{split}_digest"]
    assert set(summary.plots) == {"roc", "pr", "threshold_sweep", "confusion_matrix"}
    with open(summary.model_card) as fh:
        card = fh.read()
    assert "not a diagnostic device" in card
    # the ladder: always-unhealthy, the metadata baseline, the model, on the same test studies
    ladder = doc["ladder"]
    assert [r["name"] for r in ladder["rungs"]] == ["always_unhealthy", "metadata_baseline", "model"]
    model_rung = ladder["rungs"][2]
    assert model_rung["auroc"] == test["auroc"] and model_rung["auroc_ci"] == test["auroc_ci"]
    assert model_rung["at_operating_point"] == test["at_operating_point"]
    versus = ladder["model_vs_baseline"]
    baseline_test = pd.read_parquet(f"{run}/predictions/baseline-test.parquet")
    assert list(baseline_test["image_index"]) == list(
        pd.read_parquet(summary.predictions["test"])["image_index"]
    )
    assert versus["reference_auroc"] == pytest.approx(
        metrics.auroc(baseline_test["label"], baseline_test["probability"])
    )
    assert versus["n"] == test["n"] and len(versus["delta_ci"]) == 2
    assert "## The ladder" in card and "metadata baseline" in card and f"{versus['delta']:+.4f}" in card


def test_run_evaluate_needs_a_final_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `xray-tasks finetune` first"):
        evaluate.run_evaluate(str(tmp_path), str(tmp_path / "run"), tiny_config(str(tmp_path)))


def test_run_evaluate_writes_the_reference_profile_beside_metrics_in_the_run(tiny_run, monkeypatch, tmp_path):
    from xray_tasks.contracts import Profile
    from xray_tasks.workspace import RunDir

    ws, run, cfg, _ = tiny_run
    monkeypatch.chdir(tmp_path)  # a path mix-up would land here, not in the run
    evaluate.run_evaluate(ws, run, cfg)
    with open(RunDir(str(run)).profile) as fh:
        profile = Profile.from_dict(json.load(fh), "profile.json")
    assert profile.n > 0 and profile.stored_image_size == 64
    assert list(tmp_path.iterdir()) == []
