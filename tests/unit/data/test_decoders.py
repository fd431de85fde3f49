"""The decoder and gunzip choices give what Pillow and zlib give: the same pixels, the same refusals in words."""

import gzip
import io
import struct
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from xray_tasks.data import archives, images
from xray_tasks.data.archives import ArchiveError, iter_members
from xray_tasks.data.images import ImageRejected, decode_gray8, prepare
from xray_tasks.data.synth_images import bomb_png, png_bytes

needs_libpng = pytest.mark.skipif(images._png_decode is None, reason="imagecodecs is not installed")
needs_isal = pytest.mark.skipif(archives._IGzipFile is None, reason="isal is not installed")


def _pixels(size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        out.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return out


def _rebuild(data: bytes, extra_before_idat: bytes = b"", bad_idat_crc: bool = False) -> bytes:
    """``data`` (a PNG) with ``extra_before_idat`` inserted before its first IDAT, optionally a bad IDAT CRC."""
    out, inserted = [images.PNG_SIGNATURE], False
    for kind, body in _chunks(data):
        if kind == b"IDAT" and not inserted:
            out.append(extra_before_idat)
            inserted = True
        crc = 0 if kind == b"IDAT" and bad_idat_crc else None
        out.append(_chunk(kind, body, crc))
    return b"".join(out)


def _outcome(data: bytes, decoder: str, **kw):
    try:
        return "ok", prepare(data, 32, decoder=decoder, **kw)
    except ImageRejected as exc:
        return exc.kind, str(exc)


def _encoded(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _sixteen_bit(size=64):
    wide = np.random.default_rng(1).integers(0, 65536, size=(size, size), dtype=np.uint16)
    out = io.BytesIO()
    Image.fromarray(wide).save(out, format="PNG")
    return out.getvalue()


PLAIN = {
    **{mode: png_bytes(_pixels(), mode) for mode in ("L", "LA", "RGB", "RGBA")},
    "RGB noise": _encoded(Image.fromarray(np.stack([_pixels(seed=s) for s in (2, 3, 4)], axis=-1))),
    "RGBA noise": _encoded(Image.fromarray(np.stack([_pixels(seed=s) for s in (5, 6, 7, 8)], axis=-1))),
    "16-bit": _sixteen_bit(),
}


@needs_libpng
@pytest.mark.parametrize("name", sorted(PLAIN))
def test_libpng_gives_pillows_pixels_for_every_plain_mode(name):
    data = PLAIN[name]
    assert images._check_structure(data) is not None, "this PNG should take the libpng path"
    for size in (64, 32):
        assert prepare(data, size, decoder="imagecodecs") == prepare(data, size, decoder="pillow")


@pytest.mark.parametrize(
    "make",
    [
        lambda: png_bytes(_pixels(), "P"),
        lambda: png_bytes(_pixels(), "1"),
        lambda: _rebuild(png_bytes(_pixels()), _chunk(b"tEXt", b"Comment\0hello")),
        lambda: _rebuild(png_bytes(_pixels()), _chunk(b"gAMA", b"\0\0\xb1\x8f", crc=1)),
        lambda: _rebuild(png_bytes(_pixels()), _chunk(b"pHYs", b"\0" * 8)),  # pHYs is 9 bytes
    ],
    ids=["palette", "1-bit", "text chunk", "bad ancillary CRC", "short pHYs"],
)
def test_pngs_that_are_not_plain_go_through_pillow_with_the_same_outcome(make):
    data = make()
    assert images._check_structure(data) is None
    assert _outcome(data, "imagecodecs") == _outcome(data, "pillow")


@needs_libpng
def test_fixed_size_ancillary_chunks_keep_the_libpng_path_and_change_no_pixel():
    extra = b"".join(
        [
            _chunk(b"sRGB", b"\0"),
            _chunk(b"gAMA", struct.pack(">I", 45455)),
            _chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
            _chunk(b"tIME", struct.pack(">HBBBBB", 2017, 1, 2, 3, 4, 5)),
        ]
    )
    for mode in ("L", "RGBA"):
        data = _rebuild(png_bytes(_pixels(), mode), extra)
        assert images._check_structure(data) is not None
        assert prepare(data, 64, decoder="imagecodecs") == prepare(data, 64, decoder="pillow")


def _corrupt_pixels():
    data = bytearray(png_bytes(_pixels(256)))
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    return bytes(data)


@pytest.mark.parametrize(
    "data, kw",
    [
        (png_bytes(_pixels())[:300], {}),
        (_corrupt_pixels(), {}),
        (_rebuild(png_bytes(_pixels()), bad_idat_crc=True), {}),  # Pillow reads it; libpng refuses: Pillow's
        (bomb_png(), {}),
        (png_bytes(_pixels()), {"max_pixels": 1000}),
        (png_bytes(_pixels()), {"min_side": 256}),
        (png_bytes(np.zeros((64, 16), np.uint8)), {"max_aspect": 1.5}),
        (b"", {}),
        (b"\xff\xd8\xff\xe0 a jpeg", {}),
    ],
    ids=["truncated", "corrupt", "bad IDAT CRC", "bomb", "pixel limit", "small", "aspect", "empty", "jpeg"],
)
def test_every_outcome_is_the_same_whichever_decoder(data, kw):
    assert _outcome(data, "imagecodecs", **kw) == _outcome(data, "pillow", **kw)


@needs_libpng
def test_decode_gray8_never_hands_out_a_buffer_the_next_image_overwrites():
    first = decode_gray8(PLAIN["L"], 10_000_000)
    kept = np.asarray(first).copy()
    prepare(png_bytes(_pixels(seed=9)), 64)
    decode_gray8(png_bytes(_pixels(seed=8)), 10_000_000)
    np.testing.assert_array_equal(np.asarray(first), kept)


def test_without_the_optional_libraries_pillow_and_zlib_do_the_work(monkeypatch, tmp_path):
    monkeypatch.setattr(images, "_png_decode", None)
    monkeypatch.setattr(archives, "_IGzipFile", None)
    out = prepare(PLAIN["RGBA"], 64, decoder="imagecodecs")
    assert out == prepare(PLAIN["RGBA"], 64, decoder="pillow")
    assert [m.name for m in iter_members(io.BytesIO(_targz()), "images_001.tar.gz", 1 << 20)] == ["a.png"]


def test_unknown_choices_are_refused():
    with pytest.raises(ValueError, match="decoder must be one of"):
        prepare(PLAIN["L"], 64, decoder="magic")
    with pytest.raises(ValueError, match="gunzip must be one of"):
        list(iter_members(io.BytesIO(_targz()), "images_001.tar.gz", 1 << 20, gunzip="magic"))


def _targz(members=(("a.png", PLAIN["L"]),)) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, body in members:
            info = tarfile.TarInfo(f"images/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return gzip.compress(raw.getvalue(), 6)


@needs_isal
def test_isal_and_zlib_read_the_same_members_and_fail_in_words_naming_the_archive():
    members = [(f"{i:03d}.png", png_bytes(_pixels(128, seed=i))) for i in range(6)]
    data = _targz(members)

    def read(blob, gunzip):
        try:
            got = list(iter_members(io.BytesIO(blob), "images_007.tar.gz", 1 << 20, gunzip=gunzip))
            return [(m.path, m.data) for m in got]
        except ArchiveError as exc:
            return str(exc)

    assert read(data, "isal") == read(data, "zlib") == [(f"images/{n}", b) for n, b in members]
    flipped = bytearray(data)
    flipped[len(data) // 2 : len(data) // 2 + 32] = bytes(32)
    for broken in (data[: len(data) // 2], bytes(flipped), data[:-8] + b"\0" * 4 + data[-4:]):
        for gunzip in ("isal", "zlib"):
            words = read(broken, gunzip)
            assert isinstance(words, str), gunzip
            assert words.startswith("images_007.tar.gz: archive is truncated or corrupt after ")
            assert "(read as gzip)" in words and " at 0x" not in words


@pytest.mark.real_data
@needs_libpng
def test_libpng_gives_pillows_bytes_on_every_real_png(nih_dir):
    paths = sorted((nih_dir / "images").glob("*.png"))
    assert len(paths) >= 300
    modes = set()
    for path in paths:
        data = path.read_bytes()
        plain = images._check_structure(data)
        assert plain is not None, f"{path.name} would not take the libpng path"
        modes.add(plain[2])
        assert prepare(data, 512, decoder="imagecodecs") == prepare(data, 512, decoder="pillow"), path.name
        if plain[2] != "L":
            assert prepare(data, 1024, decoder="imagecodecs") == prepare(data, 1024, decoder="pillow")
    assert modes == {"L", "RGBA"}
