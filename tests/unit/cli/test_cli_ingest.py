import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "xray_tasks.cli", "--log-level", "INFO"]


def run(*args, check_status=None):
    proc = subprocess.run(CLI + list(args), check=False, capture_output=True, text=True, timeout=300)
    if check_status is not None:
        assert proc.returncode == check_status, proc.stderr[-3000:]
    return proc


def last_json(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_synth_ingest_validate_and_a_second_run(tmp_path):
    src, ws = tmp_path / "src", tmp_path / "ws"
    synth = last_json(
        run(
            "synth",
            str(src),
            "--patients",
            "12",
            "--archives",
            "2",
            "--image-size",
            "64",
            "--inject",
            "corrupt_png,non_image",
            check_status=0,
        )
    )
    assert set(synth["injected"]) == {"corrupt_png", "non_image"}
    first = run(
        "ingest",
        "--profile",
        "demo",
        "--source",
        str(src),
        "--workspace",
        str(ws),
        "--set",
        "ingest.image_size=32",
        check_status=0,
    )
    summary = last_json(first)
    assert summary["archives"] == 2 and summary["quarantined"]["count"] == 2
    assert summary["images"] + 1 == synth["studies"]  # the corrupt PNG is missing, reported
    assert "split    images  patients  healthy  unhealthy" in first.stderr
    assert "images/s" in first.stderr  # throughput is logged
    again = run(
        "ingest",
        "--profile",
        "demo",
        "--source",
        str(src),
        "--workspace",
        str(ws),
        "--set",
        "ingest.image_size=32",
        check_status=0,
    )
    assert "already committed" in again.stderr
    assert last_json(run("validate", "--workspace", str(ws), check_status=0))["images"] == summary["images"]


def test_missing_column_fails_with_the_file_named(tmp_path):
    src = tmp_path / "src"
    run(
        "synth",
        str(src),
        "--patients",
        "4",
        "--archives",
        "1",
        "--image-size",
        "32",
        "--inject",
        "missing_column",
        check_status=0,
    )
    proc = run("manifest", "--source", str(src), "--workspace", str(tmp_path / "ws"), check_status=1)
    assert "Data_Entry_2017.csv: missing column(s) ['Patient ID']" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "ws" / "manifest" / "manifest.parquet").exists()


def test_a_truncated_archive_fails_the_run_but_the_others_are_committed(tmp_path):
    src, ws = tmp_path / "src", tmp_path / "ws"
    run(
        "synth",
        str(src),
        "--patients",
        "20",
        "--archives",
        "3",
        "--image-size",
        "64",
        "--inject",
        "truncated_archive",
        check_status=0,
    )
    proc = run(
        "ingest",
        "--source",
        str(src),
        "--workspace",
        str(ws),
        "--set",
        "ingest.image_size=32",
        check_status=1,
    )
    assert "images_003.tar.gz: archive is truncated or corrupt" in proc.stderr
    markers = sorted(p.name for p in (ws / "shards" / "_manifests").glob("*.json"))
    assert markers == ["images_001.json", "images_002.json"]


@pytest.mark.parametrize("args", [["ingest-archive"], ["manifest", "--set", "nonsense"], ["no-such-command"]])
def test_usage_errors_exit_2(args):
    assert run(*args).returncode == 2


def test_unknown_setting_is_a_clear_error(tmp_path):
    proc = run(
        "manifest",
        "--source",
        str(tmp_path),
        "--workspace",
        str(tmp_path / "ws"),
        "--set",
        "ingest.imagesize=3",
        check_status=1,
    )
    assert "unknown config key 'ingest.imagesize'" in proc.stderr
