import io

import numpy as np
import pytest
from PIL import Image

from xray_tasks.data.images import ImageRejected, open_png, prepare, to_gray8
from xray_tasks.data.synth_images import bomb_png, png_bytes


def _gray(size=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(size, size), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16"])
def test_every_mode_becomes_the_same_8bit_gray(mode):
    pixels = _gray()
    out = prepare(png_bytes(pixels, mode), 64)
    np.testing.assert_array_equal(np.frombuffer(out, np.uint8).reshape(64, 64), pixels)


def test_palette_and_sixteen_bit_scaling():
    wide = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert np.asarray(to_gray8(wide)).tolist() == [[0, 128, 255]]
    pal = Image.fromarray(_gray(8)).convert("P")
    assert to_gray8(pal).mode == "L"


def test_resize_matches_a_direct_pillow_box_resize_and_png_encoding_is_lossless():
    pixels = _gray(128)
    expected = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.Resampling.BOX, reducing_gap=1.0))
    raw = prepare(png_bytes(pixels), 32)
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(32, 32), expected)
    png = prepare(png_bytes(pixels), 32, encoding="png")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"hello, not an image", "not_an_image"),
        (png_bytes(_gray())[:300], "truncated_png"),
        (bomb_png(), "bomb"),
    ],
)
def test_rejections_carry_a_kind(data, kind):
    with pytest.raises(ImageRejected) as info:
        open_png(data, max_pixels=10_000_000)
    assert info.value.kind == kind


def test_corrupt_pixel_data():
    data = bytearray(png_bytes(_gray(256)))
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    with pytest.raises(ImageRejected) as info:
        open_png(bytes(data), max_pixels=10_000_000)
    assert info.value.kind in ("corrupt_png", "truncated_png")


def test_our_pixel_limit_applies_before_decoding():
    with pytest.raises(ImageRejected, match="header declares 64x64 = 4096 pixels, limit 1000"):
        open_png(png_bytes(_gray(64)), max_pixels=1000)


def test_other_formats_are_refused():
    out = io.BytesIO()
    Image.fromarray(_gray()).save(out, format="JPEG")
    with pytest.raises(ImageRejected, match="not a PNG"):
        open_png(out.getvalue(), max_pixels=10_000_000)
