"""Decode one archive member into the stored image: 8-bit grayscale, square, resized.

Rejections raise :class:`ImageRejected` with a short reason; the caller quarantines the member and goes on.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from xray_tasks.errors import BadInput

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a silently grey image

RESAMPLE = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
}
_DIRECT_TO_L = {"L", "RGB", "RGBA", "P", "PA", "1", "CMYK", "YCbCr"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I"}


class ImageRejected(BadInput):
    """The member is not a usable image; ``kind`` is a stable code, ``str(exc)`` the reason for the report."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def open_png(data: bytes, max_pixels: int) -> Image.Image:
    """Open and fully decode a PNG, refusing other formats and oversized headers before decoding."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageRejected("bomb", f"decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("not_an_image", f"not a readable image: {exc}") from None
    if img.format != "PNG":
        raise ImageRejected("not_png", f"not a PNG (format {img.format})")
    width, height = img.size
    if width * height > max_pixels:
        raise ImageRejected(
            "bomb",
            f"decompression bomb: header declares {width}x{height} = {width * height} pixels, "
            f"limit {max_pixels}",
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        kind = "truncated_png" if "truncated" in str(exc).lower() else "corrupt_png"
        raise ImageRejected(kind, f"{kind.replace('_png', '')} PNG: {exc}") from None
    return img


def to_gray8(img: Image.Image) -> Image.Image:
    """8-bit grayscale: colour via ITU-R 601 luma, alpha dropped, 16-bit scaled from the full 0..65535 range."""
    if img.mode == "L":
        return img
    if img.mode == "LA":
        return img.getchannel("L")
    if img.mode in _DIRECT_TO_L:
        return img.convert("L")
    if img.mode in _SIXTEEN_BIT:
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    raise ImageRejected("unsupported_mode", f"unsupported PNG mode {img.mode!r}")


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
) -> bytes:
    """PNG bytes from an archive -> the stored image bytes (``size`` x ``size``, 8-bit gray)."""
    img = open_png(data, max_pixels)
    return encode(resize_square(to_gray8(img), size, resample), encoding, png_level)
