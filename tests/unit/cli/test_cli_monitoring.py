"""`xray-tasks score` checks drift against the version's published reference profile; `xray-tasks outcomes`
computes the sensitivity achieved, keeps it per version and fails loudly below target."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from support.registry import STORED_SIZE, write_run, xray_pngs

from xray_tasks.cli import run
from xray_tasks.contracts import DriftReport, Outcome
from xray_tasks.errors import BadInput
from xray_tasks.evaluation import outcomes
from xray_tasks.evaluation.profile import ProfileBuilder
from xray_tasks.registry import inference, load, monitoring


def cli(capsys, *argv: str) -> tuple[int, list[str], str]:
    status = run(list(argv))
    out, err = capsys.readouterr()
    return status, out.strip().splitlines(), err


def _reference(blobs: list[bytes], threshold: float = 0.45) -> dict:
    """A reference profile of ``blobs`` as evaluation would write it (stored pixels, scores spread 0..1)."""
    builder = ProfileBuilder()
    builder.add_pixels(np.stack([inference.decode_stored(b, STORED_SIZE) for b in blobs]))
    builder.add_scores(np.linspace(0.05, 0.95, len(blobs)))
    builder.add_files(blobs)
    return builder.build("test split", threshold).to_dict()


@pytest.fixture
def registry(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", seed=1, auroc=0.85)
    (run_dir / "profile.json").write_text(json.dumps(_reference(xray_pngs(60, seed=11))))
    root = str(tmp_path / "registry")
    assert cli(capsys, "publish", "--run-dir", str(run_dir), "--registry", root)[0] == 0
    return root


def _images(folder, blobs):
    folder.mkdir(parents=True)
    for i, blob in enumerate(blobs):
        (folder / f"study_{i:03d}.png").write_bytes(blob)
    return folder


def test_the_profile_is_published_in_the_manifest(registry):
    published = load(registry)
    assert "profile.json" in published.manifest["files"]
    assert monitoring.reference_of(published).n == 60


def test_score_writes_drift_json_and_plot_beside_the_worklist(registry, tmp_path, capsys):
    shifted = [
        inference.decode_stored(b, 64)[..., 0] for b in xray_pngs(12, seed=12)
    ]  # a brighter, flatter scanner
    from support.registry import png

    bright = [
        png(np.clip(128 + 0.5 * (a.astype(float) - 128) + 60, 0, 255).astype(np.uint8)) for a in shifted
    ]
    cases = {"same": xray_pngs(12, seed=12), "shifted": bright}
    reports = {}
    for name, blobs in cases.items():
        out = tmp_path / "worklists" / f"{name}.csv"
        status, lines, _ = cli(
            capsys,
            "score",
            "--registry",
            registry,
            "--images",
            str(_images(tmp_path / name, blobs)),
            "--out",
            str(out),
            "--set",
            "drift.min_batch=10",
        )
        summary = json.loads(lines[-1])
        assert status == 0 and summary["drift_json"] == str(tmp_path / "worklists" / f"{name}.drift.json")
        assert (tmp_path / "worklists" / f"{name}.drift.png").read_bytes().startswith(b"\x89PNG")
        reports[name] = DriftReport.from_dict(
            json.loads((tmp_path / "worklists" / f"{name}.drift.json").read_text())
        )
        assert summary["drift_status"] == reports[name].status and summary["monitor_s"] >= 0
    past = {c.statistic for c in reports["shifted"].checks if c.drifted}
    assert reports["shifted"].status == "drift" and "psi:mean_intensity" in past
    assert not any(c.drifted and c.statistic.startswith("psi:mean") for c in reports["same"].checks)
    kept = monitoring.history(registry, "xray-triage", "000001", "drift")
    assert [r.worklist.rsplit("/", 1)[-1] for r in kept] == ["same.csv", "shifted.csv"]
    # the default min_batch (50) does not judge 12 images
    status, lines, _ = cli(
        capsys,
        "score",
        "--registry",
        registry,
        "--images",
        str(tmp_path / "same"),
        "--out",
        str(tmp_path / "x.csv"),
    )
    assert json.loads(lines[-1])["drift_status"] == "too_small"


def _doc(threshold=0.5, target=0.95, recall=0.96, cleared=0.4):
    return SimpleNamespace(
        operating_point=SimpleNamespace(threshold=threshold, target_sensitivity=target),
        test=SimpleNamespace(at_operating_point=SimpleNamespace(recall=recall, healthy_cleared=cleared)),
    )


def test_the_history_keeps_the_order_of_records_made_within_one_second(tmp_path):
    """created_at has whole seconds: 20 reports of one second come back in the order they were recorded."""
    root = str(tmp_path / "registry")
    for i in range(20):
        report = DriftReport(
            model_name="xray-triage",
            version="000001",
            worklist=f"w{i:02d}.csv",
            created_at="2026-12-02T10:00:00Z",
            status="ok",
            n=60,
            min_batch=50,
            checks=(),
            message="no drift",
        )
        monitoring.record(root, report)
    kept = monitoring.history(root, "xray-triage", "000001", "drift")
    assert [r.worklist for r in kept] == [f"w{i:02d}.csv" for i in range(20)]


def test_outcomes_with_known_answers():
    # 10 unhealthy: 8 at or above 0.5; 10 healthy: 6 below it.  One label row matches nothing.
    probs = [0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.5, 0.95, 0.2, 0.1] + [
        0.1,
        0.2,
        0.3,
        0.4,
        0.45,
        0.49,
        0.5,
        0.6,
        0.7,
        0.8,
    ]
    labels = [1] * 10 + [0] * 10
    worklist = pd.DataFrame({"image": [f"s3://b/in/{i}.png" for i in range(20)], "probability": probs})
    worklist["name"] = [f"{i}.png" for i in range(20)]
    truth = pd.DataFrame({"image": [f"{i}.png" for i in range(20)] + ["ghost.png"], "label": labels + [1]})
    got = outcomes.achieved(worklist, truth, _doc(), tolerance=0.03, bootstrap=500)
    assert got["n"] == 20 and got["positives"] == 10 and got["unmatched"] == 1
    assert got["sensitivity"] == pytest.approx(0.8) and got["healthy_cleared"] == pytest.approx(0.6)
    lo, hi = got["sensitivity_ci"]
    assert lo < 0.8 < hi and 0.4 <= lo and hi <= 1.0
    assert got["below_target"] and got["message"].startswith("BELOW TARGET") and "0.92" in got["message"]
    fine = outcomes.achieved(worklist, truth, _doc(target=0.8), tolerance=0.03, bootstrap=0)
    assert not fine["below_target"] and fine["sensitivity_ci"] is None


def test_labels_are_read_in_words_or_numbers_and_bad_rows_are_named(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image,label\na.png,unhealthy\nb.png,healthy\nc.png,1\nd.png,No Finding\n")
    assert outcomes.read_labels(str(path))["label"].tolist() == [1, 0, 1, 0]
    path.write_text("image,label\na.png,maybe\n")
    with pytest.raises(BadInput, match="line 2: label 'maybe'"):
        outcomes.read_labels(str(path))
    path.write_text("name,truth\na.png,1\n")
    with pytest.raises(BadInput, match="needs columns"):
        outcomes.read_labels(str(path))


def test_outcomes_cli_stores_per_version_and_fails_loudly_below_target(registry, tmp_path, capsys):
    # a worklist as `score` writes it: four studies flagged at the version's threshold, four cleared
    worklist = tmp_path / "w.csv"
    t = load(registry).threshold  # the champion's operating point, chosen on its validation predictions
    probs = [t + (1 - t) * f for f in (0.9, 0.6, 0.3, 0.0)] + [t * f for f in (0.9, 0.6, 0.3, 0.0)]
    pd.DataFrame(
        {
            "rank": range(1, 9),
            "image": [f"/in/s{i}.png" for i in range(8)],
            "probability": probs,
            "decision": ["needs_review"] * 4 + ["cleared"] * 4,
            "error": [None] * 8,
            "model_version": [1] * 8,
            "threshold": [0.45] * 8,
        }
    ).to_csv(worklist, index=False)
    good = tmp_path / "good.csv"  # the flagged four unhealthy, the cleared four healthy: sensitivity 1
    good.write_text("image,label\n" + "".join(f"s{i}.png,{int(i < 4)}\n" for i in range(8)))
    status, lines, _ = cli(
        capsys, "outcomes", "--registry", registry, "--worklist", str(worklist), "--labels", str(good)
    )
    assert lines, _
    result = json.loads(lines[-1])
    assert status == 0 and result["version"] == "000001" and result["sensitivity"] == 1.0
    promised = load(registry).metrics.test.at_operating_point.recall  # the version's own test sensitivity
    assert result["healthy_cleared"] == 1.0 and result["promised_sensitivity"] == pytest.approx(promised)
    bad = tmp_path / "bad.csv"  # six unhealthy: the four flagged caught, two missed -> 4/6
    bad.write_text("image,label\n" + "".join(f"s{i}.png,{int(i < 6)}\n" for i in range(8)))
    status, _, err = cli(
        capsys, "outcomes", "--registry", registry, "--worklist", str(worklist), "--labels", str(bad)
    )
    assert status != 0 and "BELOW TARGET: achieved sensitivity 0.667" in err
    kept = monitoring.history(registry, "xray-triage", "000001", "outcomes")
    assert len(kept) == 2 and all(isinstance(k, Outcome) for k in kept)
    assert sorted(k.below_target for k in kept) == [False, True]
