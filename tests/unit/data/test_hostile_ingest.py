"""Issue 11's hostile archives end to end through ``xray-tasks ingest-archive`` in a child process: bounded
memory, bounded log and summary, the rest of the archive sharded, capped quarantine lists with full counts."""

import tarfile

import pytest
from support.hostile import last_json, long_name_archive, measure_cli

from xray_tasks import storage
from xray_tasks.config import IngestConfig
from xray_tasks.data import ingest, shards
from xray_tasks.data.ingest import ingest_archive
from xray_tasks.data.manifest import run_manifest
from xray_tasks.data.shards import read_markers
from xray_tasks.data.synth import generate, write_archive
from xray_tasks.data.validate import validate
from xray_tasks.errors import BadInput
from xray_tasks.workspace import Workspace

CFG = IngestConfig(image_size=32, shard_target_mb=0.02, min_side=16)
LONG_NAME = 200 * 1024 * 1024


@pytest.fixture
def tree(tmp_path):
    generate(tmp_path / "src", patients=3, archives=1, image_size=64)
    run_manifest(str(tmp_path / "src"), str(tmp_path / "ws"), CFG)
    with tarfile.open(tmp_path / "src" / "images_001.tar.gz") as tar:
        good = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    return tmp_path, good


def test_a_200mb_gnu_long_name_costs_little_memory_log_or_summary(tree):
    root, good = tree
    archive = long_name_archive(root / "images_009.tar.gz", LONG_NAME, good, level=6)
    args = ["--log-level", "INFO", "ingest-archive", str(archive), "--workspace", str(root / "ws")]
    got = measure_cli([*args, "--set", "ingest.image_size=32", "--set", "ingest.min_side=16"], root)
    print(
        f"archive {archive.stat().st_size} bytes, long name {LONG_NAME} bytes: peak RSS {got['peak_rss_mb']} MB, "
        f"log {got['stderr_bytes']} bytes, summary {got['stdout_bytes']} bytes"
    )
    assert got["rc"] == 0, got["stderr"][-2000:]
    assert got["peak_rss_mb"] < 400
    assert got["stderr_bytes"] < 100_000 and got["stdout_bytes"] < 100_000
    summary = last_json(got["stdout"])
    assert summary["members"]["by_kind"] == {"oversized_header": 1}
    assert summary["members"]["sharded"] == len(good)  # the rest of the archive went on
    (bad,) = summary["quarantine"]
    assert bad["member"] == "images/x.png" and "GNU long-name header of 209715201 bytes" in bad["reason"]


def test_quarantine_lists_are_capped_and_counted_in_full(tree, monkeypatch, caplog):
    root, good = tree
    monkeypatch.setattr(ingest, "QUARANTINE_KEPT", 80)
    junk = [(f"images/{'j' * 300}{i:04d}.txt", b"x") for i in range(120)]
    write_archive(root / "images_010.tar.gz", [*good, *junk])
    with caplog.at_level("WARNING"):
        summary = ingest_archive(str(root / "images_010.tar.gz"), str(root / "ws"), CFG)
    assert summary.members.quarantined == 120 and summary.members.by_kind == {"non_image": 120}
    assert len(summary.quarantine) == ingest.REPORT_LIMIT
    (marker,) = [m for m in read_markers(str(root / "ws")) if m.archive == "images_010.tar.gz"]
    assert len(marker.quarantine) == 80 and marker.members.by_kind == {"non_image": 120}
    assert all(len(q.member) <= 200 for q in summary.quarantine)
    assert caplog.text.count("quarantined images/") == ingest.REPORT_LIMIT
    assert "counting the rest" in caplog.text
    report = validate(str(root / "ws"))
    assert report.quarantined.count == 120 and report.quarantined.by_kind == {"non_image": 120}


def test_images_too_small_for_a_radiograph_are_quarantined_by_default(tree, monkeypatch):
    root, _ = tree
    monkeypatch.delenv("XRAY_INGEST_MIN_SIDE")
    cfg = IngestConfig(image_size=32, shard_target_mb=0.02)
    assert (cfg.min_side, cfg.max_aspect) == (256, 1.5)
    summary = ingest_archive(str(root / "src" / "images_001.tar.gz"), str(root / "ws"), cfg)
    assert summary.members.sharded == 0
    assert summary.members.by_kind == {"implausible_size": summary.members.total}
    assert summary.quarantine[0].reason == "implausible size 64x64: a side is below 256 px"
    # a shard set with no image is not valid: validating it would schedule a training run on nothing
    with pytest.raises(
        BadInput, match=r"hold no image: 8 quarantined .*implausible size 64x64: a side is below"
    ):
        validate(str(root / "ws"))


def test_the_min_side_default_comes_from_the_environment_only_as_a_plain_integer(monkeypatch):
    monkeypatch.setenv("XRAY_INGEST_MIN_SIDE", "64")
    assert IngestConfig().min_side == 64
    monkeypatch.setenv("XRAY_INGEST_MIN_SIDE", "1e3")
    with pytest.raises(BadInput, match="XRAY_INGEST_MIN_SIDE must be a plain integer, got '1e3'"):
        IngestConfig()


def test_clean_up_and_staging_touch_only_one_archives_own_names(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    names = [
        "images_001-00000-of-00002.tfrecord",
        "images_001-x-00000-of-00001.tfrecord",
        "images_001-extra.tfrecord",
        "images_0010-00000-of-00001.tfrecord",
    ]
    for name in names:
        storage.write_bytes(ws.shard(f"train/{name}"), b"x")
    assert shards.remove_uncommitted(ws, "images_001") == 1
    left = sorted(storage.basename(u) for u in storage.list_files(ws.shards))
    assert left == sorted(names[1:])

    base = tmp_path / "staging"
    for stale in ("images_001.0123abcd", "images_001.v2.0123abcd", "images_001-x.0123abcd"):
        (base / stale).mkdir(parents=True)
    fresh = storage.staging_dir(str(base), "images_001")
    assert sorted(p.name for p in base.iterdir()) == sorted(
        [fresh.name, "images_001.v2.0123abcd", "images_001-x.0123abcd"]
    )
