"""The same ingest run against an S3 API server on loopback: source and workspace are s3:// URIs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xray_tasks import storage
from xray_tasks.config import IngestConfig
from xray_tasks.data.ingest import ingest_archive, list_archives
from xray_tasks.data.manifest import run_manifest
from xray_tasks.data.shards import read_markers
from xray_tasks.data.synth import RECOVERABLE, generate
from xray_tasks.data.validate import validate

pytestmark = pytest.mark.s3
CFG = IngestConfig(image_size=32, shard_target_mb=0.02)


def _upload_tree(local: Path, prefix: str) -> None:
    for path in sorted(local.iterdir()):
        storage.put_file(path, storage.join(prefix, path.name))


def test_ingest_to_and_from_s3_matches_a_local_run(tmp_path, s3_bucket):
    generate(tmp_path / "src", patients=16, archives=2, image_size=64, inject=RECOVERABLE)
    source, ws = f"{s3_bucket}/nih", f"{s3_bucket}/workspace"
    _upload_tree(tmp_path / "src", source)
    assert [storage.basename(a) for a in list_archives(source)] == ["images_001.tar.gz", "images_002.tar.gz"]

    run_manifest(source, ws, CFG)
    remote = [ingest_archive(a, ws, CFG) for a in list_archives(source)]
    assert all(not r.skipped for r in remote)
    assert [ingest_archive(a, ws, CFG).skipped for a in list_archives(source)] == [True, True]
    summary = validate(ws)

    local_ws = tmp_path / "ws"
    run_manifest(str(tmp_path / "src"), str(local_ws), CFG)
    local = [ingest_archive(a, str(local_ws), CFG) for a in list_archives(str(tmp_path / "src"))]
    assert [r.quarantine for r in remote] == [r.quarantine for r in local]
    assert summary.images == validate(str(local_ws)).images

    keys = [u for u in storage.list_files(f"{ws}/shards") if u.endswith(".tfrecord")]
    local_files = sorted((local_ws / "shards").rglob("*.tfrecord"))
    assert len(keys) == len(local_files) > 2
    for uri in keys:
        rel = uri.split("/shards/", 1)[1]
        assert storage.read_bytes(uri) == (local_ws / "shards" / rel).read_bytes(), rel
    markers = read_markers(ws)
    assert [m.archive for m in markers] == ["images_001.tar.gz", "images_002.tar.gz"]
    assert not [u for u in storage.list_files(ws) if ".tmp-" in u or "_staging" in u]


def test_tf_data_reads_s3_shards_in_a_child_process(tmp_path, s3_bucket, s3_server):
    generate(tmp_path / "src", patients=10, archives=1, image_size=64)
    source, ws = f"{s3_bucket}/nih", f"{s3_bucket}/ws"
    _upload_tree(tmp_path / "src", source)
    run_manifest(source, ws, CFG)
    for a in list_archives(source):
        ingest_archive(a, ws, CFG)
    env = {**os.environ, **s3_server.env()}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xray_tasks.cli",
            "peek",
            "--workspace",
            ws,
            "--split",
            "train",
            "--set",
            "ingest.image_size=32",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = validate(ws).counts["train"]
    assert out["images"] == expected.images and out["unhealthy"] == expected.unhealthy
    assert out["image_shape"] == [32, 32, 1]
