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


# -- reasons in words, plausible sizes (issue 11) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data, kind, words",
    [
        (b"", "empty_file", "empty file (0 bytes)"),
        (
            b"hello, not an image",
            "not_an_image",
            "not a PNG: no PNG signature, the file starts with 68 65 6c",
        ),
        (b"\x89PNG", "truncated_png", "truncated at byte 4, inside the PNG signature"),
        (
            png_bytes(_gray())[:60],
            "truncated_png",
            "truncated at byte 60: the PNG ends inside its 'IDAT' chunk",
        ),
        (
            png_bytes(_gray())[:40],
            "truncated_png",
            "truncated at byte 40: the PNG ends inside a chunk header",
        ),
        (png_bytes(_gray())[:8], "truncated_png", "truncated at byte 8: the PNG ends before its IEND chunk"),
        (b"GIF89a" + b"\0" * 20, "not_png", "not a PNG but a GIF (26 bytes)"),
        (
            b"\x89PNG\r\n\x1a\n\0\0\0\x0dIDAT" + b"\0" * 17,
            "corrupt_png",
            "the first chunk is b'IDAT', not IHDR",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_every_rejection_says_what_is_wrong_in_words(data, kind, words):
    with pytest.raises(ImageRejected) as info:
        open_png(data, max_pixels=10_000_000)
    assert info.value.kind == kind
    assert words in str(info.value)
    assert " at 0x" not in str(info.value) and "object" not in str(info.value)


def test_pillow_messages_lose_their_object_reprs():
    from xray_tasks.data.images import _words

    text = _words(OSError("cannot identify image file <_io.BytesIO object at 0x7f00deadbeef>"))
    assert text == "cannot identify image file the data"


@pytest.mark.parametrize(
    "shape, ok",
    [((256, 256), True), ((256, 384), True), ((1024, 1024), True), ((255, 300), False), ((256, 385), False)],
)
def test_images_outside_a_plausible_size_are_refused(shape, ok):
    data = png_bytes(np.zeros(shape, dtype=np.uint8))
    if ok:
        assert open_png(data, 10_000_000, min_side=256, max_aspect=1.5).size == shape[::-1]
        return
    with pytest.raises(ImageRejected, match="implausible size") as info:
        open_png(data, 10_000_000, min_side=256, max_aspect=1.5)
    assert info.value.kind == "implausible_size"
