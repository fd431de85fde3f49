"""Pixels of the synthetic dataset: chest-like radiographs, PNG in any of NIH's modes, a decompression bomb.

A synthetic radiograph is a bright mediastinum between two darker lung fields, soft ribs and noise.  Unhealthy
studies carry a learnable signal whose strength is a parameter: bright nodular opacities in the lung fields and,
for some, a basal effusion-like haze.  ``Look`` adds what makes the demo realistic: a share of unhealthy studies
whose finding does not show (``subtle``: no model can rank those above healthy ones, so test AUROC stays below 1),
and a scanner's response (``contrast`` about mid-grey, then ``brightness``), which the drift check must notice.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from xray_tasks.data.synth import Study

MODES = ("L", "L", "L", "L", "L", "L", "RGBA", "LA", "RGB", "I;16")
"""Pixel formats cycled through (mostly 8-bit gray, as in NIH, which also ships some RGBA files)."""


def rng(*key: object) -> np.random.Generator:
    """A generator seeded from ``key``: the same key always draws the same numbers, whatever else ran."""
    digest = hashlib.blake2b(":".join(map(str, key)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


@dataclass(frozen=True)
class Look:
    """How a synthetic dataset looks beyond its signal strength (the defaults: every finding shows, one scanner)."""

    subtle: float = 0.0
    """Share of unhealthy studies whose finding is invisible (drawn per study, deterministically)."""
    contrast: float = 1.0
    """Scanner contrast: pixel values are scaled by this about mid-grey (128)."""
    brightness: float = 0.0
    """Scanner brightness: added to every pixel after the contrast."""


PLAIN = Look()


def render(study: Study, size: int, signal: float = 1.0, seed: int = 0, look: Look = PLAIN) -> np.ndarray:
    """A synthetic radiograph (uint8, ``size`` x ``size``); unhealthy studies carry opacities."""
    gen = rng("render", seed, study.image_index)
    if look.subtle > 0 and rng("subtle", seed, study.image_index).random() < look.subtle:
        signal = 0.0  # the finding is there (the label says so) but does not show
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 150 + 40 * y + gen.normal(0, 3, 1)[0]
    for cx in (0.3, 0.7):  # lung fields: darker ellipses
        cx += gen.normal(0, 0.015)
        lung = ((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.33) ** 2 < 1
        img = np.where(lung, img - 70, img)
    img += 12 * np.sin(y * 2 * np.pi * 9 + gen.uniform(0, np.pi)) * (np.abs(x - 0.5) > 0.08)  # ribs
    if study.findings and signal > 0:
        for _ in range(int(gen.integers(2, 5))):
            cx, cy = gen.choice([0.3, 0.7]) + gen.normal(0, 0.06), gen.uniform(0.3, 0.75)
            r = gen.uniform(0.05, 0.1)
            blob = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)))
            img += signal * 80 * blob
        if gen.random() < 0.5:
            img += signal * 45 * np.clip((y - 0.62) / 0.2, 0, 1) * (np.abs(x - 0.5) > 0.1)
    img += gen.normal(0, 6, size=(size, size))
    if look.contrast != 1.0 or look.brightness:
        img = 128 + look.contrast * (img - 128) + look.brightness
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray, mode: str = "L") -> bytes:
    """Encode gray pixels as a PNG in ``mode`` (L, LA, RGB, RGBA or 16-bit I;16)."""
    gray = Image.fromarray(pixels, mode="L")
    if mode == "I;16":
        img = Image.fromarray(pixels.astype(np.uint16) * 257)
    elif mode == "LA":
        img = Image.merge("LA", (gray, Image.new("L", gray.size, 255)))
    else:
        img = gray.convert(mode)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def bomb_png(side: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``side`` x ``side`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (side + 1) * 64, 9)  # a few rows; the header is what matters
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
