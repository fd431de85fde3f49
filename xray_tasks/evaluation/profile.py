"""Profiles of scored studies: what the model saw and what it said, in a form a later batch can be compared with.

A :class:`ProfileBuilder` takes batches of stored pixels (uint8, the size the shards hold), the model's
P(unhealthy) for them and, where known, original sizes and metadata; ``build`` turns them into a
``contracts.Profile``.  Evaluation profiles the test split (``reference_profile``) and publishes it with the
version; scoring profiles its batch on the *reference's* cut points (``build(reference=...)``) so the two can
be compared bin by bin (``evaluation.drift``).  Pure numpy, plus Pillow to read PNG headers.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from xray_tasks import storage
from xray_tasks.contracts import Distribution, Histogram, Profile

logger = logging.getLogger(__name__)

QUANTILES = {"p01": 1, "p05": 5, "p25": 25, "p50": 50, "p75": 75, "p95": 95, "p99": 99}
CUTS = np.arange(10, 100, 10)
"""Percentiles the reference's bins are cut at (deciles)."""
SAMPLE_MAX = 2000
INTENSITY_EDGES = tuple(float(e) for e in range(0, 257, 16))
SCORE_EDGES = tuple(float(e) for e in np.linspace(0.0, 1.0, 11))
AGE_BANDS = ((0, 18, "0-17"), (18, 40, "18-39"), (40, 60, "40-59"), (60, 80, "60-79"), (80, 200, "80+"))
QUANTITIES = ("score", "mean_intensity", "std_intensity", "saturated_share", "original_size")
"""The per-image quantities a profile bins (``original_size`` only where sizes are known)."""


def distribution(values: Sequence[float], edges: Sequence[float] | None = None) -> Distribution:
    """``values`` binned on ``edges`` (the reference's cut points), or on their own deciles when ``edges`` is
    None (a reference)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if edges is None:
        edges = [float(e) for e in np.unique(np.percentile(v, CUTS))] if len(v) else []
    cut = np.asarray(edges, dtype=np.float64)
    counts = np.bincount(np.searchsorted(cut, v, side="right"), minlength=len(cut) + 1)
    if len(v) > SAMPLE_MAX:
        sample = np.percentile(v, np.linspace(0, 100, SAMPLE_MAX))
    else:
        sample = np.sort(v)
    return Distribution(
        n=len(v),
        edges=tuple(float(e) for e in cut),
        counts=tuple(int(c) for c in counts),
        quantiles={k: float(np.percentile(v, q)) for k, q in QUANTILES.items()} if len(v) else {},
        mean=float(v.mean()) if len(v) else None,
        sample=tuple(round(float(x), 6) for x in sample),
    )


def histogram(values: np.ndarray, edges: Sequence[float]) -> Histogram:
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=np.asarray(edges))
    return Histogram(edges=tuple(float(e) for e in edges), counts=tuple(int(c) for c in counts))


def age_band(age: float | None) -> str | None:
    if age is None or not math.isfinite(age):
        return None
    return next((name for lo, hi, name in AGE_BANDS if lo <= age < hi), None)


def png_side(data: bytes) -> int | None:
    """The longer side of a PNG from its header (no decoding); None when unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(max(img.size))
    except (OSError, ValueError, Image.DecompressionBombError):  # scoring itself reports unreadable images
        return None


class ProfileBuilder:
    """Collects what a profile needs, batch by batch; ``seconds`` is the time spent inside it."""

    def __init__(self) -> None:
        self.scores: list[np.ndarray] = []
        self.means: list[np.ndarray] = []
        self.stds: list[np.ndarray] = []
        self.saturated: list[np.ndarray] = []
        self.pixels = np.zeros(len(INTENSITY_EDGES) - 1, dtype=np.int64)
        self.sides: list[float] = []
        self.categories: dict[str, dict[str, int]] = {}
        self.stored_size: int | None = None
        self.seconds = 0.0

    def add_pixels(self, stored: np.ndarray) -> None:
        """Stored uint8 images ``[B, S, S]`` or ``[B, S, S, 1]``: per-image mean, std, saturated share."""
        started = time.perf_counter()
        images = np.asarray(stored)
        if images.ndim == 4:
            images = images[..., 0]
        flat = images.reshape(len(images), -1)
        self.stored_size = int(images.shape[-1]) if len(images) else self.stored_size
        as_float = flat.astype(np.float32)
        self.means.append(as_float.mean(axis=1))
        self.stds.append(as_float.std(axis=1))
        self.saturated.append(((flat == 0) | (flat == 255)).mean(axis=1))
        self.pixels += np.bincount((flat >> 4).ravel(), minlength=16)[:16]
        self.seconds += time.perf_counter() - started

    def add_scores(self, probabilities: Sequence[float]) -> None:
        self.scores.append(np.asarray(probabilities, dtype=np.float64))

    def add_sides(self, sides: Iterable[float | None]) -> None:
        self.sides.extend(float(s) for s in sides if s is not None and math.isfinite(float(s)))

    def add_files(self, blobs: Sequence[bytes]) -> None:
        """Original sizes from the image files' headers."""
        started = time.perf_counter()
        self.add_sides(png_side(b) for b in blobs)
        self.seconds += time.perf_counter() - started

    def add_category(self, name: str, values: Iterable[str | None]) -> None:
        counts = self.categories.setdefault(name, {})
        for value in values:
            if (
                value is not None
                and not (isinstance(value, float) and math.isnan(value))
                and str(value).strip()
            ):
                counts[str(value)] = counts.get(str(value), 0) + 1

    def add_metadata(self, frame: pd.DataFrame) -> None:
        """``view``, ``sex`` and ``age`` columns, where present."""
        for name in ("view", "sex"):
            if name in frame.columns:
                self.add_category(name, frame[name].tolist())
        if "age" in frame.columns:
            self.add_category("age_band", (age_band(a) for a in pd.to_numeric(frame["age"], errors="coerce")))

    def build(self, source: str, threshold: float, reference: Profile | None = None) -> Profile:
        """The profile; binned on ``reference``'s cut points when given (a batch), else on its own deciles."""
        started = time.perf_counter()
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)

        def binned(name: str, values: np.ndarray | list) -> Distribution:
            ref = getattr(reference, name) if reference is not None else None
            return distribution(values, ref.edges if ref is not None else None)

        def joined(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0)

        profile = Profile(
            source=source,
            n=len(scores),
            threshold=float(threshold),
            flagged_share=float(np.mean(scores >= threshold)) if len(scores) else 0.0,
            score=binned("score", scores),
            score_histogram=histogram(scores, SCORE_EDGES),
            mean_intensity=binned("mean_intensity", joined(self.means)),
            std_intensity=binned("std_intensity", joined(self.stds)),
            saturated_share=binned("saturated_share", joined(self.saturated)),
            intensity_histogram=Histogram(edges=INTENSITY_EDGES, counts=tuple(int(c) for c in self.pixels)),
            original_size=binned("original_size", self.sides) if self.sides else None,
            categories={k: dict(sorted(v.items())) for k, v in self.categories.items() if v} or None,
            stored_image_size=self.stored_size,
        )
        self.seconds += time.perf_counter() - started
        return profile


def original_sides(workspace: str, names: Sequence[str]) -> list[float | None]:
    """The longer original side of each image from the source metadata the manifest was built from
    (``OriginalImage[Width,Height]``), None where unknown."""
    from xray_tasks.workspace import Workspace

    try:
        summary = storage.read_json(Workspace(workspace).manifest_summary)
        meta = pd.read_csv(io.BytesIO(storage.read_bytes(summary["metadata"]["uri"])))
    except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
        logger.info("profile: no original image sizes (%s)", exc)
        return [None] * len(names)
    width, height = "OriginalImage[Width", "Height]"
    if "Image Index" not in meta.columns or width not in meta.columns or height not in meta.columns:
        return [None] * len(names)
    longer = np.maximum(
        pd.to_numeric(meta[width], errors="coerce").to_numpy(dtype=np.float64),
        pd.to_numeric(meta[height], errors="coerce").to_numpy(dtype=np.float64),
    )
    sides = pd.Series(longer, index=meta["Image Index"].astype(str).to_numpy())
    sides = sides[~sides.index.duplicated()]
    return [float(sides[n]) if n in sides.index and np.isfinite(sides[n]) else None for n in names]


def reference_profile(workspace: str, test: pd.DataFrame, threshold: float, batch_size: int = 64) -> Profile:
    """The test split's profile: its predictions, its stored pixels (read from the shards as stored), original
    sizes from the source metadata, view, sex and age from the manifest."""
    from xray_tasks.data import dataset
    from xray_tasks.data.manifest import read_manifest

    builder = ProfileBuilder()
    builder.add_scores(test["probability"].to_numpy())
    for batch in dataset.split_dataset(workspace, "test", batch_size=batch_size, channels=1):
        builder.add_pixels(batch["image"].numpy())
    names = test["image_index"].astype(str).tolist()
    builder.add_sides(original_sides(workspace, names))
    manifest = read_manifest(workspace)
    builder.add_metadata(manifest[manifest["image_index"].isin(set(names))])
    profile = builder.build(f"test split of {workspace}", threshold)
    logger.info(
        "profile: %d test studies, flagged share %.3f at %.4f, mean intensity %.1f (%.1f s)",
        profile.n,
        profile.flagged_share,
        threshold,
        profile.mean_intensity.mean or float("nan"),
        builder.seconds,
    )
    return profile
