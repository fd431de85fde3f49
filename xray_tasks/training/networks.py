"""The networks: the convolutional base (with its preprocessing inside), the report's head, the full model.

The base sees float32 images in 0..255 (grey replicated to RGB) and ends in the global average pool that is the
first layer of the report's head: applying that pool during feature extraction is exact (it has no parameters)
and stores a D-vector per image (2048 for ResNet50) instead of the 16x16x2048 maps.  The head therefore takes the
pooled vector.  The full model chains base and head, so it carries its preprocessing: ResNet50 is caffe-style
(RGB -> BGR, ImageNet means subtracted; not /255), built here from a frozen 1x1 convolution so the saved model
loads with stock Keras and no custom objects; EfficientNet and MobileNetV3 rescale inside their own graphs.

Nothing is downloaded: ``weights="imagenet"`` only uses a file already in the Keras cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xray_tasks import storage
from xray_tasks.config import PATHOLOGIES, HeadConfig
from xray_tasks.errors import BadInput, MissingInput

logger = logging.getLogger(__name__)

IMAGE_INPUT = "image"
FEATURES_INPUT = "features"
TRIAGE_OUTPUT = "triage"
PATHOLOGY_OUTPUT = "pathologies"
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)
"""ImageNet channel means (B, G, R) of Keras' ``imagenet_utils.preprocess_input`` caffe mode."""


@dataclass(frozen=True)
class BaseSpec:
    constructor: str
    feature_dim: int
    preprocessing: str
    """``caffe`` (added in front of the base) or ``builtin`` (part of the Keras application's graph)."""
    imagenet_notop_file: str


BASES: dict[str, BaseSpec] = {
    "resnet50": BaseSpec("ResNet50", 2048, "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "efficientnetb0": BaseSpec("EfficientNetB0", 1280, "builtin", "efficientnetb0_notop.h5"),
    "mobilenetv3small": BaseSpec(
        "MobileNetV3Small", 576, "builtin", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    ),
}


def base_spec(base: str) -> BaseSpec:
    if base not in BASES:
        raise BadInput(f"unknown base {base!r}; allowed: {sorted(BASES)}")
    return BASES[base]


def keras_cache_dirs() -> list[Path]:
    """Where Keras keeps downloaded weights (``$KERAS_HOME/models``, ``~/.keras/models``, ``/tmp/.keras/models``)."""
    homes = [
        os.environ.get("KERAS_HOME"),
        str(Path.home() / ".keras"),
        os.path.join(tempfile.gettempdir(), ".keras"),
    ]
    return [Path(h) / "models" for h in homes if h]


def resolve_weights(base: str, weights: str, seed: int = 0) -> tuple[str | None, str]:
    """``(local weights path or None, weights id)`` for ``imagenet``, ``none`` or a file path / ``s3://`` URI.

    The id (``random:seed=<seed>`` or ``<kind>:<sha256 prefix>``) is what features record, so features of a
    different base are noticed; ``seed`` only matters for ``none`` (a random base).

    Raises:
        FileNotFoundError: ImageNet weights are not cached, or the weights file does not exist.
    """
    spec = base_spec(base)
    if weights.lower() == "none":
        return None, f"random:seed={int(seed)}"
    if weights == "imagenet":
        candidates = [d / spec.imagenet_notop_file for d in keras_cache_dirs()]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise MissingInput(
                f"ImageNet weights for {base} are not in the Keras cache (looked for {[str(c) for c in candidates]}); "
                f"nothing is downloaded at run time: copy {spec.imagenet_notop_file} there, or set "
                "features.weights to a weights file path, or to 'none' for a random base"
            )
        return str(found), f"imagenet:{_sha256(found)[:16]}"
    try:
        path = storage.cached_copy(weights, Path(tempfile.gettempdir()) / "xray-weights")
    except FileNotFoundError:
        raise MissingInput(
            f"features.weights: no file at {weights!r} (allowed: 'imagenet', 'none', a path or s3:// URI)"
        ) from None
    return str(path), f"file:{_sha256(path)[:16]}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def caffe_preprocessing(name: str = "preprocess_caffe") -> Any:
    """ResNet50's ``preprocess_input`` as a frozen float32 1x1 convolution: BGR channel order, means subtracted."""
    import keras

    layer = keras.layers.Conv2D(3, 1, name=name, trainable=False, dtype="float32")
    layer.build((None, None, None, 3))
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out_channel in range(3):
        kernel[0, 0, 2 - out_channel, out_channel] = 1.0  # output B,G,R <- input R,G,B reversed
    layer.set_weights([kernel, -np.asarray(CAFFE_BGR_MEANS, np.float32)])
    return layer


def build_base(base: str, input_size: int, weights_path: str | None = None, seed: int = 0) -> Any:
    """Image (float32 0..255, ``[S, S, 3]``, input named ``image``) -> pooled features ``[D]``.

    ``weights_path`` None gives a random base initialised from ``seed``: the same seed rebuilds the same weights,
    which is how the final model reproduces the base its features came from.
    """
    import keras

    spec = base_spec(base)
    if not 32 <= int(input_size) <= 2048:
        raise BadInput(f"input_size must be in [32, 2048], got {input_size}")
    keras.utils.set_random_seed(int(seed))
    constructor = getattr(keras.applications, spec.constructor)
    app = constructor(
        include_top=False, weights=weights_path, input_shape=(input_size, input_size, 3), pooling="avg"
    )
    image = keras.Input((input_size, input_size, 3), name=IMAGE_INPUT, dtype="float32")
    x = caffe_preprocessing()(image) if spec.preprocessing == "caffe" else image
    return keras.Model(image, app(x), name=f"{base}_features")


def application(base_model: Any) -> Any:
    """The Keras application nested inside a ``build_base`` model."""
    import keras

    nested = [layer for layer in base_model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise BadInput(
            f"{base_model.name}: expected one nested application, found {[m.name for m in nested]}"
        )
    return nested[0]


def feature_scaling(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) that standardise each feature column; constant columns are only centred."""
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
    return scale.astype(np.float32), (-mean * scale).astype(np.float32)


def build_head(
    feature_dim: int, cfg: HeadConfig, scaling: tuple[np.ndarray, np.ndarray] | None = None
) -> Any:
    """The report's top on pooled features: Dense(512, tanh) -> Dropout(0.4) -> Dense(2, softmax) "triage".

    The report's first layer, the global average pool, already ran in the base.  ``cfg.multilabel`` adds a
    14-way sigmoid "pathologies" output on the same hidden layer; ``cfg.standardize`` puts a fixed per-feature
    affine (``scaling``, from the training features) in front.  Outputs are float32 under mixed precision.
    """
    import keras

    if feature_dim < 1:
        raise BadInput(f"feature_dim must be >= 1, got {feature_dim}")
    features = keras.Input((feature_dim,), name=FEATURES_INPUT, dtype="float32")
    x = features
    if cfg.standardize:
        if scaling is None:
            raise BadInput("head.standardize is on: pass scaling=(scale, offset) from the training features")
        scale, offset = scaling
        if scale.shape != (feature_dim,) or offset.shape != (feature_dim,):
            raise BadInput(
                f"scaling must be two [{feature_dim}] arrays, got {scale.shape} and {offset.shape}"
            )
        # Rescaling, not Normalization: Normalization floors the std at 1e-7, far above random bases' features.
        x = keras.layers.Rescaling(
            scale=scale.tolist(), offset=offset.tolist(), name="standardize", dtype="float32"
        )(x)
    keras.utils.set_random_seed(cfg.seed)
    x = keras.layers.Dense(cfg.hidden_units, activation=cfg.activation, name="hidden")(x)
    x = keras.layers.Dropout(cfg.dropout, seed=cfg.seed, name="dropout")(x)
    outputs = {
        TRIAGE_OUTPUT: keras.layers.Dense(2, activation="softmax", name=TRIAGE_OUTPUT, dtype="float32")(x)
    }
    if cfg.multilabel:
        outputs[PATHOLOGY_OUTPUT] = keras.layers.Dense(
            len(PATHOLOGIES), activation="sigmoid", name=PATHOLOGY_OUTPUT, dtype="float32"
        )(x)
    return keras.Model(features, outputs, name="head")


def assemble(base_model: Any, head: Any) -> Any:
    """Image -> base (always in inference mode, so BatchNorm statistics never move) -> head outputs (a dict)."""
    import keras

    size = base_model.input.shape[1]
    image = keras.Input((size, size, 3), name=IMAGE_INPUT, dtype="float32")
    outputs = head(base_model(image, training=False))
    # Identity layers carry the output names to the top level (else Keras names both outputs after "head").
    named = {
        key: keras.layers.Identity(name=key, dtype="float32")(tensor) for key, tensor in dict(outputs).items()
    }
    return keras.Model(image, named, name="xray_triage")


def fed_stored_pixels(model: Any, stored_size: int) -> Any:
    """``model`` behind the input pipeline's last step, for training and prediction: stored uint8
    ``[B, S, S, 1]`` in, resized and replicated to RGB (``data.dataset.to_model_pixels``) inside the model's own
    function, so on its device and not on the CPU that feeds it.  Every weight is ``model``'s (the wrapper has none
    of its own); what is saved and published stays ``model``, with its RGB input.
    """
    import keras
    import tensorflow as tf

    from xray_tasks.data.dataset import to_model_pixels

    size = int(model.inputs[0].shape[1])
    stored = keras.Input((stored_size, stored_size, 1), dtype="uint8", name="stored_pixels")
    pixels = keras.layers.Lambda(
        lambda t: tf.cast(to_model_pixels(t, size, 3), tf.float32), name="to_model_pixels", dtype="float32"
    )(stored)
    return keras.Model(stored, model(pixels), name=f"{model.name}_fed")


def unfreeze_last(model: Any, n_layers: int) -> list[str]:
    """Make the last ``n_layers`` of the base's application trainable (its final pooling not counted).

    BatchNormalization layers among them stay frozen; everything else in the base is frozen; the head stays
    trainable.  Returns the names of the layers whose weights will now train.
    """
    import keras

    if n_layers < 0:
        raise BadInput(f"n_layers must be >= 0, got {n_layers}")
    base_model = next(
        (m for m in model.layers if isinstance(m, keras.Model) and m.name.endswith("_features")), None
    )
    if base_model is None:
        raise BadInput(f"{model.name}: no '<base>_features' sub-model to unfreeze")
    app = application(base_model)
    base_model.trainable = True
    layers = [layer for layer in app.layers if not isinstance(layer, keras.layers.InputLayer)]
    if layers and isinstance(layers[-1], keras.layers.GlobalAveragePooling2D):
        layers = layers[:-1]
    tail = {id(layer) for layer in layers[len(layers) - n_layers :]} if n_layers else set()
    for layer in base_model.layers:
        if layer is not app:
            layer.trainable = False  # the preprocessing convolution
    trained = []
    for layer in app.layers:
        layer.trainable = id(layer) in tail and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.trainable and layer.weights:
            trained.append(layer.name)
    return trained


def save_model(model: Any, uri: str) -> None:
    """Save a ``.keras`` file to a local path or ``s3://`` URI atomically (written locally first)."""
    if not str(uri).endswith(".keras"):
        raise BadInput(f"model URI must end in .keras, got {uri!r}")
    with tempfile.TemporaryDirectory(prefix="xray-model-") as tmp:
        local = Path(tmp) / storage.basename(uri)
        model.save(local)
        storage.put_file(local, uri)


def load_model(uri: str, compile: bool = False) -> Any:
    """Load a ``.keras`` file from a local path or ``s3://`` URI (stock Keras objects only)."""
    import keras

    with storage.local_copy(uri) as path:
        return keras.models.load_model(path, compile=compile)


def triage_probability(outputs: Any) -> np.ndarray:
    """P(unhealthy) from the model's outputs (the dict or the bare softmax array)."""
    triage = outputs[TRIAGE_OUTPUT] if isinstance(outputs, dict) else outputs
    triage = np.asarray(triage, dtype=np.float32)
    if triage.ndim != 2 or triage.shape[1] != 2:
        raise BadInput(f"triage output must be [N, 2] softmax, got shape {triage.shape}")
    return triage[:, 1]
