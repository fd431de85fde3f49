"""features: one Parquet per shard in the documented schema, equal to the base's output, resumable, guarded."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.models import cli, make_workspace, set_args, tiny_config

from xray_tasks import storage
from xray_tasks.config import PATHOLOGIES
from xray_tasks.data import shards
from xray_tasks.training import features
from xray_tasks.workspace import Workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("features"), patients=40)


@pytest.fixture(scope="module")
def extracted(workspace):
    cfg = tiny_config(workspace).features
    return cfg, features.extract_features(workspace, cfg)


def test_one_parquet_per_shard_with_the_documented_schema(workspace, extracted):
    cfg, summary = extracted
    root = Workspace(workspace).features("mobilenetv3small", 64)
    assert summary.features == root and summary.feature_dim == 576 and summary.images_per_s > 0
    for split in ("train", "val", "test"):
        entries = [e for m in shards.read_markers(workspace) for e in m.entries(split)]
        assert summary.splits[split].written == len(entries) > 1
        for entry in entries:
            uri = Workspace(workspace).feature_file(cfg.base, cfg.input_size, split, entry.path)
            assert uri == os.path.join(
                root, split, entry.path.split("/")[-1].replace(".tfrecord", ".parquet")
            )
            table = pq.read_table(uri)
            assert table.schema.field("image_index").type == pa.string()
            assert table.schema.field("patient_id").type == pa.int64()
            assert table.schema.field("split").type == pa.string()
            assert table.schema.field("label").type == pa.int8()
            assert table.schema.field("labels").type == pa.list_(pa.int8(), len(PATHOLOGIES))
            assert table.schema.field("features").type == pa.list_(pa.float32(), 576)
            assert table.column("image_index").to_pylist() == list(entry.images)
            assert set(table.column("split").to_pylist()) == {split}
            provenance = features.read_provenance(uri)
            assert provenance.shard_sha256 == entry.sha256 and provenance.weights == "random:seed=0"


def test_features_are_the_base_output_on_the_same_images(workspace, extracted):
    import tensorflow as tf

    from xray_tasks.data import dataset
    from xray_tasks.training import networks

    cfg, _ = extracted
    base = networks.build_base(cfg.base, cfg.input_size, None, cfg.seed)
    batch = next(iter(dataset.split_dataset(workspace, "test", batch_size=6, output_size=64)))
    expected = base(tf.cast(batch["image"], tf.float32), training=False).numpy()
    loaded = features.load_features(workspace, cfg.base, cfg.input_size, "test")
    rows = [list(loaded.image_index).index(b.decode()) for b in batch["image_index"].numpy()]
    np.testing.assert_allclose(loaded.features[rows], expected, rtol=1e-4, atol=1e-15)
    np.testing.assert_array_equal(loaded.label[rows], batch["label"].numpy())


def test_load_features_returns_whole_split_arrays(workspace, extracted):
    cfg, summary = extracted
    loaded = features.load_features(workspace, cfg.base, cfg.input_size, "train")
    n = summary.splits["train"].images
    assert len(loaded) == n and loaded.features.shape == (n, 576) and loaded.features.dtype == np.float32
    assert loaded.labels.shape == (n, len(PATHOLOGIES)) and loaded.labels.dtype == np.int8
    assert set(np.unique(loaded.label)) <= {0, 1} and loaded.weights_id == "random:seed=0"
    np.testing.assert_array_equal(loaded.label, (loaded.labels.sum(axis=1) > 0).astype(np.int8))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        features.load_features(workspace, cfg.base, cfg.input_size, "dev")


def test_rerun_skips_done_shards_and_redoes_only_a_missing_one(workspace, extracted):
    cfg, _ = extracted
    root = Workspace(workspace).features(cfg.base, cfg.input_size)
    files = storage.list_files(root)
    before = {f: os.stat(f).st_mtime_ns for f in files}
    again = features.extract_features(workspace, cfg)
    assert again.images_extracted == 0 and all(s.written == 0 for s in again.splits.values())
    os.remove(files[0])
    redone = features.extract_features(workspace, cfg, splits=("train", "val", "test"))
    assert sum(s.written for s in redone.splits.values()) == 1
    assert {f: os.stat(f).st_mtime_ns for f in files[1:]} == {f: before[f] for f in files[1:]}
    assert sorted(storage.list_files(root)) == sorted(files)


def test_groups_split_the_shards_between_workers_and_together_cover_them_once(tmp_path):
    """Three groups (three GPU workers): disjoint, within one shard of each other in size, together every shard,
    and the features they write equal one worker's; a group run twice extracts nothing new."""
    workspace = make_workspace(tmp_path / "ws", patients=40)
    cfg = tiny_config(workspace).features
    summaries = [features.extract_features(workspace, cfg, group=(i, 3)) for i in range(3)]
    written = [sum(s.written for s in g.splits.values()) for g in summaries]
    total = sum(len(m.shards) for m in shards.read_markers(workspace))
    assert sum(written) == total and max(written) - min(written) <= 1 and min(written) >= 1, written
    again = features.extract_features(workspace, cfg, group=(1, 3))
    assert again.images_extracted == 0 and sum(s.skipped for s in again.splits.values()) == written[1]
    alone = make_workspace(tmp_path / "alone", patients=40)
    features.extract_features(alone, cfg)
    for split in ("train", "val", "test"):
        grouped = features.load_features(workspace, cfg.base, cfg.input_size, split)
        single = features.load_features(alone, cfg.base, cfg.input_size, split)
        assert list(grouped.image_index) == list(single.image_index)
        np.testing.assert_allclose(grouped.features, single.features, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="group 3/3"):
        features.extract_features(workspace, cfg, group=(3, 3))
    with pytest.raises(AssertionError, match="'2/1' is not I/N"):
        cli("features", "--workspace", workspace, *set_args(), "--group", "2/1")


def test_features_of_another_base_are_refused(workspace, extracted):
    other = tiny_config(workspace, features__seed="1").features
    with pytest.raises(ValueError, match="delete .* or use another workspace"):
        features.extract_features(workspace, other)


def test_missing_features_and_bad_tables_fail_clearly(tmp_path):
    ws = make_workspace(tmp_path, patients=12, archives=1)
    with pytest.raises(FileNotFoundError, match="run `xray-tasks features`"):
        features.load_features(ws, "mobilenetv3small", 64, "train")
    with pytest.raises(ValueError, match="column lengths disagree"):
        features.to_table(["a"], np.zeros(2), "train", np.zeros(2), np.zeros((2, 14)), np.zeros((2, 3)), None)
    with pytest.raises(ValueError, match="unknown split"):
        features.extract_features(ws, tiny_config(ws).features, splits=("dev",))


@pytest.mark.s3
@pytest.mark.slow
def test_features_cli_on_an_s3_workspace(tmp_path, s3_bucket, s3_server):
    from xray_tasks.config import IngestConfig
    from xray_tasks.data.ingest import ingest_archive, list_archives
    from xray_tasks.data.manifest import run_manifest
    from xray_tasks.data.synth import generate

    generate(tmp_path / "src", patients=12, archives=1, image_size=64)
    ws = f"{s3_bucket}/ws"
    cfg = IngestConfig(image_size=64, shard_target_mb=0.06)
    run_manifest(str(tmp_path / "src"), ws, cfg)
    for archive in list_archives(str(tmp_path / "src")):
        ingest_archive(archive, ws, cfg)
    summary, _ = cli("features", "--workspace", ws, *set_args(), env=s3_server.env())
    assert summary["features"] == f"{ws}/features/mobilenetv3small-64"
    written = [u for u in storage.list_files(summary["features"]) if u.endswith(".parquet")]
    assert len(written) == sum(s["shards"] for s in summary["splits"].values()) > 0
    loaded = features.load_features(ws, "mobilenetv3small", 64, "train")
    assert len(loaded) == summary["splits"]["train"]["images"] and np.isfinite(loaded.features).all()
