"""Fine-tuning (the report's third step) and the final model.

Base + trained head, the last N layers of the base unfrozen (the report: 10; BatchNorm stays frozen and in
inference mode because the base is always called with ``training=False``), a small learning rate, a few epochs
(the report: 5; it saw overfitting at 15), images read from the shards through tf.data as stored grey pixels
(resized and expanded to RGB inside the training step, on the device: ``networks.fed_stored_pixels``).

Every epoch ends with a checkpoint (the whole compiled model, optimizer state included) and then
``finetune/state.json``, which is the commit marker: a killed run resumes from the last epoch the state names,
with the same per-epoch shuffle seeds, and ends with the same number of completed epochs.  The final
``model.keras`` is the epoch with the lowest validation loss (``restore_best``) or the last one, rebuilt in
float32 whatever the training precision was, so it serves anywhere.

Before the first epoch the assembled base is checked against the stored features: a head trained on one base's
features must not be shipped on top of another base.

Under ``features.distribute`` the model is built and compiled in a ``tf.distribute.MirroredStrategy`` scope
(``training.devices``): the global batch stays ``finetune.batch_size``, split across the replicas, and the
gradients are summed across them, so a step matches the single-device step up to float rounding (docs/model.md).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from xray_tasks import storage
from xray_tasks.config import PipelineConfig
from xray_tasks.contracts import BestEpoch, FinetuneSummary
from xray_tasks.errors import BadInput, MissingInput, StageError
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)

FEATURE_CHECK_IMAGES = 8
FEATURE_CHECK_TOLERANCE = 0.05
"""Relative L2 distance allowed between stored and recomputed features (mixed vs full precision)."""


def read_state(run_dir: str) -> dict | None:
    uri = RunDir(run_dir).finetune_state
    return storage.read_json(uri) if storage.exists(uri) else None


def check_base_matches_features(base_model: Any, workspace: str, cfg: PipelineConfig) -> float:
    """Recompute features of a few training images and compare with the stored ones; returns the relative error.

    Raises:
        RuntimeError: the base differs from the one the head's features came from.
    """
    import tensorflow as tf

    from xray_tasks.data import dataset, shards
    from xray_tasks.training import features

    fcfg = cfg.features
    shard = shards.committed_shards(workspace, "train")[0]
    stored = features.load_features(workspace, fcfg.base, fcfg.input_size, "train")
    batch = next(
        iter(
            dataset.make_dataset(
                [shard], **_format(workspace), batch_size=FEATURE_CHECK_IMAGES, output_size=fcfg.input_size
            )
        )
    )
    names = [n.decode() for n in batch["image_index"].numpy()]
    rows = {name: i for i, name in enumerate(stored.image_index)}
    expected = stored.features[[rows[n] for n in names]].astype(np.float64)
    got = base_model(tf.cast(batch["image"], tf.float32), training=False).numpy().astype(np.float64)
    norm = np.linalg.norm(expected)
    error = float(np.linalg.norm(got - expected) / norm) if norm > 0 else float(np.linalg.norm(got))
    if not error <= FEATURE_CHECK_TOLERANCE:
        raise StageError(
            f"the rebuilt {fcfg.base} base does not reproduce the stored features (relative error {error:.3g} on "
            f"{len(names)} train images): features came from other weights ({stored.weights_id}); re-extract them"
        )
    return error


def _format(workspace: str) -> dict:
    from xray_tasks.data import shards

    fmt = shards.shard_format(workspace)
    return {"encoding": fmt.encoding, "image_size": fmt.image_size}


def _datasets(workspace: str, cfg: PipelineConfig, epoch: int, class_weights: np.ndarray | None):
    import tensorflow as tf

    from xray_tasks.data import dataset

    tcfg, multilabel = cfg.finetune, cfg.head.multilabel
    weights = None if class_weights is None else tf.constant(class_weights, tf.float32)

    def to_xy(batch, weighted):
        x = batch[
            "image"
        ]  # stored uint8 pixels: the model resizes and expands them (networks.fed_stored_pixels)
        y = {"triage": tf.one_hot(batch["label"], 2)}
        if multilabel:
            y["pathologies"] = batch["labels"]
        if weighted and weights is not None:
            return x, y, tf.gather(weights, batch["label"])
        return x, y

    # Plain Python while flat_map traces it: autograph would otherwise convert everything split_dataset calls
    # (reading the markers, the shard format: 38 CPU-s of a 1-epoch demo fine-tune, the epoch itself 6 s).
    @tf.autograph.experimental.do_not_convert
    def train_epoch(_):
        return dataset.split_dataset(
            workspace,
            "train",
            batch_size=tcfg.batch_size,
            channels=1,
            shuffle=True,
            seed=tcfg.seed + epoch,
            shuffle_buffer=tcfg.shuffle_buffer,
            repeat=tcfg.steps_per_epoch > 0,
        ).map(lambda b: to_xy(b, True))

    # Built inside flat_map, the pipeline starts afresh on every iteration, so each one replays the epoch's
    # seeded order: under a tf.distribute strategy Keras' fit reads one batch to build the model and restarts
    # the iterator, which a plain reshuffling dataset would answer with its second order, not the first.
    train = tf.data.Dataset.range(1).flat_map(train_epoch)
    val = dataset.split_dataset(workspace, "val", batch_size=tcfg.batch_size, channels=1).map(
        lambda b: to_xy(b, False)
    )
    return train, val


def _class_weights(workspace: str, enabled: bool) -> np.ndarray | None:
    if not enabled:
        return None
    from xray_tasks.data.manifest import read_manifest

    labels = read_manifest(workspace).query("split == 'train'")["label"].to_numpy()
    counts = np.bincount(labels.astype(np.int64), minlength=2)
    if counts.min() == 0:
        raise BadInput(f"class weighting needs both classes in train, got {counts.tolist()}")
    return (len(labels) / (2.0 * counts)).astype(np.float32)


def run_finetune(workspace: str, run_dir: str, cfg: PipelineConfig) -> FinetuneSummary:
    """Fine-tune (resuming from the last checkpoint if any) and write ``<run_dir>/model.keras``.

    Raises:
        MissingInput: no trained head in the run directory, or no shards/features.
        StageError: the base does not reproduce the stored features.
    """
    from xray_tasks.training import devices, networks
    from xray_tasks.training.head import compile_model

    run, fcfg, tcfg = RunDir(run_dir), cfg.features, cfg.finetune
    if not storage.exists(run.head_model):
        raise MissingInput(f"{run.head_model}: no trained head (run `xray-tasks train` first)")
    settings = devices.configure(tcfg.mixed_precision, tcfg.xla, fcfg.device, fcfg.distribute)
    weights_path, weights_id = networks.resolve_weights(fcfg.base, fcfg.weights, fcfg.seed)
    run.write_config(cfg)
    state = read_state(run_dir) or {"completed_epochs": 0, "history": {}, "checkpoint": None, "best": None}
    resumed_from, feature_error = state["completed_epochs"], None
    logger.info(
        "finetune: global batch %d over %d replica(s) (%s strategy)",
        tcfg.batch_size,
        settings.replicas,
        settings.strategy,
    )
    # A Keras model keeps the strategy it was built under: fit then splits each global batch across its replicas.
    with devices.strategy(settings).scope():
        if state["checkpoint"]:
            logger.info("finetune: resuming after epoch %d from %s", resumed_from, state["checkpoint"])
            model = networks.load_model(run.checkpoint(state["checkpoint"]), compile=True)
        else:
            model, feature_error = _start(run, workspace, cfg, weights_path, settings.xla, state)
        # Trained through a wrapper that takes the stored grey pixels: the resize and grey -> RGB run in the
        # training step, on the device.  It shares model's weights and optimizer, so the checkpoints (model's,
        # optimizer state included) and the final model keep the RGB input that the registry publishes.
        trainer = networks.fed_stored_pixels(model, _format(workspace)["image_size"])
        compile_model(
            trainer, model.optimizer, tcfg.learning_rate, tcfg.momentum, cfg.head.multilabel, settings.xla
        )
    class_weights = _class_weights(workspace, cfg.head.class_weight)
    for epoch in range(state["completed_epochs"], tcfg.epochs):
        state = _train_epoch(trainer, model, workspace, run, cfg, epoch, state, class_weights)
    networks.save_model(_final_model(model, run, state, cfg, settings.mixed_precision), run.model)
    storage.write_json(
        run.history("finetune"),
        {
            "stage": "finetune",
            "best": state.get("best"),
            "history": state["history"],
            "unfrozen": state.get("unfrozen", []),
            "weights": weights_id,
        },
    )
    logger.info(
        "finetune: %d epoch(s) completed (%d resumed) -> %s",
        state["completed_epochs"],
        resumed_from,
        run.model,
    )
    return FinetuneSummary(
        run_dir=run_dir,
        model=run.model,
        epochs_completed=state["completed_epochs"],
        resumed_from=resumed_from,
        best=BestEpoch(**state["best"]) if state.get("best") else None,
        unfrozen=tuple(state.get("unfrozen", [])),
        feature_check_error=feature_error,
        weights=weights_id,
        devices=settings,
    )


def _start(
    run: RunDir, workspace: str, cfg: PipelineConfig, weights_path: str | None, xla: bool, state: dict
) -> tuple[Any, float]:
    """The model of a first attempt: the base (checked against the stored features) under the trained head, its
    last layers unfrozen, compiled; records the unfrozen layers in ``state``."""
    from xray_tasks.training import networks
    from xray_tasks.training.head import compile_model

    fcfg, tcfg = cfg.features, cfg.finetune
    base = networks.build_base(fcfg.base, fcfg.input_size, weights_path, fcfg.seed)
    feature_error = check_base_matches_features(base, workspace, cfg)
    model = networks.assemble(base, networks.load_model(run.head_model))
    unfrozen = networks.unfreeze_last(model, tcfg.unfreeze_layers)
    state["unfrozen"] = unfrozen
    logger.info("finetune: %d layer(s) with weights unfrozen: %s", len(unfrozen), ", ".join(unfrozen))
    compile_model(model, "sgd", tcfg.learning_rate, tcfg.momentum, cfg.head.multilabel, jit_compile=xla)
    return model, feature_error


def _train_epoch(
    trainer: Any,
    model: Any,
    workspace: str,
    run: RunDir,
    cfg: PipelineConfig,
    epoch: int,
    state: dict,
    class_weights: np.ndarray | None,
) -> dict:
    from xray_tasks.data import dataset
    from xray_tasks.training import networks
    from xray_tasks.training.head import epoch_logger, normalise_history
    from xray_tasks.training.telemetry import step_progress, tensorboard

    tcfg = cfg.finetune
    train, val = _datasets(workspace, cfg, epoch, class_weights)
    # Exact step counts (from the markers) keep Keras from running into the end of the data and warning.
    steps = tcfg.steps_per_epoch or math.ceil(dataset.split_size(workspace, "train") / tcfg.batch_size)
    val_steps = math.ceil(dataset.split_size(workspace, "val") / tcfg.batch_size)
    samples = steps * tcfg.batch_size if tcfg.steps_per_epoch else dataset.split_size(workspace, "train")
    started = time.perf_counter()
    with tensorboard(run, RunDir.FINETUNE) as board:
        fit = trainer.fit(
            train,
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=steps,
            validation_data=val,
            validation_steps=val_steps,
            shuffle=False,
            verbose=0,
            callbacks=[epoch_logger("finetune", samples), step_progress(epoch, tcfg.epochs, steps), board],
        )
    seconds = time.perf_counter() - started
    history = dict(state["history"])
    for key, values in normalise_history(fit.history).items():
        history.setdefault(key, []).extend(values)
    history.setdefault("images_per_s", []).append(samples / seconds)
    name = f"epoch-{epoch + 1:03d}.keras"
    networks.save_model(model, run.checkpoint(name))
    val_loss = history["val_loss"][-1]
    best = state.get("best")
    if best is None or val_loss < best["val_loss"]:
        best = {"epoch": epoch + 1, "val_loss": val_loss, "checkpoint": name}
    new_state = {
        **state,
        "completed_epochs": epoch + 1,
        "epochs_planned": tcfg.epochs,
        "history": history,
        "checkpoint": name,
        "best": best,
    }
    storage.write_json(run.finetune_state, new_state)
    keep = {name, best["checkpoint"]}
    for old in (state["checkpoint"], (state.get("best") or {}).get("checkpoint")):
        if old and old not in keep:
            storage.delete(run.checkpoint(old))
    return new_state


def _final_model(model: Any, run: RunDir, state: dict, cfg: PipelineConfig, mixed: bool) -> Any:
    """The model to ship: best or last epoch's weights, in a float32 copy when training ran in mixed precision."""
    from xray_tasks.training import devices, networks

    source = model
    best = state.get("best")
    if cfg.finetune.restore_best and best and best["checkpoint"] != state["checkpoint"]:
        logger.info("finetune: restoring epoch %d (lowest val loss %.4f)", best["epoch"], best["val_loss"])
        source = networks.load_model(run.checkpoint(best["checkpoint"]))
    if not mixed and source.dtype_policy.name == "float32":
        return source
    with devices.float32_policy():
        fcfg = cfg.features
        base = networks.build_base(fcfg.base, fcfg.input_size, None, fcfg.seed)
        head = networks.build_head(base.output.shape[-1], cfg.head, _head_scaling(source))
        final = networks.assemble(base, head)
    final.set_weights(source.get_weights())
    return final


def _head_scaling(model: Any) -> tuple[np.ndarray, np.ndarray] | None:
    head = model.get_layer("head")
    try:
        layer = head.get_layer("standardize")
    except ValueError:
        return None
    return np.asarray(layer.scale, np.float32), np.asarray(layer.offset, np.float32)
