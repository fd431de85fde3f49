"""Scoring images with a triage model, with exactly the preprocessing the model was trained and evaluated with.

An image file goes through the ingest path (``images.prepare``: 8-bit grey, square, Pillow box resize to the stored
size, raw pixels) and then the reader's resize (``dataset.make_dataset``: ``tf.image.resize`` with antialiasing,
rounded, clipped, back to uint8), is replicated to three channels and fed as float32 0..255.  Doing both steps,
not a shortcut, keeps the consumer's numbers equal to evaluation's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xray_tasks import storage
from xray_tasks.data import images
from xray_tasks.errors import BadInput
from xray_tasks.progress import Progress
from xray_tasks.training import networks

logger = logging.getLogger(__name__)

NEEDS_REVIEW = "needs_review"
CLEARED = "cleared"
IMAGE_SUFFIXES = (".png",)


def decode_stored(data: bytes, stored_size: int) -> np.ndarray:
    """An image file's bytes -> the stored uint8 ``[S, S, 1]`` array the shards hold for it.

    Raises:
        images.ImageRejected: not a readable PNG (the reason is in the message).
    """
    raw = images.prepare(data, stored_size, encoding="raw")
    return np.frombuffer(raw, dtype=np.uint8).reshape(stored_size, stored_size, 1)


def to_model_input(stored: np.ndarray, input_size: int) -> np.ndarray:
    """Stored uint8 ``[B, S, S, 1]`` -> float32 ``[B, I, I, 3]`` in 0..255, resized as the tf.data reader does."""
    import tensorflow as tf

    if stored.ndim != 4 or stored.shape[-1] != 1 or stored.dtype != np.uint8:
        raise BadInput(f"expected uint8 [B, S, S, 1] images, got {stored.dtype} {stored.shape}")
    image = tf.constant(stored)
    if stored.shape[1] != input_size:
        image = tf.cast(
            tf.clip_by_value(
                tf.round(tf.image.resize(image, [input_size, input_size], antialias=True)), 0, 255
            ),
            tf.uint8,
        )
    return tf.cast(tf.image.grayscale_to_rgb(image), tf.float32).numpy()


def prepare_images(blobs: Sequence[bytes], stored_size: int, input_size: int) -> np.ndarray:
    """Image files' bytes -> the model's float32 ``[B, I, I, 3]`` input batch."""
    if not blobs:
        raise BadInput("prepare_images needs at least one image")
    return to_model_input(np.stack([decode_stored(b, stored_size) for b in blobs]), input_size)


def triage_probabilities(model: Any, batch: np.ndarray) -> np.ndarray:
    """P(unhealthy) per image from the model's ``triage`` softmax (column 1), whatever other outputs it has."""
    return networks.triage_probability(model(batch, training=False))


def decide(probability: float, threshold: float) -> str:
    """The triage decision at the operating point (flagged when ``p >= threshold``, as in evaluation)."""
    return NEEDS_REVIEW if probability >= threshold else CLEARED


def list_images(location: str) -> list[str]:
    """PNG files in a folder / under an S3 prefix (recursively), or the single file named."""
    if location.lower().endswith(IMAGE_SUFFIXES) and storage.exists(location):
        return [location]
    return [u for u in storage.list_files(location) if u.lower().endswith(IMAGE_SUFFIXES)]


def score_uris(
    model: Any,
    uris: Sequence[str],
    *,
    stored_size: int,
    input_size: int,
    threshold: float,
    batch_size: int = 32,
    observe: Callable[[np.ndarray, np.ndarray, list[bytes]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per image: ``image``, ``probability``, ``decision``, ``error`` (unreadable images are reported,
    not fatal: one bad file must not stop a worklist).  ``observe(stored, probabilities, files)`` sees each
    scored batch (the drift profile is built from it)."""
    if batch_size < 1:
        raise BadInput(f"batch_size must be >= 1, got {batch_size}")
    rows: list[dict[str, Any]] = []
    progress = Progress("score", len(uris))
    for start in range(0, len(uris), batch_size):
        good, arrays, blobs = [], [], []
        for uri in uris[start : start + batch_size]:
            try:
                data = storage.read_bytes(uri)
                arrays.append(decode_stored(data, stored_size))
                good.append(uri)
                blobs.append(data)
            except (images.ImageRejected, FileNotFoundError) as exc:
                logger.warning("%s: not scored: %s", uri, exc)
                rows.append({"image": uri, "probability": None, "decision": None, "error": str(exc)})
        if good:
            stored = np.stack(arrays)
            probs = triage_probabilities(model, to_model_input(stored, input_size))
            rows.extend(
                {"image": u, "probability": float(p), "decision": decide(float(p), threshold), "error": None}
                for u, p in zip(good, probs, strict=True)
            )
            if observe is not None:
                observe(stored, probs, blobs)
        progress.update(len(uris[start : start + batch_size]))
    progress.done()
    return rows
