"""Ingest on real NIH PNGs: archives built from the 320 real studies in ../shared/nih/images."""

import io

import numpy as np
import pytest
from PIL import Image

from xray_tasks.config import IngestConfig
from xray_tasks.data.ingest import ingest_archive, list_archives
from xray_tasks.data.manifest import read_manifest, run_manifest
from xray_tasks.data.shards import committed_shards
from xray_tasks.data.synth import pack_real
from xray_tasks.data.validate import validate

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def real_tree(nih_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    pack_real(nih_dir / "images", nih_dir / "meta", out / "src", archives=2, limit=80)
    return out


def _decode_all(workspace, encoding, size):
    tf = pytest.importorskip("tensorflow")
    from xray_tasks.data.dataset import make_dataset

    uris = [u for split in ("train", "val", "test") for u in committed_shards(workspace, split)]
    ds = make_dataset(uris, encoding=encoding, image_size=size, batch_size=16, channels=1)
    out = {}
    for batch in ds:
        for name, image in zip(batch["image_index"].numpy(), batch["image"].numpy()):
            out[name.decode()] = image[..., 0]
    assert tf is not None
    return out


@pytest.mark.parametrize("encoding, size", [("raw", 512), ("png", 256)])
def test_real_pngs_round_trip_through_the_shards(real_tree, nih_dir, encoding, size):
    cfg = IngestConfig(image_size=size, encoding=encoding, shard_target_mb=8)
    ws = str(real_tree / f"ws-{encoding}")
    run_manifest(str(real_tree / "src"), ws, cfg)
    for archive in list_archives(str(real_tree / "src")):
        result = ingest_archive(archive, ws, cfg)
        assert result.quarantine == ()
    summary = validate(ws)
    assert summary.missing.count == 0 and summary.images == 80
    decoded = _decode_all(ws, encoding, size)
    assert set(decoded) == set(read_manifest(ws)["image_index"])
    modes = set()
    for name, pixels in decoded.items():
        with Image.open(nih_dir / "images" / name) as img:
            modes.add(img.mode)
            direct = np.asarray(img.convert("L").resize((size, size), Image.Resampling.BOX, reducing_gap=1.0))
        np.testing.assert_array_equal(pixels, direct, err_msg=name)
    assert "L" in modes


def test_the_rgba_files_of_the_real_set(nih_dir, tmp_path):
    rgba = []
    for path in sorted((nih_dir / "images").glob("*.png")):
        with Image.open(path) as img:
            if img.mode != "L":
                rgba.append(path)
    assert rgba, "the real slice is documented to contain RGBA files"
    from xray_tasks.data.images import prepare

    for path in rgba:
        out = np.frombuffer(prepare(path.read_bytes(), 256), np.uint8).reshape(256, 256)
        direct = np.asarray(
            Image.open(io.BytesIO(path.read_bytes()))
            .convert("L")
            .resize((256, 256), Image.Resampling.BOX, reducing_gap=1.0)
        )
        np.testing.assert_array_equal(out, direct)
