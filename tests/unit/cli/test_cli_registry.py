"""`xray-tasks publish | models list|show | predict | score`, run in process through the CLI's own entry."""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest
from support.registry import write_run, xray_pngs

from xray_tasks import storage
from xray_tasks.cli import run
from xray_tasks.registry import load


def cli(capsys, *argv: str) -> tuple[int, list[str], str]:
    """Run one command; returns (status, stdout lines, stderr)."""
    status = run(list(argv))
    out, err = capsys.readouterr()
    return status, out.strip().splitlines(), err


def _publish_two(registry: str, tmp_path, capsys) -> str:
    """A champion (000001) and a rejected version (000002) in ``registry``."""
    for name, seed, auroc, decision in (("a", 1, 0.85, "approved"), ("b", 2, 0.8, "rejected")):
        run_dir = str(write_run(tmp_path / name, seed=seed, auroc=auroc))
        status, out, err = cli(capsys, "publish", "--run-dir", run_dir, "--registry", registry)
        assert status == 0 and json.loads(out[-1])["decision"] == decision, err
    return registry


@pytest.fixture
def published(tmp_path, capsys):
    """A local registry with a champion (000001) and a rejected version (000002)."""
    return _publish_two(str(tmp_path / "registry"), tmp_path, capsys)


@pytest.fixture
def published_anywhere(registry, tmp_path, capsys):
    """The same, once on a local root and once on the suite's S3 server."""
    return _publish_two(registry, tmp_path, capsys)


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, blob in enumerate(xray_pngs(5, seed=3)):
        (folder / f"study_{i}.png").write_bytes(blob)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def test_publish_prints_the_decision_and_a_gate_override_is_a_forced_publish(tmp_path, capsys):
    registry = str(tmp_path / "registry")
    run_dir = str(write_run(tmp_path / "a", auroc=0.8))
    override = ("--set", "gate.min_auroc=0.9")
    status, out, err = cli(capsys, "publish", "--run-dir", run_dir, "--registry", registry, *override)
    assert status == 1 and "['gate.min_auroc']" in err and "needs a reason" in err
    assert not storage.exists(f"{registry}/xray-triage")  # refused before anything was uploaded
    status, out, _ = cli(
        capsys, "publish", "--run-dir", run_dir, "--registry", registry, *override,
        "--reason", "stricter floor", "--actor", "tester",
    )  # fmt: skip
    summary = json.loads(out[-1])
    assert status == 0 and summary["decision"] == "rejected" and "floor 0.9000" in summary["reasons"][0]
    assert summary["changed_keys"] == ["gate.min_auroc"]
    status, _, err = cli(capsys, "publish", "--run-dir", run_dir, "--registry", registry, "--force")
    assert status == 1 and "needs a reason" in err
    # The deployment's own policy (an admin-only setting) is no override: an ordinary, unforced decision.
    status, out, _ = cli(
        capsys,
        "publish",
        "--run-dir",
        run_dir,
        "--registry",
        registry,
        "--deployment-set",
        "gate.min_auroc=0.9",
    )
    summary = json.loads(out[-1])
    assert status == 0 and (summary["decision"], summary["changed_keys"]) == ("rejected", [])
    status, out, _ = cli(
        capsys, "publish", "--run-dir", run_dir, "--registry", registry, "--force",
        "--reason", "demo", "--actor", "tester", *override,
    )  # fmt: skip
    summary = json.loads(out[-1])
    assert status == 0 and summary["decision"] == "forced" and summary["promoted"]
    from xray_tasks.registry import read_decisions

    record = read_decisions(registry, "xray-triage", summary["version"])[-1]
    assert (record["decision"], record["actor"], record["changed_keys"]) == (
        "forced",
        "tester",
        ["gate.min_auroc"],
    )
    assert record["forced"] == {"by": "tester", "reason": "demo"} and record["policy"]["min_auroc"] == 0.9


def test_models_list_and_show(published_anywhere, capsys):
    published = published_anywhere
    status, out, _ = cli(capsys, "models", "list", "--registry", published, "--format", "json")
    assert status == 0 and json.loads(out[-1])["models"] == ["xray-triage"]
    status, out, _ = cli(capsys, "models", "list", "--registry", published, "--model-name", "xray-triage")
    header, first, second = out[0].split(), out[1].split(), out[2].split()
    assert header[:4] == ["version", "complete", "champion", "decision"]
    assert first[:4] == ["000001", "true", "true", "approved"] and second[:4] == [
        "000002",
        "true",
        "false",
        "rejected",
    ]
    status, out, _ = cli(
        capsys, "models", "show", "--registry", published, "--version", "2", "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO("\n".join(out[:-1]))))
    assert rows[0] == {"field": "version", "value": "000002"}
    assert any(r["value"].startswith("rejected: ") for r in rows)
    assert json.loads(out[-1])["champion"] is False


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_predict_prints_probability_and_decision_per_image(published, image_dir, capsys, fmt):
    status, out, err = cli(capsys, "predict", "--registry", published, "--format", fmt, str(image_dir))
    summary = json.loads(out[-1])
    assert (
        status == 1 and "1 of 6 inputs could not be scored" in err
    )  # broken.png: listed, and it fails the run
    status, out, _ = cli(
        capsys, "predict", "--registry", published, "--format", fmt, "--allow-errors", str(image_dir)
    )
    summary = json.loads(out[-1])
    assert (
        status == 0 and summary["version"] == "000001" and summary["images"] == 6 and summary["errors"] == 1
    )
    assert summary["needs_review"] + summary["cleared"] == 5
    expected = load(published).probabilities([(image_dir / f"study_{i}.png").read_bytes() for i in range(5)])
    if fmt == "json":
        rows = summary["predictions"]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO("\n".join(out[:-1]))))
    else:
        assert out[0].split() == ["image", "probability", "decision", "error"]
        rows = [
            dict(zip(["image", "probability", "decision"], line.split()[:3], strict=True))
            for line in out[1:-1]
        ]
    got = {r["image"].rsplit("/", 1)[-1]: r for r in rows}
    for i, p in enumerate(expected):
        row = got[f"study_{i}.png"]
        assert float(row["probability"]) == pytest.approx(float(p), abs=1e-4)
        assert row["decision"] == (
            "needs_review" if float(row["probability"]) >= summary["threshold"] else "cleared"
        )


def test_score_writes_a_worklist_ordered_by_risk(published, image_dir, tmp_path, capsys):
    out_uri = str(tmp_path / "out" / "worklist.csv")
    status, out, _ = cli(
        capsys, "score", "--registry", published, "--images", str(image_dir), "--out", out_uri
    )
    assert status == 0 and json.loads(out[-1])["worklist"] == out_uri
    table = pd.read_csv(out_uri)
    assert list(table["rank"]) == list(range(1, 7))
    scored = table.dropna(subset=["probability"])
    assert list(scored["probability"]) == sorted(scored["probability"], reverse=True)
    assert table.iloc[-1]["image"].endswith("broken.png") and isinstance(table.iloc[-1]["error"], str)
    assert set(table["model_version"]) == {1}


@pytest.mark.s3
def test_score_reads_and_writes_s3(published, image_dir, s3_bucket, capsys):
    for path in image_dir.iterdir():
        storage.write_bytes(f"{s3_bucket}/incoming/{path.name}", path.read_bytes())
    out_uri = f"{s3_bucket}/worklists/today.parquet"
    status, out, _ = cli(
        capsys, "score", "--registry", published, "--images", f"{s3_bucket}/incoming", "--out", out_uri
    )
    assert status == 0 and json.loads(out[-1])["errors"] == 1
    table = pd.read_parquet(io.BytesIO(storage.read_bytes(out_uri)))
    assert len(table) == 6 and table["image"].str.startswith(f"{s3_bucket}/incoming/").all()


def test_score_refuses_an_unknown_output_format(published, image_dir, capsys):
    status, _, err = cli(
        capsys, "score", "--registry", published, "--images", str(image_dir), "--out", "x.xlsx"
    )
    assert status == 1 and ".csv or .parquet" in err


def test_stage_promote_reject_gc_and_keys_from_the_cli(registry, tmp_path, capsys):
    runs = [
        str(write_run(tmp_path / n, seed=i, auroc=a)) for i, (n, a) in enumerate([("a", 0.8), ("b", 0.85)])
    ]
    assert cli(capsys, "publish", "--run-dir", runs[0], "--registry", registry)[0] == 0
    status, out, _ = cli(capsys, "publish", "--run-dir", runs[1], "--registry", registry, "--stage")
    staged = json.loads(out[-1])
    assert status == 0 and (staged["decision"], staged["promoted"], staged["champion"]) == (
        "candidate",
        False,
        "000001",
    )
    status, out, _ = cli(
        capsys, "models", "list", "--registry", registry, "--model-name", "xray-triage", "--format", "json"
    )
    assert [r["pending"] for r in json.loads(out[-1])["versions"]] == [False, True]
    with pytest.raises(SystemExit):  # argparse: the reason is required
        cli(capsys, "models", "promote", "--registry", registry, "--version", "2")
    assert "--reason" in capsys.readouterr().err
    status, out, _ = cli(
        capsys, "models", "promote", "--registry", registry, "--version", "2", "--reason", "looks right",
        "--actor", "dr-a", "--expected-champion", "1",
    )  # fmt: skip
    summary = json.loads(out[-1])
    assert status == 0 and summary == {
        **summary,
        "version": "000002",
        "previous_champion": "000001",
        "promoted": True,
    }
    status, out, _ = cli(
        capsys, "models", "promote", "--registry", registry, "--version", "1", "--reason", "regression",
        "--decision", "rolled_back", "--actor", "ops",
    )  # fmt: skip
    assert status == 0 and json.loads(out[-1])["champion"] == "000001"
    status, out, _ = cli(
        capsys,
        "models",
        "reject",
        "--registry",
        registry,
        "--version",
        "2",
        "--actor",
        "dr-b",
        "--comment",
        "no",
    )
    assert status == 0 and json.loads(out[-1])["decision"] == "rejected_by_reviewer"
    status, out, _ = cli(capsys, "models", "gc", "--registry", registry)
    assert status == 0 and json.loads(out[-1])["removable"] == [] and json.loads(out[-1])["apply"] is False

    status, out, _ = cli(capsys, "keys", "generate", "--out", str(tmp_path / "keys"))
    result = json.loads(out[-1])
    assert status == 0 and len(result["key_id"]) == 16
    assert (tmp_path / "keys" / "signing.key").stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in "\n".join(out).encode()  # the key itself is never printed
    assert cli(capsys, "keys", "generate", "--out", str(tmp_path / "keys"))[0] == 1  # never overwritten


def test_predict_lists_every_named_input_and_fails_unless_errors_are_allowed(
    published_anywhere, image_dir, tmp_path, capsys
):
    published = published_anywhere
    missing, real = str(tmp_path / "missing.png"), str(image_dir / "study_0.png")
    (tmp_path / "notes.txt").write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    named = [missing, real, str(tmp_path / "notes.txt"), str(empty)]
    status, out, _ = cli(capsys, "predict", "--registry", published, "--format", "json", *named)
    summary = json.loads(out[-1])
    assert status == 1 and (summary["images"], summary["errors"]) == (4, 3)
    rows = {r["image"]: r for r in summary["predictions"]}
    assert list(rows) == named  # every input, in the order given
    assert rows[missing]["error"] == "file not found" and rows[missing]["decision"] is None
    assert "not a PNG" in rows[named[2]]["error"] and "empty folder" in rows[named[3]]["error"]
    assert rows[real]["error"] is None and rows[real]["decision"] in ("needs_review", "cleared")
    status, out, _ = cli(capsys, "predict", "--registry", published, "--allow-errors", missing, real)
    assert status == 0 and json.loads(out[-1])["errors"] == 1
