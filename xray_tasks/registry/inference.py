"""Scoring images with a triage model, with exactly the preprocessing the model was trained and evaluated with.

An image file goes through the ingest path (``images.prepare``: 8-bit grey, square, Pillow box resize to the stored
size, raw pixels) and then the reader's resize (``dataset.make_dataset``: ``tf.image.resize`` with antialiasing,
rounded, clipped, back to uint8), is replicated to three channels and fed as float32 0..255.  Doing both steps,
not a shortcut, keeps the consumer's numbers equal to evaluation's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xray_tasks import storage
from xray_tasks.data import images
from xray_tasks.errors import BadInput, XrayError
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
    """The triage decision at the operating point (flagged when ``p >= threshold``, as in evaluation).

    Fails closed: a probability that is not a finite number in [0, 1], or a threshold outside [0, 1], is never
    "cleared" (``BadInput``; ``score_uris`` turns it into an error row).
    """
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise BadInput(f"the operating threshold {threshold!r} is not in [0, 1]; nothing is triaged with it")
    if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
        raise BadInput(f"the model returned probability {probability!r}, not a number in [0, 1]; not triaged")
    return NEEDS_REVIEW if probability >= threshold else CLEARED


def list_images(location: str) -> list[str]:
    """PNG files in a folder / under an S3 prefix (recursively), or the single file named."""
    if location.lower().endswith(IMAGE_SUFFIXES) and storage.exists(location):
        return [location]
    return [u for u in storage.list_files(location) if u.lower().endswith(IMAGE_SUFFIXES)]


def expand_inputs(locations: Sequence[str]) -> list[tuple[str, str | None]]:
    """Every input the user named, as ``(uri, problem)``: nothing named or found is dropped.

    A named ``.png`` is kept whether it exists or not (reading it reports a missing one); a folder or prefix
    expands to every file under it, PNGs to be scored and any other file with the problem "not a PNG"; a named
    location with nothing under it is one row with that problem.  Duplicates are listed once.
    """
    out: dict[str, str | None] = {}
    for location in locations:
        if location.lower().endswith(IMAGE_SUFFIXES):
            out.setdefault(location, None)
            continue
        found = storage.list_files(location)
        if not found:
            out.setdefault(
                location,
                f"not a PNG file ({', '.join(IMAGE_SUFFIXES)}) or an empty folder; not scored"
                if storage.exists(location)
                else "no such file, folder or prefix",
            )
        for uri in found:
            ok = uri.lower().endswith(IMAGE_SUFFIXES)
            out.setdefault(uri, None if ok else f"not a PNG file ({', '.join(IMAGE_SUFFIXES)}); not scored")
    return list(out.items())


def _error_row(uri: str, reason: str) -> dict[str, Any]:
    logger.warning("%s: not scored: %s", uri, reason)
    return {"image": uri, "probability": None, "decision": None, "error": reason}


def _read_bytes(uri: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except FileNotFoundError:
        raise BadInput("file not found") from None
    except (OSError, XrayError) as exc:
        raise BadInput(f"cannot be read: {exc}") from None


def score_uris(
    model: Any,
    uris: Sequence[str | tuple[str, str | None]],
    *,
    stored_size: int,
    input_size: int,
    threshold: float,
    batch_size: int = 32,
    observe: Callable[[np.ndarray, np.ndarray, list[bytes]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per input, in input order: ``image``, ``probability``, ``decision``, ``error``.

    Missing, unreadable or non-PNG inputs, and non-finite probabilities, are error rows with the reason (one bad
    file must not stop a worklist, and none may vanish from it); a threshold outside [0, 1] makes every row an
    error.  ``uris`` may carry a known problem per input (``expand_inputs``).  ``observe(stored, probabilities,
    files)`` sees each scored batch (the drift profile is built from it).
    """
    if batch_size < 1:
        raise BadInput(f"batch_size must be >= 1, got {batch_size}")
    items = [(u, None) if isinstance(u, str) else u for u in uris]
    try:
        decide(0.0, threshold)
    except BadInput as exc:
        return [_error_row(u, problem or str(exc)) for u, problem in items]
    rows: list[dict[str, Any]] = []
    progress = Progress("score", len(items))
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        slots: list[dict[str, Any] | None] = []
        good, arrays, blobs = [], [], []
        for uri, problem in chunk:
            if problem:
                slots.append(_error_row(uri, problem))
                continue
            try:
                data = _read_bytes(uri)
                arrays.append(decode_stored(data, stored_size))
            except BadInput as exc:  # images.ImageRejected is one
                slots.append(_error_row(uri, str(exc)))
                continue
            blobs.append(data)
            good.append((len(slots), uri))
            slots.append(None)
        if good:
            stored = np.stack(arrays)
            probs = triage_probabilities(model, to_model_input(stored, input_size))
            for (slot, uri), p in zip(good, probs, strict=True):
                try:
                    slots[slot] = {
                        "image": uri,
                        "probability": float(p),
                        "decision": decide(float(p), threshold),
                    }
                    slots[slot]["error"] = None
                except BadInput as exc:
                    slots[slot] = _error_row(uri, str(exc))
            if observe is not None:
                observe(stored, probs, blobs)
        rows.extend(slots)
        progress.update(len(chunk))
    progress.done()
    return rows
