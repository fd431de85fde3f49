"""Decode one archive member into the stored image: 8-bit grayscale, square, resized.

Rejections raise :class:`ImageRejected` with a short reason; the caller quarantines the member and goes on.

Decoding is libpng through ``imagecodecs`` when it is installed and the PNG is *plain*: 8-bit grey,
grey+alpha, RGB or RGBA, or 16-bit grey; not interlaced; before the pixel data only IHDR and the fixed-size
tIME, sRGB, gAMA, pHYs, cHRM chunks, each with a good CRC; IEND right after the last IDAT.  That is 1.16x
Pillow's rate on the real NIH PNGs (``bench/ingest.py``), with the same pixels, which the tests check on every
real PNG.  Anything else, and any PNG libpng refuses, goes through Pillow exactly as before, so every rejection
keeps Pillow's words.
"""

from __future__ import annotations

import io
import re
import threading
import zlib

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from xray_tasks.errors import BadInput

try:  # optional: Pillow decodes everything when it is absent
    from imagecodecs import png_decode as _png_decode
except ImportError:  # pragma: no cover - exercised where imagecodecs is not installed
    _png_decode = None

DECODERS = ("imagecodecs", "pillow")
DEFAULT_DECODER = "imagecodecs" if _png_decode is not None else "pillow"
"""The decoder ``prepare`` uses unless told: the fastest one installed (measured in ``bench/ingest.py``)."""

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a silently grey image

RESAMPLE = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
}
_DIRECT_TO_L = {"L", "RGB", "RGBA", "P", "PA", "1", "CMYK", "YCbCr"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_OTHER_FORMATS = (
    (b"\xff\xd8\xff", "a JPEG"),
    (b"GIF87a", "a GIF"),
    (b"GIF89a", "a GIF"),
    (b"II*\x00", "a TIFF"),
    (b"MM\x00*", "a TIFF"),
    (b"BM", "a BMP"),
    (b"\x1f\x8b", "gzip data"),
    (b"%PDF", "a PDF"),
    (b"RIFF", "a RIFF (WebP?) file"),
)
_PLAIN_MODES = {(8, 0): "L", (8, 4): "LA", (8, 2): "RGB", (8, 6): "RGBA", (16, 0): "I;16"}
"""(bit depth, colour type) -> Pillow's mode for the PNGs libpng may decode; Pillow decodes the rest."""
_PLAIN_ANCILLARY = {b"tIME": 7, b"sRGB": 1, b"gAMA": 4, b"pHYs": 9, b"cHRM": 32}
"""Chunks allowed before the pixel data of a plain PNG, with their only valid length."""
_SCRATCH_BYTES = 16 * 1024 * 1024
"""Largest libpng output kept for the next image (per thread); a fresh 1 MiB array costs 256 page faults."""
_scratch = threading.local()
_REPR = re.compile(r"<[^<>]{0,200} at 0x[0-9a-fA-F]+>")


class ImageRejected(BadInput):
    """The member is not a usable image; ``kind`` is a stable code, ``str(exc)`` the reason for the report."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def open_png(
    data: bytes, max_pixels: int, *, min_side: int = 0, max_aspect: float | None = None
) -> Image.Image:
    """Open and fully decode a PNG, refusing other formats and oversized or implausible headers before decoding.

    ``min_side`` / ``max_aspect``: the smallest side and the largest long-to-short side ratio a radiograph may
    have (``0`` / ``None``: no check).
    """
    _check_structure(data)
    return _open_pillow(data, max_pixels, min_side, max_aspect)


def decode_gray8(
    data: bytes,
    max_pixels: int,
    *,
    min_side: int = 0,
    max_aspect: float | None = None,
    decoder: str | None = None,
) -> Image.Image:
    """``to_gray8(open_png(...))``: the same checks, words and pixels, through ``decoder`` where it can.

    ``decoder``: ``imagecodecs`` (libpng, for plain PNGs; Pillow for the rest), ``pillow``, or ``None`` for
    :data:`DEFAULT_DECODER`.  ``imagecodecs`` when it is not installed means Pillow.
    """
    return _gray8(data, max_pixels, min_side, max_aspect, decoder, reuse=False)


def _gray8(
    data: bytes, max_pixels: int, min_side: int, max_aspect: float | None, decoder: str | None, *, reuse: bool
) -> Image.Image:
    """``reuse``: libpng may decode into this thread's scratch buffer, which the next call overwrites; only for
    a caller that copies the pixels out (resize, encode) before it decodes again."""
    decoder = decoder or DEFAULT_DECODER
    if decoder not in DECODERS:
        raise BadInput(f"decoder must be one of {DECODERS}, got {decoder!r}")
    plain = _check_structure(data)
    if plain is not None and decoder == "imagecodecs" and _png_decode is not None:
        gray = _libpng_gray8(data, plain, max_pixels, min_side, max_aspect, reuse)
        if gray is not None:
            return gray
    return to_gray8(_open_pillow(data, max_pixels, min_side, max_aspect))


def _open_pillow(data: bytes, max_pixels: int, min_side: int, max_aspect: float | None) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data), formats=["PNG"])
    except Image.DecompressionBombError as exc:
        raise ImageRejected("bomb", f"decompression bomb: {_words(exc)}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise ImageRejected("corrupt_png", f"corrupt PNG header: {_words(exc)}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageRejected(
            "bomb",
            f"decompression bomb: header declares {width}x{height} = {width * height} pixels, "
            f"limit {max_pixels}",
        )
    _check_plausible(width, height, min_side, max_aspect)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        kind = "truncated_png" if "truncated" in str(exc).lower() else "corrupt_png"
        raise ImageRejected(kind, f"{kind.replace('_png', '')} PNG image data: {_words(exc)}") from None
    return img


def _libpng_gray8(
    data: bytes,
    plain: tuple[int, int, str],
    max_pixels: int,
    min_side: int,
    max_aspect: float | None,
    reuse: bool,
) -> Image.Image | None:
    """The 8-bit grey image through libpng, or ``None`` to let Pillow decide (and word any refusal)."""
    width, height, mode = plain
    if width * height > min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels):
        return None  # Pillow's path refuses it, in its words
    _check_plausible(width, height, min_side, max_aspect)  # what Pillow's path would say, before decoding
    channels = {"L": 0, "I;16": 0, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    shape = (height, width, channels) if channels else (height, width)
    dtype = np.dtype(np.uint16 if mode == "I;16" else np.uint8)
    out = _scratch_array(shape, dtype) if reuse else None
    try:
        pixels = _png_decode(data, out=out)
    except (RuntimeError, ValueError):  # imagecodecs.PngError is a RuntimeError
        return None
    if pixels.shape != shape or pixels.dtype != dtype:
        return None
    if mode == "L":
        return Image.fromarray(pixels)
    if mode == "LA":
        return Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]))
    if mode == "I;16":
        return Image.fromarray(_scale16(pixels))
    return Image.fromarray(pixels).convert("L")  # Pillow's own RGB(A) -> L, as for a Pillow-decoded image


def _scratch_array(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """This thread's reusable output array of ``shape``, ``None`` (a fresh one) when it would be too large."""
    if int(np.prod(shape)) * dtype.itemsize > _SCRATCH_BYTES:
        return None
    held = getattr(_scratch, "array", None)
    if held is None or held.shape != shape or held.dtype != dtype:
        held = _scratch.array = np.empty(shape, dtype)
    return held


def _check_structure(data: bytes) -> tuple[int, int, str] | None:
    """Refuse, in words, what is no PNG at all: empty, another format, or cut short among its chunks.

    Returns ``(width, height, mode)`` when the PNG is plain enough for libpng to decode as Pillow would (see the
    module's docstring), else ``None``.
    """
    size = len(data)
    if size == 0:
        raise ImageRejected("empty_file", "empty file (0 bytes)")
    if not data.startswith(PNG_SIGNATURE):
        if PNG_SIGNATURE.startswith(data):
            raise ImageRejected("truncated_png", f"truncated at byte {size}, inside the PNG signature")
        other = next((name for magic, name in _OTHER_FORMATS if data.startswith(magic)), None)
        if other:
            raise ImageRejected("not_png", f"not a PNG but {other} ({size} bytes)")
        raise ImageRejected(
            "not_an_image", f"not a PNG: no PNG signature, the file starts with {data[:8].hex(' ')}"
        )
    offset = len(PNG_SIGNATURE)
    first = True
    plain: tuple[int, int, str] | None = None
    stage = 0  # 0: before the pixel data, 1: among the IDAT chunks, 2: after them
    while True:
        if offset + 8 > size:
            where = "before its IEND chunk" if offset == size else "inside a chunk header"
            raise ImageRejected("truncated_png", f"truncated at byte {size}: the PNG ends {where}")
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        if first and kind != b"IHDR":
            raise ImageRejected("corrupt_png", f"corrupt PNG: the first chunk is {kind!r}, not IHDR")
        end = offset + 12 + length
        if end > size:
            raise ImageRejected(
                "truncated_png",
                f"truncated at byte {size}: the PNG ends inside its {kind.decode('latin-1')!r} chunk "
                f"(which needs {end - size} more bytes)",
            )
        if kind == b"IEND":
            return plain if stage == 1 else None
        if first:
            plain = _plain_header(data, offset, length)
            first = False
        elif kind == b"IDAT":
            if stage == 2:
                plain = None
            stage = 1
        else:
            if stage == 1:
                stage = 2
            if stage == 2 or _PLAIN_ANCILLARY.get(kind) != length:
                plain = None
        if plain is not None and stage == 0 and not _crc_ok(data, offset, length):
            plain = None  # Pillow checks these CRCs (libpng would only warn on an ancillary one)
        offset = end


def _plain_header(data: bytes, offset: int, length: int) -> tuple[int, int, str] | None:
    if length != 13:
        return None
    fields = data[offset + 8 : offset + 21]
    width, height = int.from_bytes(fields[0:4], "big"), int.from_bytes(fields[4:8], "big")
    mode = _PLAIN_MODES.get((fields[8], fields[9]))
    if mode is None or fields[10:13] != b"\0\0\0" or not (0 < width < 2**31 and 0 < height < 2**31):
        return None  # another mode, compression or filter method, interlaced, or an impossible size
    return width, height, mode


def _crc_ok(data: bytes, offset: int, length: int) -> bool:
    stored = int.from_bytes(data[offset + 8 + length : offset + 12 + length], "big")
    return zlib.crc32(memoryview(data)[offset + 4 : offset + 8 + length]) == stored


def _check_plausible(width: int, height: int, min_side: int, max_aspect: float | None) -> None:
    short, long = min(width, height), max(width, height)
    if short < min_side:
        raise ImageRejected(
            "implausible_size", f"implausible size {width}x{height}: a side is below {min_side} px"
        )
    if max_aspect is not None and long > short * max_aspect:
        raise ImageRejected(
            "implausible_size",
            f"implausible size {width}x{height}: aspect ratio 1:{long / short:.2f} beyond 1:{max_aspect:g}",
        )


def _words(exc: BaseException) -> str:
    """An exception's message without any Python object repr in it (``<_io.BytesIO object at 0x...>``)."""
    text = _REPR.sub("the data", str(exc)).strip()
    return text[:300] or type(exc).__name__


def to_gray8(img: Image.Image) -> Image.Image:
    """8-bit grayscale: colour via ITU-R 601 luma, alpha dropped, 16-bit scaled from the full 0..65535 range."""
    if img.mode == "L":
        return img
    if img.mode == "LA":
        return img.getchannel("L")
    if img.mode in _DIRECT_TO_L:
        return img.convert("L")
    if img.mode in _SIXTEEN_BIT:
        return Image.fromarray(_scale16(np.asarray(img, dtype=np.int64)), mode="L")
    raise ImageRejected("unsupported_mode", f"unsupported PNG mode {img.mode!r}")


def _scale16(values: np.ndarray) -> np.ndarray:
    """16-bit values -> 8-bit by ``(v * 255 + 32767) // 65535`` (values outside 0..65535 clipped first)."""
    wide = np.clip(values.astype(np.int64, copy=False), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def resize_square(img: Image.Image, size: int, resample: str = "box") -> Image.Image:
    """Resize to ``size`` x ``size``.

    For ``box`` Pillow first reduces by the integer part of the factor (``reducing_gap=1``: exact 2x2 block means
    for 1024 -> 512, three times faster than a plain box resize and within one grey level of it).
    """
    if img.size == (size, size):
        return img
    gap = 1.0 if resample == "box" else None
    return img.resize((size, size), resample=RESAMPLE[resample], reducing_gap=gap)


def encode(img: Image.Image, encoding: str, png_level: int = 1) -> bytes:
    """The stored bytes: ``raw`` row-major uint8 pixels, or a PNG at ``png_level``."""
    if encoding == "raw":
        return img.tobytes()
    if encoding == "png":
        out = io.BytesIO()
        img.save(out, format="PNG", compress_level=png_level)
        return out.getvalue()
    raise BadInput(f"encoding must be 'raw' or 'png', got {encoding!r}")


def prepare(
    data: bytes,
    size: int,
    *,
    encoding: str = "raw",
    png_level: int = 1,
    resample: str = "box",
    max_pixels: int = 40_000_000,
    min_side: int = 0,
    max_aspect: float | None = None,
    decoder: str | None = None,
) -> bytes:
    """PNG bytes from an archive -> the stored image bytes (``size`` x ``size``, 8-bit gray).

    ``decoder``: see :func:`decode_gray8`; every decoder gives the same bytes.
    """
    img = _gray8(data, max_pixels, min_side, max_aspect, decoder, reuse=True)
    return encode(resize_square(img, size, resample), encoding, png_level)
