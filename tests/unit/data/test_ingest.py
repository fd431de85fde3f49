import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xray_tasks import storage
from xray_tasks.config import IngestConfig
from xray_tasks.data.archives import ArchiveError
from xray_tasks.data.ingest import IngestError, ingest_archive, list_archives
from xray_tasks.data.manifest import read_manifest, run_manifest
from xray_tasks.data.shards import committed_shards, read_markers
from xray_tasks.data.synth import (
    RECOVERABLE,
    generate,
    make_studies,
    write_archive,
    write_lists,
    write_metadata,
)
from xray_tasks.data.synth_images import png_bytes, render
from xray_tasks.data.tfrecord import iter_records
from xray_tasks.data.validate import validate
from xray_tasks.workspace import Workspace

CFG = IngestConfig(image_size=32, shard_target_mb=0.02)


def ingest_tree(source, workspace, cfg=CFG):
    run_manifest(str(source), str(workspace), cfg)
    return [ingest_archive(a, str(workspace), cfg) for a in list_archives(str(source))]


def shard_bytes(workspace):
    root = Path(workspace) / "shards"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tfrecord"))}


def test_every_bad_input_is_quarantined_and_the_rest_goes_on(tmp_path):
    info = generate(tmp_path / "src", patients=30, archives=2, image_size=64, inject=RECOVERABLE)
    results = ingest_tree(tmp_path / "src", tmp_path / "ws")
    quarantine = [q for r in results for q in r.quarantine]
    kinds = {}
    for q in quarantine:
        kinds.setdefault(q.kind, []).append(q.member)
        assert q.archive == "images_001.tar.gz" and q.reason
    inj = info["injected"]
    assert kinds["corrupt_png"] == [f"images/{inj['corrupt_png']}"]
    assert kinds["truncated_png"] == [f"images/{inj['truncated_png']}"]
    assert kinds["bomb"] == [f"images/{inj['bomb']}"]
    assert kinds["non_image"] == ["images/README.txt"]
    assert sorted(kinds["unsafe_path"]) == ["../escape.png", "/abs/escape.png"]
    assert kinds["link_member"] == ["images/link.png"]
    assert kinds["device_member"] == ["images/dev.png"]
    assert sorted(kinds["no_metadata"]) == sorted(
        [f"images/{inj['unknown_label']}", "images/99999999_000.png"]
    )
    unknown = next(q for q in quarantine if q.member == f"images/{inj['unknown_label']}")
    assert "unknown pathology label" in unknown.reason

    summary = validate(str(tmp_path / "ws"))
    manifest = read_manifest(str(tmp_path / "ws"))
    lost = {inj["corrupt_png"], inj["truncated_png"], inj["bomb"], inj["metadata_without_image"]}
    assert set(summary.missing.examples) == lost
    assert summary.images == len(manifest) - len(lost)
    assert summary.quarantined.count == len(quarantine)
    # nothing from the archive ever reached the file system outside the workspace
    assert not list(tmp_path.parent.rglob("escape.png"))


def test_shards_hold_what_the_manifest_says(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from xray_tasks.data.dataset import feature_spec

    generate(tmp_path / "src", patients=12, archives=2, image_size=64)
    ingest_tree(tmp_path / "src", tmp_path / "ws")
    manifest = read_manifest(str(tmp_path / "ws")).set_index("image_index")
    from xray_tasks.config import PATHOLOGIES

    seen = 0
    for split in ("train", "val", "test"):
        for uri in committed_shards(str(tmp_path / "ws"), split):
            for record in tf.data.TFRecordDataset(uri):
                ex = tf.io.parse_single_example(record, feature_spec())
                name = ex["image_index"].numpy().decode()
                row = manifest.loc[name]
                assert row["split"] == split
                assert int(ex["label"]) == row["label"] and int(ex["patient_id"]) == row["patient_id"]
                assert ex["labels"].numpy().tolist() == row[list(PATHOLOGIES)].astype(int).tolist()
                assert len(ex["image"].numpy()) == 32 * 32
                seen += 1
    assert seen == len(manifest)


def test_marker_lists_shards_with_checksums_and_sizes_near_target(tmp_path):
    generate(tmp_path / "src", patients=40, archives=1, image_size=64)
    ingest_tree(tmp_path / "src", tmp_path / "ws")
    (marker,) = read_markers(str(tmp_path / "ws"))
    target = CFG.shard_target_mb * 1024 * 1024
    train = marker.entries("train")
    assert len(train) > 1
    for i, entry in enumerate(train):
        assert entry.path == f"train/images_001-{i:05d}-of-{len(train):05d}.tfrecord"
        data = (tmp_path / "ws" / "shards" / entry.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.bytes
        with open(tmp_path / "ws" / "shards" / entry.path, "rb") as fh:
            assert len(list(iter_records(fh))) == entry.records
        assert list(entry.images) == sorted(entry.images)
        if i < len(train) - 1:
            assert entry.bytes <= target


def test_rerun_of_a_committed_archive_is_a_no_op(tmp_path):
    generate(tmp_path / "src", patients=8, archives=1, image_size=64)
    first = ingest_tree(tmp_path / "src", tmp_path / "ws")
    marker = Path(Workspace(str(tmp_path / "ws")).marker("images_001"))
    before, mtime = marker.read_bytes(), marker.stat().st_mtime_ns
    again = ingest_archive(str(tmp_path / "src" / "images_001.tar.gz"), str(tmp_path / "ws"), CFG)
    assert again.skipped is True and first[0].skipped is False
    assert marker.read_bytes() == before and marker.stat().st_mtime_ns == mtime


def test_other_settings_on_a_committed_workspace_are_refused(tmp_path):
    generate(tmp_path / "src", patients=4, archives=1, image_size=64)
    ingest_tree(tmp_path / "src", tmp_path / "ws")
    with pytest.raises(IngestError, match="use a new workspace"):
        ingest_archive(
            str(tmp_path / "src" / "images_001.tar.gz"), str(tmp_path / "ws"), IngestConfig(image_size=48)
        )


def test_truncated_archive_commits_nothing_and_others_survive(tmp_path):
    generate(tmp_path / "src", patients=20, archives=2, image_size=64, inject=("truncated_archive",))
    ws = tmp_path / "ws"
    run_manifest(str(tmp_path / "src"), str(ws), CFG)
    ok = ingest_archive(str(tmp_path / "src" / "images_001.tar.gz"), str(ws), CFG)
    assert ok.shards > 0
    with pytest.raises(ArchiveError, match="images_002.tar.gz: archive is truncated"):
        ingest_archive(str(tmp_path / "src" / "images_002.tar.gz"), str(ws), CFG)
    assert not Path(Workspace(str(ws)).marker("images_002")).exists()
    assert not [p for p in (ws / "shards").rglob("images_002-*")]
    assert not list((ws / "shards" / "_staging").glob("*"))
    assert [m.archive for m in read_markers(str(ws))] == ["images_001.tar.gz"]


def _same_studies_archive(tmp_path, order):
    studies = make_studies(10, seed=5)
    src = tmp_path / f"src-{order}"
    src.mkdir()
    write_metadata(src, studies, "2020")
    write_lists(src, studies)
    members = [(f"images/{s.image_index}", png_bytes(render(s, 64))) for s in studies]
    if order == "shuffled":
        members = [members[i] for i in np.random.default_rng(1).permutation(len(members))]
    write_archive(src / "images_001.tar.gz", members)
    return src


def test_member_order_does_not_change_the_shards(tmp_path):
    ingest_tree(_same_studies_archive(tmp_path, "sorted"), tmp_path / "ws1")
    ingest_tree(_same_studies_archive(tmp_path, "shuffled"), tmp_path / "ws2")
    one, two = shard_bytes(tmp_path / "ws1"), shard_bytes(tmp_path / "ws2")
    assert one.keys() == two.keys() and len(one) > 1
    assert one == two


def test_crash_between_publish_and_commit_is_redone(tmp_path, monkeypatch):
    generate(tmp_path / "src", patients=10, archives=1, image_size=64)
    ingest_tree(tmp_path / "src", tmp_path / "clean")
    ws = tmp_path / "ws"
    run_manifest(str(tmp_path / "src"), str(ws), CFG)
    real_write_json = storage.write_json

    def crash(uri, obj):
        if uri.endswith("images_001.json"):
            raise OSError("simulated crash before the commit marker")
        real_write_json(uri, obj)

    monkeypatch.setattr(storage, "write_json", crash)
    with pytest.raises(OSError, match="simulated crash"):
        ingest_archive(str(tmp_path / "src" / "images_001.tar.gz"), str(ws), CFG)
    assert list((ws / "shards").rglob("images_001-*.tfrecord"))  # final names exist, but nothing is committed
    assert read_markers(str(ws)) == []
    monkeypatch.setattr(storage, "write_json", real_write_json)
    ingest_archive(str(tmp_path / "src" / "images_001.tar.gz"), str(ws), CFG)
    assert shard_bytes(ws) == shard_bytes(tmp_path / "clean")


@pytest.mark.slow
def test_sigkill_mid_archive_then_rerun_is_byte_identical(tmp_path):
    generate(tmp_path / "src", patients=160, archives=1, image_size=256)
    archive = str(tmp_path / "src" / "images_001.tar.gz")
    cfg = ["--set", "ingest.image_size=128", "--set", "ingest.shard_target_mb=0.5"]
    cli = [sys.executable, "-m", "xray_tasks.cli", "--log-level", "WARNING"]

    clean = tmp_path / "clean"
    subprocess.run(
        cli + ["manifest", "--source", str(tmp_path / "src"), "--workspace", str(clean)] + cfg,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        cli + ["ingest-archive", archive, "--workspace", str(clean)] + cfg, check=True, capture_output=True
    )

    ws = tmp_path / "ws"
    subprocess.run(
        cli + ["manifest", "--source", str(tmp_path / "src"), "--workspace", str(ws)] + cfg,
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        cli + ["ingest-archive", archive, "--workspace", str(ws)] + cfg,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    staging = ws / "shards" / "_staging"
    while time.monotonic() < deadline:  # kill once the second staged part has started: mid-archive
        parts = list(staging.rglob("*.part"))
        if len(parts) >= 2:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(parts) >= 2, "the run finished before it could be killed"
    assert read_markers(str(ws)) == [] and not list((ws / "shards").rglob("*.tfrecord"))

    subprocess.run(
        cli + ["ingest-archive", archive, "--workspace", str(ws)] + cfg, check=True, capture_output=True
    )
    assert shard_bytes(ws) == shard_bytes(clean) and len(shard_bytes(clean)) > 2
    assert not list(staging.rglob("*.part"))
