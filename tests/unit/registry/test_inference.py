"""Consumer preprocessing equals the training reader's, image for image; scoring rows and bad files."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
from support.registry import STORED_SIZE, make_workspace, png, tiny_model, xray_pngs

from xray_tasks.data import dataset
from xray_tasks.registry import inference


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("inference"))


@pytest.mark.parametrize("input_size", [STORED_SIZE, 32])
def test_an_image_file_becomes_exactly_what_training_saw(workspace, input_size):
    source, ws = workspace
    batch = next(
        iter(dataset.split_dataset(str(ws), "test", batch_size=8, output_size=input_size, channels=3))
    )
    names = [v.decode() for v in batch["image_index"].numpy()]
    with tarfile.open(next(source.glob("images_*.tar.gz"))) as tar:
        blobs = [tar.extractfile(f"images/{name}").read() for name in names]
    mine = inference.prepare_images(blobs, STORED_SIZE, input_size)
    assert mine.dtype == np.float32 and mine.shape == (len(names), input_size, input_size, 3)
    np.testing.assert_array_equal(mine, batch["image"].numpy().astype(np.float32))


def test_scoring_reports_unreadable_files_without_stopping(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(xray_pngs(1)[0])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    rows = inference.score_uris(
        tiny_model(), [str(good), str(bad)], stored_size=STORED_SIZE, input_size=32, threshold=0.5
    )
    by_name = {r["image"]: r for r in rows}
    assert by_name[str(bad)]["probability"] is None and "not a PNG" in by_name[str(bad)]["error"]
    p = by_name[str(good)]["probability"]
    assert 0.0 <= p <= 1.0 and by_name[str(good)]["decision"] == inference.decide(p, 0.5)


def test_decision_at_the_operating_point_flags_ties():
    assert inference.decide(0.3, 0.3) == inference.NEEDS_REVIEW
    assert inference.decide(0.2999, 0.3) == inference.CLEARED


@pytest.mark.parametrize(
    ("probability", "threshold"),
    [(float("nan"), 0.5), (0.1, float("nan")), (0.1, 1.5), (0.1, -0.1), (1.2, 0.5)],
)
def test_a_nan_probability_or_a_threshold_outside_0_1_is_never_cleared(probability, threshold):
    with pytest.raises(ValueError, match="not (a number )?in \\[0, 1\\]"):
        inference.decide(probability, threshold)


class NanModel:
    def __call__(self, batch, training=False):
        import numpy as np

        out = np.tile([[0.5, 0.5]], (len(batch), 1)).astype(np.float32)
        out[0] = np.nan
        return out


def test_scoring_fails_closed_on_non_finite_outputs_and_a_bad_threshold(tmp_path):
    paths = []
    for i, blob in enumerate(xray_pngs(3)):
        paths.append(str(tmp_path / f"{i}.png"))
        (tmp_path / f"{i}.png").write_bytes(blob)
    rows = inference.score_uris(NanModel(), paths, stored_size=STORED_SIZE, input_size=32, threshold=0.5)
    assert [r["image"] for r in rows] == paths
    assert rows[0]["decision"] is None and rows[0]["probability"] is None and "nan" in rows[0]["error"]
    assert [r["decision"] for r in rows[1:]] == [inference.NEEDS_REVIEW] * 2
    rows = inference.score_uris(NanModel(), paths, stored_size=STORED_SIZE, input_size=32, threshold=1.5)
    assert all(r["decision"] is None and "threshold 1.5 is not in [0, 1]" in r["error"] for r in rows)


def test_list_images_finds_pngs_in_a_folder_or_names_one_file(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "sub/b.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(png(np.zeros((4, 4), np.uint8)))
    assert [p.rsplit("/", 1)[-1] for p in inference.list_images(str(tmp_path))] == ["a.png", "b.PNG"]
    assert inference.list_images(str(tmp_path / "a.png")) == [str(tmp_path / "a.png")]


def test_model_input_is_validated():
    with pytest.raises(ValueError, match=r"uint8 \[B, S, S, 1\]"):
        inference.to_model_input(np.zeros((2, 8, 8, 3), np.uint8), 8)
    with pytest.raises(ValueError, match="at least one image"):
        inference.prepare_images([], 8, 8)


@pytest.mark.real_data
def test_real_nih_pngs_are_scored_including_rgba_ones(nih_dir):
    names = [
        "00000100_000.png",
        "00004934_000.png",
        "00000075_000.png",
        "00000129_000.png",
    ]  # two RGBA, two grey
    uris = [str(nih_dir / "images" / n) for n in names]
    rows = inference.score_uris(tiny_model(), uris, stored_size=64, input_size=32, threshold=0.5)
    assert [r["error"] for r in rows] == [None] * len(uris)
    assert all(0.0 <= r["probability"] <= 1.0 for r in rows)
