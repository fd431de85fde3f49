"""Head training on pooled features (the report's transfer-learning stage), plus helpers shared by the run stages.

The report's defaults: SGD, binary cross-entropy on the two-way softmax, batch 32, up to 500 epochs.  Added:
early stopping on validation loss with the best weights restored, optional class weighting, an optional
14-pathology sigmoid output, validation AUROC per epoch.  Features are loaded into arrays in bulk
(``features.load_features``); the head never sees images, so this stage needs no GPU.

It writes the run's ``config.json``, ``head/head.keras`` and ``head/history.json`` (``workspace.RunDir``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from xray_tasks import storage
from xray_tasks.config import HeadConfig, PipelineConfig
from xray_tasks.contracts import HeadSummary
from xray_tasks.errors import BadInput
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)


def class_sample_weights(labels: np.ndarray) -> np.ndarray:
    """n / (2 * n_class) per sample, so healthy and unhealthy carry the same total weight."""
    labels = np.asarray(labels).astype(np.int64)
    counts = np.bincount(labels, minlength=2)
    if counts.min() == 0:
        raise BadInput(
            f"class weighting needs both classes, got counts healthy={counts[0]} unhealthy={counts[1]}"
        )
    return (len(labels) / (2.0 * counts))[labels].astype(np.float32)


def targets(label: np.ndarray, labels: np.ndarray | None, multilabel: bool) -> dict[str, np.ndarray]:
    """Keras targets for the head's outputs: one-hot triage (report: softmax + binary cross-entropy)."""
    y = {"triage": np.eye(2, dtype=np.float32)[np.asarray(label, np.int64)]}
    if multilabel:
        if labels is None:
            raise BadInput("multilabel targets need the 14-column labels")
        y["pathologies"] = np.asarray(labels, np.float32)
    return y


def compile_model(
    model: Any,
    optimizer: Any,
    learning_rate: float,
    momentum: float,
    multilabel: bool,
    jit_compile: bool | str = "auto",
) -> None:
    """Binary cross-entropy on every output, accuracy on triage.  ``optimizer`` is ``sgd``, ``adam`` or an
    optimizer object, used as it is (another model's, whose state then carries on: fine-tuning's wrapper)."""
    import keras

    if isinstance(optimizer, keras.optimizers.Optimizer):
        opt = optimizer
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    elif optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate=learning_rate)
    else:
        raise BadInput(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    losses = {"triage": keras.losses.BinaryCrossentropy()}
    metrics = {"triage": [keras.metrics.CategoricalAccuracy(name="accuracy")]}
    if multilabel:
        losses["pathologies"] = keras.losses.BinaryCrossentropy()
    model.compile(optimizer=opt, loss=losses, metrics=metrics, jit_compile=jit_compile)


def epoch_logger(stage: str, samples_per_epoch: int | None, every: int = 1, extra=None) -> Any:
    """A Keras callback that logs each ``every``-th epoch's metrics and throughput (``extra(epoch, logs)`` may add
    entries to ``logs`` first, e.g. validation AUROC)."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            seconds = time.perf_counter() - self._start
            logs["seconds"] = seconds
            if extra is not None:
                extra(epoch, logs)
            if (epoch + 1) % every == 0 or epoch == 0:
                shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()) if k != "seconds")
                rate = f", {samples_per_epoch / seconds:.0f} samples/s" if samples_per_epoch else ""
                logger.info("%s epoch %d: %s (%.1f s%s)", stage, epoch + 1, shown, seconds, rate)

    return EpochLog()


def normalise_history(history: dict[str, list]) -> dict[str, list[float]]:
    """Keras history with stable names: ``loss``, ``val_loss``, ``accuracy``, ``val_accuracy``, ... as floats."""
    out: dict[str, list[float]] = {}
    for key, values in history.items():
        name = key.replace("triage_accuracy", "accuracy")
        out[name] = [float(v) for v in values]
    return out


def train_head(workspace: str, run_dir: str, cfg: PipelineConfig) -> HeadSummary:
    """Train the head on the train split's features with early stopping on val; save it in the run directory.

    Raises:
        MissingInput: features missing for some shard.
        BadInput: a split lacks a class, or train and val features come from different weights.
    """
    from xray_tasks.training import networks

    run, hcfg = RunDir(run_dir), cfg.head
    train, val = _load_features(workspace, cfg)
    run.write_config(cfg)
    scaling = networks.feature_scaling(train.features) if hcfg.standardize else None
    head = networks.build_head(train.features.shape[1], hcfg, scaling)
    compile_model(head, hcfg.optimizer, hcfg.learning_rate, hcfg.momentum, hcfg.multilabel)
    logger.info(
        "head: %d train / %d val feature vectors of %d; %d epochs max, batch %d, %s lr %g",
        len(train),
        len(val),
        train.features.shape[1],
        hcfg.epochs,
        hcfg.batch_size,
        hcfg.optimizer,
        hcfg.learning_rate,
    )
    started = time.perf_counter()
    history = _fit(head, train, val, hcfg, run)
    seconds = time.perf_counter() - started
    best = int(np.argmin(history["val_loss"])) if hcfg.patience else len(history["val_loss"]) - 1
    networks.save_model(head, run.head_model)
    storage.write_json(run.history("head"), {"stage": "head", "best_epoch": best + 1, "history": history})
    summary = HeadSummary(
        run_dir=run_dir,
        head=run.head_model,
        features_weights=train.weights_id,
        train=len(train),
        val=len(val),
        epochs_run=len(history["loss"]),
        best_epoch=best + 1,
        val_loss=history["val_loss"][best],
        val_auroc=_val_auroc(head, val),
        seconds=round(seconds, 2),
        seconds_per_epoch=round(seconds / max(1, len(history["loss"])), 3),
    )
    logger.info(
        "head: %d epochs in %.1f s, best epoch %d (val loss %.4f, val AUROC %.4f) -> %s",
        summary.epochs_run,
        seconds,
        best + 1,
        summary.val_loss,
        summary.val_auroc,
        run.head_model,
    )
    return summary


def _load_features(workspace: str, cfg: PipelineConfig) -> tuple[Any, Any]:
    """The train and val feature sets, checked: same weights, both classes in each, a usable scale."""
    from xray_tasks.training import features as features_lib

    fcfg = cfg.features
    train = features_lib.load_features(workspace, fcfg.base, fcfg.input_size, "train")
    val = features_lib.load_features(workspace, fcfg.base, fcfg.input_size, "val")
    if train.weights_id != val.weights_id:
        raise BadInput(f"train features ({train.weights_id}) and val features ({val.weights_id}) differ")
    for name, part in (("train", train), ("val", val)):
        if len(np.unique(part.label)) < 2:
            raise BadInput(
                f"{name} features hold one class only ({len(part)} images): cannot train or stop early"
            )
    scale = float(np.abs(train.features).mean())
    if scale < 1e-4 and not cfg.head.standardize:
        logger.warning(
            "head: mean |feature| is %.2e; the report's SGD head barely moves at that scale "
            "(a random base?): consider --set head.standardize=true",
            scale,
        )
    return train, val


def _val_auroc(head: Any, val: Any) -> float:
    from xray_tasks.evaluation import metrics
    from xray_tasks.training import networks

    return metrics.auroc(
        val.label, networks.triage_probability(head.predict(val.features, batch_size=1024, verbose=0))
    )


def _fit(head: Any, train: Any, val: Any, hcfg: HeadConfig, run: RunDir) -> dict[str, list[float]]:
    """Keras ``fit`` with per-epoch logging (validation AUROC included), TensorBoard logs and early stopping;
    the history."""
    import keras

    from xray_tasks.training.telemetry import tensorboard

    def val_auroc(epoch, logs):
        logs["val_auroc"] = _val_auroc(head, val)

    callbacks = [epoch_logger("head", len(train), every=max(1, hcfg.epochs // 25), extra=val_auroc)]
    if hcfg.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=hcfg.patience, restore_best_weights=True
            )
        )
    with tensorboard(run, RunDir.HEAD) as board:
        callbacks.append(board)  # after the epoch logger: it sees val_auroc too
        fit = head.fit(
            train.features,
            targets(train.label, train.labels, hcfg.multilabel),
            batch_size=hcfg.batch_size,
            epochs=hcfg.epochs,
            shuffle=True,
            verbose=0,
            callbacks=callbacks,
            validation_data=(val.features, targets(val.label, val.labels, hcfg.multilabel)),
            sample_weight=class_sample_weights(train.label) if hcfg.class_weight else None,
        )
    return normalise_history(fit.history)
