"""The reading side of the shards: a ``tf.data`` pipeline for the model stages.

Files are interleaved in parallel, records batched, then parsed with the spec the writer used (``shards.FEATURES``)
a batch at a time, images decoded (raw or PNG, as the archive markers say), optionally resized for the base network
and prefetched.  With ``channels=1`` and no ``output_size`` the pipeline stops at the stored pixels, and the model
side does the rest on its device (``to_model_pixels``): the features stage feeds a GPU that way.  ``s3://`` shards are read through tensorflow-io's file system, registered on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from xray_tasks import storage
from xray_tasks.data import shards
from xray_tasks.errors import BadInput, MissingInput
from xray_tasks.workspace import Workspace

logger = logging.getLogger(__name__)

_READ_BUFFER = 8 * 1024 * 1024


def feature_spec() -> dict:
    """``tf.io`` parsing spec derived from the writer's ``shards.FEATURES``."""
    import tensorflow as tf

    dtypes = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}
    return {
        name: tf.io.FixedLenFeature([] if length == 1 else [length], dtypes[kind])
        for name, (kind, length) in shards.FEATURES.items()
    }


def make_parser(encoding: str, image_size: int):
    """A function serialized Examples ``[B]`` -> dict(image uint8 [B, H, W, 1], label, labels, image_index,
    patient_id): one ``parse_example`` per batch, and for raw shards one ``decode_raw`` over the whole batch."""
    import tensorflow as tf

    spec = feature_spec()
    if encoding not in ("raw", "png"):
        raise BadInput(f"encoding must be 'raw' or 'png', got {encoding!r}")
    shape = [image_size, image_size, 1]

    def parse(serialized):
        ex = tf.io.parse_example(serialized, spec)
        if encoding == "raw":
            image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [-1, *shape])
        else:
            image = tf.map_fn(
                lambda png: tf.ensure_shape(tf.io.decode_png(png, channels=1), shape),
                ex["image"],
                fn_output_signature=tf.TensorSpec(shape, tf.uint8),
            )
        return {
            "image": image,
            "label": tf.cast(ex["label"], tf.int32),
            "labels": tf.cast(ex["labels"], tf.float32),
            "image_index": ex["image_index"],
            "patient_id": ex["patient_id"],
        }

    return parse


def to_model_pixels(image, size: int, channels: int = 3):
    """Stored uint8 ``[B, S, S, 1]`` -> uint8 ``[B, size, size, channels]``: antialiased resize, rounded and clipped
    (only when ``size`` differs), grey replicated to RGB when ``channels`` is 3.  The same ops wherever they run:
    in the input pipeline, or inside the model's function on its device (``training.devices.replicated``)."""
    import tensorflow as tf

    if image.shape[1] != size:
        image = tf.cast(
            tf.clip_by_value(tf.round(tf.image.resize(image, [size, size], antialias=True)), 0, 255), tf.uint8
        )
    return tf.image.grayscale_to_rgb(image) if channels == 3 else image


def make_dataset(
    uris: Sequence[str],
    *,
    encoding: str,
    image_size: int,
    batch_size: int,
    output_size: int | None = None,
    channels: int = 3,
    shuffle: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 1024,
    repeat: bool = False,
    drop_remainder: bool = False,
    cycle_length: int = 4,
):
    """Batched ``tf.data.Dataset`` of dicts over TFRecord shards.

    ``image`` is uint8 ``[B, S, S, channels]`` (``S`` = ``output_size`` or the stored size; grey replicated to
    RGB when ``channels`` is 3, as the report fed its base network).  Order is deterministic unless ``shuffle``
    (and then too, for given seeds, under TensorFlow's op determinism).
    """
    import tensorflow as tf

    if not uris:
        raise BadInput("make_dataset needs at least one shard URI")
    if channels not in (1, 3):
        raise BadInput(f"channels must be 1 or 3, got {channels}")
    storage.prepare_tensorflow(uris)
    autotune = tf.data.AUTOTUNE
    # Parallel reads may reorder elements only when shuffling anyway, and never under the determinism switch.
    in_order = not shuffle or _op_determinism()
    files = tf.data.Dataset.from_tensor_slices(list(uris))
    if shuffle:
        files = files.shuffle(len(uris), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=_READ_BUFFER),
        cycle_length=max(1, min(cycle_length, len(uris))),
        num_parallel_calls=autotune,
        deterministic=in_order,
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    # Parsing, decoding and resizing work on whole batches: one op call per batch, not per image.
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(make_parser(encoding, image_size), num_parallel_calls=autotune, deterministic=in_order)
    size = output_size or image_size
    if size != image_size or channels == 3:
        ds = ds.map(
            lambda item: {**item, "image": to_model_pixels(item["image"], size, channels)},
            num_parallel_calls=autotune,
            deterministic=in_order,
        )
    return ds.prefetch(autotune)


def _op_determinism() -> bool:
    """Whether ``training.determinism`` switched TensorFlow's op determinism on in this process."""
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())


def split_dataset(workspace: str, split: str, *, batch_size: int, **kwargs):
    """``make_dataset`` over one split's committed shards, in the format the markers record."""
    fmt = shards.shard_format(workspace)
    uris = shards.committed_shards(workspace, split)
    if not uris:
        raise MissingInput(f"{Workspace(workspace).shards}: no committed shards for split {split!r}")
    return make_dataset(
        uris, encoding=fmt.encoding, image_size=fmt.image_size, batch_size=batch_size, **kwargs
    )


def split_size(workspace: str, split: str) -> int:
    """Records in one split's committed shards (from the markers, no reading)."""
    return shards.split_size(workspace, split)
