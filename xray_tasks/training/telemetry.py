"""Training telemetry: TensorBoard event files of each training stage, under the run folder.

``keras.callbacks.TensorBoard`` writes per-epoch scalars (loss, accuracy, validation AUROC where the head adds it,
and the optimizer's learning rate) to ``<run>/tensorboard/<stage>/{train,validation}/``.  A run on ``s3://``
logs to a local folder first and uploads it when the stage's ``fit`` returns, so nothing half-written sits in the
bucket.  ``tensorboard --logdir <run>/tensorboard`` (or the published version's folder) shows them.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xray_tasks import storage
from xray_tasks.storage.uris import scheme_of
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)


def _is_local(uri: str) -> bool:
    return scheme_of(uri) == "local"


@contextmanager
def tensorboard(run: RunDir, stage: str):
    """A ``keras.callbacks.TensorBoard`` logging ``stage`` of ``run`` (scalars per epoch, no graph, no profiler)."""
    import keras

    target = run.tensorboard(stage)
    with tempfile.TemporaryDirectory(prefix="xray-tensorboard-") as tmp:
        log_dir = target if _is_local(target) else tmp
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        callback: Any = keras.callbacks.TensorBoard(
            log_dir=log_dir, histogram_freq=0, write_graph=False, update_freq="epoch", profile_batch=0
        )
        yield callback
        if not _is_local(target):
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    storage.put_file(path, storage.join(target, *path.relative_to(tmp).parts))
        logger.info("%s: TensorBoard logs in %s", stage, target)


def read_scalars(log_dir: str | Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every scalar of the event files under a local ``log_dir``: ``{subfolder: {tag: [(step, value), ...]}}``
    (``train`` / ``validation``), read back with TensorFlow's own event reader."""
    import tensorflow as tf

    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    root = Path(log_dir)
    for events in sorted(root.rglob("events.out.tfevents.*")):
        where = str(events.parent.relative_to(root)) if events.parent != root else "."
        tags = out.setdefault(where, {})
        for record in tf.data.TFRecordDataset(str(events)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = (
                    float(tf.make_ndarray(value.tensor))
                    if value.HasField("tensor")
                    else float(value.simple_value)
                )
                tags.setdefault(value.tag, []).append((int(event.step), number))
    for tags in out.values():
        for tag in tags:
            tags[tag].sort()
    return out


def step_progress(epoch: int, epochs: int, steps: int, every: float = 10.0) -> Any:
    """A Keras callback logging the steps of one fine-tune epoch with rate and ETA every ``every`` seconds."""
    import keras

    from xray_tasks.progress import Progress

    class StepProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.progress = Progress(f"finetune epoch {epoch + 1}/{epochs}", steps, unit="steps", every=every)

        def on_train_batch_end(self, batch, logs=None):
            self.progress.update(1)

    return StepProgress()
