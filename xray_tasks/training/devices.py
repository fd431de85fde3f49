"""Accelerator switches for the model stages: device visibility, GPU memory growth, mixed precision, XLA,
data-parallel replicas.

Each switch is ``auto`` (on when a GPU is visible), ``on`` or ``off``, so the GPU paths can be forced on a CPU
in tests (Keras runs ``mixed_float16`` and XLA on CPU too, only without the speed-up).  ``distribute`` differs
in what ``auto`` means: a ``tf.distribute.MirroredStrategy`` when *more than one* GPU is visible (one GPU gains
nothing from it); ``on`` mirrors over every visible device of the worker, its GPUs or else its (logical) CPUs,
which is how the tests run it.  Call ``configure`` once per process, before any model is built: memory growth
and device visibility can only be set before TensorFlow initialises its GPUs, and the Keras dtype policy applies
to layers created afterwards.  Build and compile models under ``strategy(settings).scope()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_tasks.contracts import DeviceSettings
from xray_tasks.errors import BadInput, StageError

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)

SWITCHES = ("auto", "on", "off")
DEVICES = ("auto", "cpu", "gpu")
MIRRORED, DEFAULT = "mirrored", "default"
"""The strategies ``DeviceSettings.strategy`` names: ``tf.distribute.MirroredStrategy`` or TensorFlow's default."""


def resolve(switch: str, gpu_present: bool, name: str = "switch") -> bool:
    """``auto`` -> whether a GPU is present; ``on``/``off`` -> True/False."""
    if switch not in SWITCHES:
        raise BadInput(f"{name} must be one of {list(SWITCHES)}, got {switch!r}")
    return gpu_present if switch == "auto" else switch == "on"


def resolve_distribute(switch: str, gpus: int) -> bool:
    """``auto`` -> whether more than one GPU is visible; ``on``/``off`` -> True/False."""
    return resolve(switch, gpus > 1, "distribute")


def configure(
    mixed_precision: str = "auto", xla: str = "auto", device: str = "auto", distribute: str = "auto"
) -> DeviceSettings:
    """Apply the switches to this process and return what they resolved to.

    Raises:
        ValueError: an unknown switch value.
        RuntimeError: ``device="gpu"`` and no GPU is visible.
    """
    if device not in DEVICES:
        raise BadInput(f"device must be one of {list(DEVICES)}, got {device!r}")
    resolve(mixed_precision, False, "mixed_precision")
    resolve(xla, False, "xla")
    resolve(distribute, False, "distribute")
    import keras
    import tensorflow as tf

    if device == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as exc:  # GPUs already initialised in this process
            logger.warning("cannot hide GPUs any more (%s); placement stays as it is", exc)
    gpus = tf.config.get_visible_devices("GPU")
    if device == "gpu" and not gpus:
        raise StageError(
            "device=gpu was asked for but TensorFlow sees no GPU (check drivers / CUDA_VISIBLE_DEVICES)"
        )
    for gpu in gpus:
        try:
            # Without growth TensorFlow reserves nearly all GPU memory up front, starving a second process.
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:
            logger.warning("memory growth not set on %s: %s", gpu.name, exc)
    use_mixed = resolve(mixed_precision, bool(gpus), "mixed_precision")
    policy = "mixed_float16" if use_mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    mirrored = resolve_distribute(distribute, len(gpus))
    settings = DeviceSettings(
        gpus=len(gpus),
        mixed_precision=use_mixed,
        xla=resolve(xla, bool(gpus), "xla"),
        policy=policy,
        strategy=MIRRORED if mirrored else DEFAULT,
        replicas=len(replica_devices()) if mirrored else 1,
    )
    logger.info(
        "devices: %d GPU(s), dtype policy %s, XLA %s, %s strategy with %d replica(s)",
        settings.gpus,
        policy,
        "on" if settings.xla else "off",
        settings.strategy,
        settings.replicas,
    )
    return settings


def replica_devices() -> list[str]:
    """The devices a mirrored strategy spans: every visible GPU of this worker, else every logical CPU (one,
    unless the process split its CPU with ``tf.config.set_logical_device_configuration``)."""
    import tensorflow as tf

    found = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [d.name for d in found]


def strategy(settings: DeviceSettings) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy ``settings`` chose: a ``MirroredStrategy`` over :func:`replica_devices`
    (the global batch is the configured batch size, split across the replicas), else the default strategy."""
    import tensorflow as tf

    if settings.strategy != MIRRORED:
        return tf.distribute.get_strategy()
    found = replica_devices()
    if len(found) != settings.replicas:
        raise StageError(
            f"the device settings name {settings.replicas} replica(s) but this process sees {len(found)}: {found}"
        )
    mirrored = tf.distribute.MirroredStrategy(devices=found)
    logger.info("devices: MirroredStrategy over %d replica(s): %s", mirrored.num_replicas_in_sync, found)
    return mirrored


@contextmanager
def float32_policy() -> Iterator[None]:
    """Build layers in float32 inside the block (e.g. the saved final model), then restore the previous policy."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def replicated(
    base: Any, strategy: Any, xla: bool, prepare: Callable[[Any], Any] | None = None
) -> Callable[[Any], np.ndarray]:
    """``images -> base outputs`` as float32 (a NumPy array, rows in the images' order) on every replica.

    One replica: the base on the default device.  Several (a ``MirroredStrategy``): each host batch is cut into
    contiguous, near-equal slices, replica ``i`` runs the base on slice ``i``, and the per-replica outputs are
    concatenated in replica order, so the rows keep the batch's order whatever the replica count.  A batch with
    fewer images than replicas (a split's tail) runs on the first replica only.  ``prepare`` (e.g. resize and grey
    -> RGB) runs inside the same function, on the replica's device, before the base.
    """
    import tensorflow as tf

    prepare = prepare or (lambda x: x)
    one = tf.function(
        lambda x: tf.cast(base(tf.cast(prepare(x), tf.float32), training=False), tf.float32),
        jit_compile=xla,
        reduce_retracing=True,
    )
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return lambda images: one(images).numpy()
    each = tf.function(lambda x: strategy.run(one, args=(x,)), reduce_retracing=True)

    def forward(images: Any) -> np.ndarray:
        n = int(images.shape[0])
        if n < replicas:
            return one(images).numpy()
        bounds = [i * n // replicas for i in range(replicas + 1)]
        sliced = strategy.experimental_distribute_values_from_function(
            lambda ctx: images[
                bounds[ctx.replica_id_in_sync_group] : bounds[ctx.replica_id_in_sync_group + 1]
            ]
        )
        return np.concatenate([t.numpy() for t in strategy.experimental_local_results(each(sliced))])

    return forward
