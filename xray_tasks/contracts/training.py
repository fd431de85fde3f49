"""Contracts of the model stages: features provenance, device settings, the features/head/fine-tune summaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xray_tasks.contracts.base import Contract, doc


@dataclass(frozen=True)
class FeatureProvenance(Contract):
    """Stored in each features Parquet file's schema metadata (key ``xray_tasks.features``): where its vectors
    came from.  A rerun skips a file whose provenance matches and refuses one that does not.  Files written before
    schemas were numbered read as schema 0."""

    SCHEMA: ClassVar[int] = 1
    OLDEST_SCHEMA: ClassVar[int] = 0

    base: str = doc("base network, e.g. `resnet50`")
    weights: str = doc("weights id: `random:seed=N`, `imagenet:<sha256[:16]>` or `file:<sha256[:16]>`")
    input_size: int = doc("side of the square the base saw")
    stored_image_size: int = doc("side of the stored images")
    encoding: str = doc("stored encoding (`raw` or `png`)")
    shard: str = doc("the shard's path relative to `shards/`")
    shard_sha256: str = doc("sha256 of the shard the vectors were computed from")
    pathologies: tuple[str, ...] = doc("column order of `labels`")

    def same_source(self, other: FeatureProvenance) -> bool:
        """Whether two files hold features of the same shard through the same base."""
        keys = ("base", "weights", "input_size", "stored_image_size", "shard_sha256")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


@dataclass(frozen=True)
class DeviceSettings(Contract):
    """What ``training.devices.configure`` decided for a process."""

    gpus: int = doc("GPUs visible to TensorFlow")
    mixed_precision: bool = doc("whether layers compute in float16")
    xla: bool = doc("whether XLA compiles the step")
    policy: str = doc("the Keras dtype policy")
    strategy: str = doc(
        "`mirrored` (tf.distribute.MirroredStrategy over the worker's devices) or `default` (one device)",
        default="default",
    )
    replicas: int = doc("replicas the global batch is split across", default=1)


@dataclass(frozen=True)
class SplitFeatures(Contract):
    shards: int = doc("committed shards of the split")
    written: int = doc("features files written by this run")
    skipped: int = doc("files already there with matching provenance")
    images: int = doc("images in the split's shards")


@dataclass(frozen=True)
class FeaturesSummary(Contract):
    """What ``xray-tasks features`` prints."""

    features: str = doc("`<workspace>/features/<base>-<input_size>`")
    base: str = doc("base network")
    weights: str = doc("weights id")
    input_size: int = doc("side of the square the base saw")
    feature_dim: int | None = doc("length of a pooled vector (null when nothing was extracted)")
    splits: dict[str, SplitFeatures] = doc("per split: shards, written, skipped, images")
    images_extracted: int = doc("images run through the base by this run")
    images_per_s: float | None = doc("overall rate, the first batch's tracing included")
    steady_images_per_s: float | None = doc("rate after the first batch")
    steady_cpu_ms_per_image: float | None = doc("CPU milliseconds per image after the first batch")
    devices: DeviceSettings | None = doc("the device settings used (null when nothing was extracted)")


@dataclass(frozen=True)
class HeadSummary(Contract):
    """What ``xray-tasks train`` prints."""

    run_dir: str = doc("the run folder")
    head: str = doc("URI of head/head.keras")
    features_weights: str = doc("weights id of the features it trained on")
    train: int = doc("training vectors")
    val: int = doc("validation vectors")
    epochs_run: int = doc("epochs trained (early stopping may end before the maximum)")
    best_epoch: int = doc("the epoch kept (lowest validation loss)")
    val_loss: float = doc("validation loss of the kept epoch")
    val_auroc: float = doc("validation AUROC of the kept weights")
    seconds: float = doc("training time")
    seconds_per_epoch: float = doc("training time per epoch")


@dataclass(frozen=True)
class BestEpoch(Contract):
    epoch: int = doc("1-based epoch number")
    val_loss: float = doc("its validation loss")
    checkpoint: str = doc("its checkpoint file name under finetune/checkpoints/")


@dataclass(frozen=True)
class FinetuneSummary(Contract):
    """What ``xray-tasks finetune`` prints (the per-epoch history is in finetune/history.json)."""

    run_dir: str = doc("the run folder")
    model: str = doc("URI of the final model.keras")
    epochs_completed: int = doc("epochs completed in all attempts")
    resumed_from: int = doc("epochs already completed when this attempt started")
    best: BestEpoch | None = doc("the epoch with the lowest validation loss")
    unfrozen: tuple[str, ...] = doc("base layers whose weights were trained")
    feature_check_error: float | None = doc("relative error of the rebuilt base against the stored features")
    weights: str = doc("weights id of the base")
    devices: DeviceSettings = doc("the device settings used")


@dataclass(frozen=True)
class RetrainOverride(Contract):
    """Why a run trained although a complete version already had its fingerprint (``force_retrain``)."""

    by: str = doc("who asked, e.g. `airflow:<user>`")
    reason: str = doc("why, in words (required)")
    version: str | None = doc("the version that already had the fingerprint", default=None)


@dataclass(frozen=True)
class Fingerprint(Contract):
    """``<run>/fingerprint.json``, also in ``metrics.json`` and the version manifest: what determines the model.

    ``digest`` is the sha256 of the canonical JSON of the five parts below; two runs with one digest trained on
    the same labels, splits and shards, with the same config (run-local fields left out), code and base weights.
    """

    SCHEMA: ClassVar[int] = 1

    digest: str = doc("sha256 over the parts below (the fingerprint)")
    manifest_sha256: str = doc("sha256 of manifest.parquet: labels and splits")
    shards_sha256: str = doc(
        "sha256 over the committed shards' (path, sha256) pairs, from the archive markers"
    )
    shards: int = doc("committed shards")
    config_sha256: str = doc(
        "sha256 of the resolved config without run-local fields (locations, model name, gate)"
    )
    code: str = doc("code version: `<package>+<git commit>` (`XRAY_CODE_VERSION` when set)")
    weights: str = doc("identity of the base weights (`random:seed=N`, `imagenet:<sha>`, `file:<sha>`)")
    retrain: RetrainOverride | None = doc(
        "set when `force_retrain` trained an unchanged fingerprint", default=None
    )

    def parts(self) -> dict[str, str]:
        """What the UI compares between versions: ``data``, ``config``, ``code``, ``weights``."""
        return {
            "data": f"{self.manifest_sha256}:{self.shards_sha256}",
            "config": self.config_sha256,
            "code": self.code,
            "weights": self.weights,
        }

    @property
    def short(self) -> str:
        return self.digest[:12]
