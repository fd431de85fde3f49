"""The published SavedModel's ``serve_png`` signature against ``predict``'s Python path, on the real NIH PNGs.

``predict`` scores ``inference.prepare_images`` (Pillow decode, grey, box resize; then TF's antialiased resize) with
the Keras model; ``serve_png`` does the same in the graph from PNG bytes.  Compared on all 320 real PNGs (317 8-bit
grey, 3 RGBA) plus 16-bit and other-mode PNGs made from real pixels (the slice has no 16-bit file), at stored sizes
512, 128 and 64 (integer factors from 1024) and 300 (not one), and on synthetic odd sizes.  Measured (this file,
2 CPU cores): stored pixels equal everywhere (0 grey levels); largest |P(unhealthy) difference| 0.0 at stored 128
-> input 64.  The tolerances below leave room for float reordering only.  To print the numbers:
``.venv/bin/python -m pytest -p no:xdist -s tests/integration/test_serving_png.py -k "predict or ingest_path"``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support.registry import write_run

from xray_tasks.data.synth_images import bomb_png, png_bytes
from xray_tasks.registry import inference, serving
from xray_tasks.registry.publish import export_serving, stage_run

# The demo's stored size and the real-data model test's input size: both resize steps run.
STORED, INPUT = 128, 64
P_ATOL = 1e-5
"""|serve_png - predict| allowed on P(unhealthy); measured 0.0 (the stored pixels are identical)."""
PIXEL_ATOL = 0
"""Grey levels allowed between the in-graph stored image and ``inference.decode_stored``'s; measured 0."""


def _variants(nih_dir) -> dict[str, bytes]:
    """PNG modes the slice lacks, made from real pixels: 16-bit grey (plain and with low-byte detail), 16-bit
    grey + alpha and RGBA, 8-bit grey + alpha, RGB and palette."""
    import tensorflow as tf

    names = sorted(p.name for p in (nih_dir / "images").glob("*.png"))
    grey = np.asarray(Image.open(nih_dir / "images" / names[0]).convert("L"))
    rgba = np.asarray(Image.open(nih_dir / "images" / "00000100_000.png").convert("RGBA"))
    rng = np.random.default_rng(0)
    wide = grey.astype(np.uint16) * 256 + rng.integers(0, 256, grey.shape, dtype=np.uint16)
    alpha = np.full_like(grey, 200)

    def pil(img: Image.Image) -> bytes:
        out = io.BytesIO()
        img.save(out, format="PNG")
        return out.getvalue()

    return {
        "16bit_grey_x257": tf.io.encode_png((grey.astype(np.uint16) * 257)[..., None]).numpy(),
        "16bit_grey_detail": tf.io.encode_png(wide[..., None]).numpy(),
        "16bit_grey_alpha": tf.io.encode_png(np.stack([wide, wide // 3], -1)).numpy(),
        "16bit_rgba": tf.io.encode_png(
            rgba.astype(np.uint16) * 256 + rng.integers(0, 256, rgba.shape, np.uint16)
        ).numpy(),
        "8bit_grey_alpha": pil(Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)])),
        "8bit_rgb": pil(Image.fromarray(rgba[..., :3])),
        "8bit_palette": pil(Image.fromarray(rgba[..., :3]).convert("P")),
    }


@pytest.fixture(scope="module")
def pngs(nih_dir) -> dict[str, bytes]:
    """Every real PNG of the slice by name, then the made-up modes."""
    real = {p.name: p.read_bytes() for p in sorted((nih_dir / "images").glob("*.png"))}
    return {**real, **_variants(nih_dir)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny evaluated run (stored 128, input 64), exported through ``publish.export_serving``; (model, loaded)."""
    import keras
    import tensorflow as tf

    root = tmp_path_factory.mktemp("serving")
    run = write_run(root / "run", seed=3, pathologies=True, input_size=INPUT, stored_size=STORED)
    candidate = stage_run(str(run), root / "staged")
    export_serving(candidate, root / "serving" / "1")
    model = keras.saving.load_model(run / "model.keras", compile=False)
    return model, tf.saved_model.load(str(root / "serving" / "1"))


def _batches(items: list, size: int = 32):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("stored_size", [512, STORED, 64, 300])
def test_in_graph_stored_pixels_equal_the_ingest_path(pngs, stored_size):
    import tensorflow as tf

    decode = tf.function(
        lambda data: serving.decode_stored_graph(data, stored_size),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
    worst = {}
    for name, data in pngs.items():
        expected = inference.decode_stored(data, stored_size).astype(np.int16)
        got = decode(tf.constant(data)).numpy()
        assert got.shape == expected.shape and got.dtype == np.uint8
        worst[name] = int(np.abs(got.astype(np.int16) - expected).max())
    print(f"stored {stored_size}: largest pixel difference {max(worst.values())} over {len(worst)} PNGs")
    assert max(worst.values()) <= PIXEL_ATOL, {k: v for k, v in worst.items() if v > PIXEL_ATOL}
    assert {"00000100_000.png", "16bit_rgba", "16bit_grey_detail"} <= set(worst)  # RGBA and 16-bit included


@pytest.mark.parametrize("width, height", [(1000, 700), (37, 53), (1023, 1025), (333, 999), (100, 100)])
@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16"])
def test_odd_sizes_and_modes_give_the_same_stored_pixels(width, height, mode):
    """Partial blocks in Pillow's reduce, non-integer factors, non-square images and upscaling (100 -> 128)."""
    import tensorflow as tf

    pixels = np.random.default_rng(width * height).integers(0, 256, (height, width), dtype=np.uint8)
    data = png_bytes(pixels, mode)
    for stored_size in (128, 300):
        expected = inference.decode_stored(data, stored_size)
        got = serving.decode_stored_graph(tf.constant(data), stored_size).numpy()
        assert np.abs(got.astype(np.int16) - expected).max() <= PIXEL_ATOL, (stored_size, width, height, mode)


@pytest.mark.real_data
@pytest.mark.slow
def test_serve_png_matches_predict_on_the_real_pngs(pngs, exported):
    import tensorflow as tf

    model, loaded = exported
    signature = loaded.signatures[serving.PNG_ENDPOINT]
    names = list(pngs)
    expected, served = [], []
    for chunk in _batches(names):
        blobs = [pngs[n] for n in chunk]
        expected.append(inference.triage_probabilities(model, inference.prepare_images(blobs, STORED, INPUT)))
        out = signature(**{serving.PNG_INPUT: tf.constant(blobs)})
        assert set(out) == {"triage", "pathologies"} and out["pathologies"].shape == (len(chunk), 14)
        served.append(out["triage"].numpy()[:, 1])
    expected, served = np.concatenate(expected), np.concatenate(served)
    delta = np.abs(served - expected)
    print(
        f"serve_png vs predict, {len(names)} PNGs, stored {STORED} -> input {INPUT}: max |dp| {delta.max():.3g}"
    )
    assert delta.max() <= P_ATOL, dict(zip(names, delta, strict=True))
    assert (
        np.unique(np.round(expected, 5)).size > 10
    )  # the images really differ, so agreement means something


@pytest.mark.real_data
@pytest.mark.slow
def test_the_tensor_signature_is_unchanged_and_default(pngs, exported):
    import tensorflow as tf

    model, loaded = exported
    assert set(loaded.signatures) == {"serve", "serving_default", serving.PNG_ENDPOINT}
    batch = inference.prepare_images(list(pngs.values())[:8], STORED, INPUT)
    expected = inference.triage_probabilities(model, batch)
    for name in ("serving_default", serving.TENSOR_ENDPOINT):
        out = loaded.signatures[name](image=tf.constant(batch))
        np.testing.assert_allclose(out["triage"].numpy()[:, 1], expected, rtol=0, atol=1e-6)
    # The PNG endpoint is also a plain method of the loaded object (tf.saved_model.load without signatures).
    direct = loaded.serve_png(tf.constant(list(pngs.values())[:8]))["triage"].numpy()[:, 1]
    np.testing.assert_allclose(direct, expected, rtol=0, atol=P_ATOL)


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize(
    "data, words",
    [
        (b"hello, not an image", "not a PNG file"),
        (b"", "not a PNG file"),
        ("jpeg", "not a PNG file"),  # decode_png alone would decode a JPEG
        ("bomb", "decompression bomb"),
        ("truncated", "."),  # libpng's own words
    ],
)
def test_a_bad_element_fails_the_request_with_a_reason(pngs, exported, data, words):
    import tensorflow as tf

    _, loaded = exported
    real = next(iter(pngs.values()))
    if data == "jpeg":
        out = io.BytesIO()
        Image.open(io.BytesIO(real)).convert("L").save(out, format="JPEG")
        data = out.getvalue()
    elif data == "bomb":
        data = bomb_png()
    elif data == "truncated":
        data = real[: len(real) // 2]
    with pytest.raises(tf.errors.InvalidArgumentError, match=words):
        loaded.signatures[serving.PNG_ENDPOINT](image_bytes=tf.constant([real, data]))
