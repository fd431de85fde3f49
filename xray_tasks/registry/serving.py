"""The published SavedModel's signatures: pixels (``serve``) and PNG bytes (``serve_png``), one model behind both.

``serve`` / ``serving_default`` take what the Keras model takes: float32 ``[B, I, I, 3]`` in 0..255.  ``serve_png``
takes a batch of encoded PNG files (``tf.string`` ``[B]``; TF Serving's REST API accepts them as
``{"b64": ...}``) and runs, inside the graph, the preprocessing that ``inference.prepare_images`` runs in Python
(``images.prepare`` then ``inference.to_model_input``), so that a downstream job needs no code of ours:

1. decode (``tf.io.decode_png`` as uint16: an 8-bit value ``v`` arrives as ``v * 257``), refusing anything
   without the PNG signature (``decode_png`` would quietly decode a JPEG, GIF or BMP) and headers declaring more
   than ``images.prepare``'s pixel limit;
2. 8-bit grey as ``images.to_gray8`` makes it: one channel by ``(v * 255 + 32767) // 65535`` (exact for 8-bit
   input, the same formula for 16-bit); grey + alpha keeps the grey's high byte; colour takes each channel's high
   byte (what Pillow loads from a 16-bit colour PNG) and Pillow's integer ITU-R 601 luma, alpha dropped;
3. to the stored size as ``images.resize_square``'s Pillow box resize (``reducing_gap=1``) does, integer for
   integer: Pillow's ``reduce`` by the integer part of the factor, then its fixed-point box filter over the
   remaining box (``_box_resize``; ``tf.image.resize(method="area")`` is a different filter and differs by up to
   ~130 grey levels at sharp edges when the factor is not an integer);
4. then exactly ``inference.to_model_input``: antialiased bilinear resize to the input size, rounded, clipped,
   uint8, grey replicated to RGB, float32 0..255.

tests/integration/test_serving_png.py compares the stored pixels and P(unhealthy) with ``predict``'s path on the
real NIH PNGs and on synthetic sizes and modes; docs/registry.md records the numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from xray_tasks.errors import BadInput

logger = logging.getLogger(__name__)

TENSOR_ENDPOINT = "serve"
"""Float32 pixels in; also exported as ``serving_default`` (the first endpoint written)."""
PNG_ENDPOINT = "serve_png"
PNG_INPUT = "image_bytes"
"""The PNG endpoint's one input: a batch of whole PNG files, ``tf.string`` ``[None]``."""
MAX_PIXELS = 40_000_000
"""Largest width x height a PNG header may declare: ``images.prepare``'s default limit (decompression bombs)."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NOT_PNG = "serve_png: an image_bytes element is not a PNG file (no PNG signature and IHDR); send whole files"


def _checked_header(data: Any) -> tuple[Any, Any]:
    """(width, height) as int64 from a PNG's IHDR (bytes 16..23, big-endian), after checking the signature.

    ``tf.debugging.Assert`` with a plain message: ``assert_equal`` would quote the (binary) bytes in its error.
    """
    import tensorflow as tf

    is_png = tf.logical_and(
        tf.equal(tf.strings.substr(data, 0, 8), tf.constant(_PNG_SIGNATURE)), tf.strings.length(data) >= 24
    )
    check = tf.debugging.Assert(is_png, [_NOT_PNG])
    with tf.control_dependencies([check]):
        wh = tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.int32, little_endian=False)
    wh = tf.cast(wh, tf.int64)
    return wh[0], wh[1]


def _to_gray8(decoded: Any) -> Any:
    """uint16 ``[H, W, C]`` (C = 1..4, as ``decode_png(dtype=uint16)`` gives) -> uint8 ``[H, W, 1]``."""
    import tensorflow as tf

    wide = tf.cast(decoded, tf.int32)
    channels = tf.shape(wide)[-1]

    def grey() -> Any:
        return (wide[..., :1] * 255 + 32767) // 65535

    def grey_alpha() -> Any:
        return wide[..., :1] // 256

    def colour() -> Any:
        rgb = wide[..., :3] // 256
        # Pillow's rgb2l: L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16 (ITU-R 601 in 16-bit fixed point).
        weights = tf.constant([19595, 38470, 7471], tf.int32)
        return (tf.reduce_sum(rgb * weights, axis=-1, keepdims=True) + 32768) // 65536

    gray = tf.case([(tf.equal(channels, 1), grey), (tf.equal(channels, 2), grey_alpha)], default=colour)
    return tf.cast(gray, tf.uint8)


_PRECISION_BITS = 22
"""Pillow's fixed-point precision for 8-bit resampling (``32 - 8 - 2`` in libImaging/Resample.c)."""


def _reduce(gray: Any, fy: Any, fx: Any) -> Any:
    """Pillow's ``Image.reduce((fx, fy))`` of uint8 ``[H, W]``: block means, the last partial blocks over the
    pixels they have; each ``((sum + n // 2) * m) >> 24`` with ``m = trunc(float32(2**32) / float32(256 n))``,
    Pillow's integer division (libImaging/Reduce.c).  Returns int64 ``[ceil(H / fy), ceil(W / fx)]``."""
    import tensorflow as tf

    height, width = tf.shape(gray)[0], tf.shape(gray)[1]
    rows, cols = -(-height // fy), -(-width // fx)
    pad = [[0, rows * fy - height], [0, cols * fx - width]]

    def block_sums(values: Any) -> Any:
        blocks = tf.reshape(tf.pad(values, pad), [rows, fy, cols, fx])
        return tf.reduce_sum(blocks, axis=[1, 3])

    sums = block_sums(tf.cast(gray, tf.int64))
    counts = block_sums(tf.ones_like(gray, tf.int64))
    multiplier = tf.cast(
        tf.constant(2.0**32, tf.float32) / tf.cast(counts * 256, tf.float32), tf.int64
    )  # float32 division then truncation, as Pillow's division_UINT32
    return ((sums + counts // 2) * multiplier) // 2**24


def _box_coefficients(in_size: Any, in_end: Any, out_size: int) -> Any:
    """Pillow's BOX weights for one axis (``precompute_coeffs`` + ``normalize_coeffs_8bpc``), as a dense float64
    ``[out_size, in_size]`` matrix of fixed-point integers summing to about ``2**22`` per row.

    ``in_end`` is the float32 end of the source box (Pillow passes the box as C floats); the start is 0.
    """
    import tensorflow as tf

    scale = tf.cast(in_end, tf.float64) / out_size
    filterscale = tf.maximum(scale, 1.0)
    support = 0.5 * filterscale
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    first = tf.maximum(tf.floor(center - support + 0.5), 0.0)[:, None]
    last = tf.minimum(tf.floor(center + support + 0.5), tf.cast(in_size, tf.float64))[:, None]
    x = tf.cast(tf.range(in_size), tf.float64)[None, :]
    arg = (x - center[:, None] + 0.5) * (1.0 / filterscale)
    taken = (x >= first) & (x < last) & (arg > -0.5) & (arg <= 0.5)  # Pillow's box_filter on its taps
    weights = tf.cast(taken, tf.float64)
    total = tf.reduce_sum(weights, axis=1, keepdims=True)
    normalised = tf.math.divide_no_nan(weights, total)
    return tf.floor(0.5 + normalised * 2.0**_PRECISION_BITS)


def _resample(image: Any, coefficients: Any) -> Any:
    """One Pillow resampling pass along the last axis: ``clip8((sum(p * k) + 2**21) >> 22)``, float64-exact."""
    import tensorflow as tf

    acc = tf.matmul(image, coefficients, transpose_b=True) + 2.0 ** (_PRECISION_BITS - 1)
    return tf.clip_by_value(tf.floor(acc / 2.0**_PRECISION_BITS), 0.0, 255.0)


def _box_resize(gray: Any, size: int) -> Any:
    """uint8 ``[H, W, 1]`` -> uint8 ``[size, size, 1]``, as ``images.resize_square`` (Pillow's ``Image.resize``
    with BOX and ``reducing_gap=1``) computes it, integer for integer.

    Pillow first reduces by the integer part of the factor on each axis (``Image.reduce``), then resamples the
    rest with its box filter over the source box ``(0, 0, W / fx, H / fy)``: horizontal pass first, rounded to
    8 bits, then vertical, each only where that axis still changes.
    """
    import tensorflow as tf

    image = gray[..., 0]
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    fy, fx = tf.maximum(height // size, 1), tf.maximum(width // size, 1)
    reduced = tf.cond(
        tf.logical_or(fy > 1, fx > 1),
        lambda: tf.cast(_reduce(image, fy, fx), tf.float64),
        lambda: tf.cast(image, tf.float64),
    )
    box_w = tf.cast(tf.cast(width, tf.float64) / tf.cast(fx, tf.float64), tf.float32)
    box_h = tf.cast(tf.cast(height, tf.float64) / tf.cast(fy, tf.float64), tf.float32)
    rows, cols = tf.shape(reduced)[0], tf.shape(reduced)[1]
    horizontal = tf.logical_or(tf.not_equal(cols, size), tf.not_equal(box_w, float(size)))
    vertical = tf.logical_or(tf.not_equal(rows, size), tf.not_equal(box_h, float(size)))
    wide = tf.cond(
        horizontal, lambda: _resample(reduced, _box_coefficients(cols, box_w, size)), lambda: reduced
    )
    out = tf.cond(
        vertical,
        lambda: tf.transpose(_resample(tf.transpose(wide), _box_coefficients(rows, box_h, size))),
        lambda: wide,
    )
    return tf.cast(tf.ensure_shape(out, [size, size])[..., None], tf.uint8)


def decode_stored_graph(data: Any, stored_size: int) -> Any:
    """One PNG file (scalar ``tf.string``) -> the stored uint8 ``[S, S, 1]`` image, in TF ops.

    The graph twin of ``inference.decode_stored`` (steps 1 to 3 of the module docstring).

    Raises:
        tf.errors.InvalidArgumentError: not a PNG, truncated, corrupt, or a header beyond ``MAX_PIXELS``.
    """
    import tensorflow as tf

    width, height = _checked_header(data)
    check = tf.debugging.Assert(
        width * height <= MAX_PIXELS,
        [
            f"serve_png: a PNG header declares more than {MAX_PIXELS} pixels (a decompression bomb); not decoded"
        ],
    )
    with tf.control_dependencies([check]):
        decoded = tf.io.decode_png(data, channels=0, dtype=tf.uint16)
    return _box_resize(_to_gray8(decoded), stored_size)


def to_model_input_graph(stored: Any, input_size: int) -> Any:
    """Stored uint8 ``[B, S, S, 1]`` -> float32 ``[B, I, I, 3]``: the same ops as ``inference.to_model_input``."""
    import tensorflow as tf

    image = stored
    if stored.shape[1] != input_size:
        image = tf.cast(
            tf.clip_by_value(
                tf.round(tf.image.resize(image, [input_size, input_size], antialias=True)), 0, 255
            ),
            tf.uint8,
        )
    return tf.cast(tf.image.grayscale_to_rgb(image), tf.float32)


def pngs_to_model_input(image_bytes: Any, stored_size: int, input_size: int) -> Any:
    """A batch of PNG files (``tf.string`` ``[B]``, any sizes and PNG modes) -> the model's float32 input."""
    import tensorflow as tf

    stored = tf.map_fn(
        lambda data: decode_stored_graph(data, stored_size),
        image_bytes,
        fn_output_signature=tf.TensorSpec([stored_size, stored_size, 1], tf.uint8),
    )
    return to_model_input_graph(stored, input_size)


def export(model: Any, out: Path, *, stored_size: int, input_size: int) -> None:
    """Write the SavedModel with both endpoints: ``serve`` (= ``serving_default``) and ``serve_png``.

    Both return what the Keras model returns (for our models a dict with ``triage``, softmax ``[B, 2]``).
    """
    import keras
    import tensorflow as tf

    if not (
        isinstance(stored_size, int) and stored_size > 0 and isinstance(input_size, int) and input_size > 0
    ):
        raise BadInput(
            f"stored_size and input_size must be positive ints, got {stored_size!r}, {input_size!r}"
        )
    archive = keras.export.ExportArchive()
    archive.track(model)
    name = model.inputs[0].name
    # The tensor endpoint first: write_out aliases the first endpoint as serving_default, as model.export did.
    serve = archive.add_endpoint(
        TENSOR_ENDPOINT,
        model.__call__,
        input_signature=[tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name=name)],
    )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=PNG_INPUT)])
    def serve_png(image_bytes: Any) -> Any:
        return serve(pngs_to_model_input(image_bytes, stored_size, input_size))

    archive.add_endpoint(PNG_ENDPOINT, serve_png)
    archive.write_out(str(out), verbose=False)
    logger.info("exported %s with endpoints %s and %s", out, TENSOR_ENDPOINT, PNG_ENDPOINT)
