"""Staging a run for publishing: no stored name may land outside the staging folder; local links are refused."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from support.registry import write_run

from xray_tasks import storage
from xray_tasks.errors import BadInput
from xray_tasks.registry.publish import REQUIRED, stage_run
from xray_tasks.storage.staging import UnsafeName, refuse_symlinks, relative_name, stage_files, target_inside


@pytest.mark.parametrize(
    ("prefix", "uri", "rel"),
    [
        ("s3://b/runs/r1", "s3://b/runs/r1/metrics.json", "metrics.json"),
        ("s3://b/runs/r1/", "s3://b/runs/r1/plots/roc.png", "plots/roc.png"),
        ("/data/run", "/data/run/predictions/test.parquet", "predictions/test.parquet"),
        ("file:///data/run", "/data/run/a..b/x", "a..b/x"),  # dots inside a name are fine
    ],
)
def test_plain_names_are_relative_paths(prefix, uri, rel):
    assert relative_name(prefix, uri) == rel


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("s3://b/runs/r1/plots/../../../../etc/cron.d/x", "a '..' segment"),
        ("s3://b/runs/r1/../r2/metrics.json", "a '..' segment"),
        ("s3://b/runs/r1/plots//roc.png", "an empty segment"),
        ("s3://b/runs/r1//etc/passwd", "an absolute name"),
        ("s3://b/runs/r1/./metrics.json", "a '.' segment"),
        ("s3://b/runs/r1/plots/..", "a '..' segment"),
        ("s3://b/runs/r1/a\\..\\..\\x", "backslash"),
        ("s3://b/runs/r1/a\x00b", "NUL"),
        ("s3://b/runs/r1x/metrics.json", "is not below"),
    ],
)
def test_hostile_keys_are_refused_in_words(uri, words):
    with pytest.raises(UnsafeName) as info:
        relative_name("s3://b/runs/r1", uri)
    assert words in str(info.value) and isinstance(info.value, BadInput)


def test_a_long_hostile_name_is_quoted_truncated():
    with pytest.raises(UnsafeName) as info:
        relative_name("s3://b/r", "s3://b/r/" + "../" * 5000)
    assert len(str(info.value)) < 1000


def test_every_resolved_target_stays_inside(tmp_path):
    dest = tmp_path / "stage"
    dest.mkdir()
    assert target_inside(dest, "plots/roc.png") == (dest / "plots" / "roc.png").resolve()
    (dest / "plots").symlink_to(tmp_path)  # a link already in the folder would lead out
    with pytest.raises(UnsafeName, match="outside the staging folder"):
        target_inside(dest, "plots/roc.png")
    with pytest.raises(UnsafeName):
        target_inside(dest, "../escape")


def test_stage_files_checks_every_name_before_copying_any(tmp_path):
    copied: list[str] = []
    files = [("s3://b/r/metrics.json", "metrics.json"), ("s3://b/r/x", "plots/../../x")]
    with pytest.raises(UnsafeName):
        stage_files(files, tmp_path / "stage", lambda uri, target: copied.append(uri))
    assert copied == []


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("run") / "run", seed=1, auroc=0.8)


def test_stage_run_refuses_an_s3_key_that_climbs_out(run_dir, tmp_path, monkeypatch):
    """A crafted run on S3 (listing faked here; tests/integration/test_stage_hostile_keys.py does it on servers)."""
    target = tmp_path / f"outside-{uuid.uuid4().hex}"
    listing = [f"s3://b/runs/r1/{p.relative_to(run_dir)}" for p in run_dir.rglob("*") if p.is_file()]
    hostile = "s3://b/runs/r1/plots/" + "../" * 12 + str(target).lstrip("/")
    copied: list[str] = []
    monkeypatch.setattr(storage, "list_files", lambda prefix: sorted([*listing, hostile]))
    monkeypatch.setattr(storage, "get_file", lambda uri, dest: copied.append(uri))
    with pytest.raises(UnsafeName, match=r"a '\.\.' segment"):
        stage_run("s3://b/runs/r1", tmp_path / "stage")
    assert copied == [] and not target.exists()


def test_a_local_run_with_a_symlink_is_refused_not_followed(run_dir, tmp_path):
    secret = tmp_path / "worker-secret.txt"
    secret.write_text("AIRFLOW__CORE__FERNET_KEY=...")
    for link_name in ("model_card.md", "plots"):
        run = tmp_path / f"run-{link_name}"
        os.system(f"cp -r '{run_dir}' '{run}'")
        victim = run / link_name
        if victim.is_dir():
            os.system(f"rm -r '{victim}'")
            victim.symlink_to(tmp_path)
        else:
            victim.unlink()
            victim.symlink_to(secret)
        with pytest.raises(UnsafeName, match="is a symbolic link") as info:
            stage_run(str(run), tmp_path / f"stage-{link_name}")
        assert str(victim) in str(info.value)
        assert not (tmp_path / f"stage-{link_name}").exists()
    link = tmp_path / "run-link"
    link.symlink_to(run_dir)
    with pytest.raises(UnsafeName, match="is a symbolic link"):
        refuse_symlinks(str(link))
    refuse_symlinks("s3://b/anything")  # nothing to check on object storage


def test_a_plain_local_run_still_stages(run_dir, tmp_path):
    candidate = stage_run(str(run_dir), tmp_path / "stage")
    assert set(candidate.files) >= set(REQUIRED)
    assert all((tmp_path / "stage" / rel).is_file() for rel in candidate.files)
