"""Where everything lives under a workspace and a run folder: the one owner of those names.

```
<workspace>/manifest/manifest.parquet, summary.json                 labels and patient-wise splits
<workspace>/shards/<split>/<archive>-NNNNN-of-NNNNN.tfrecord         committed shards
<workspace>/shards/_manifests/<archive>.json                         per-archive commit marker (written last)
<workspace>/shards/_staging/<archive>.<nonce>/                       an archive's parts while it streams
<workspace>/shards/validation.json                                   the dataset-wide validation summary
<workspace>/shards/source.json                                       the source as last ingested (``data.source_state``)
<workspace>/features/<base>-<input_size>/<split>/<shard-stem>.parquet  pooled bottleneck features
<workspace>/runs/<run_id>/                                           one training run (``RunDir``)
<workspace>/baseline/<manifest_sha256>/                              the metadata-only baseline of one manifest
```

A run folder holds what the head, fine-tuning and evaluation write; a published registry version keeps the
same relative names for the files it copies (``RunDir.PUBLISHED_FILES``, ``RunDir.PUBLISHED_DIRS``).  Paths are
local or ``s3://`` URIs, joined by ``storage.join``; no other module spells these names out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xray_tasks import storage
from xray_tasks.config import PipelineConfig, from_dict, to_dict
from xray_tasks.errors import BadInput


@dataclass(frozen=True)
class RunDir:
    """The files of one training run, ``<workspace>/runs/<run_id>/`` or any folder given as ``--run-dir``."""

    root: str

    CONFIG = "config.json"
    MODEL = "model.keras"
    METRICS = "metrics.json"
    FINGERPRINT = "fingerprint.json"
    MODEL_CARD = "model_card.md"
    HEAD = "head"
    FINETUNE = "finetune"
    PREDICTIONS = "predictions"
    PLOTS = "plots"
    PROFILE = "profile.json"
    TENSORBOARD = "tensorboard"
    PUBLISHED_FILES = (MODEL, METRICS, CONFIG, MODEL_CARD)
    """Run files a published version carries under the same names."""
    PUBLISHED_IF_PRESENT = (PROFILE,)
    """Run files a published version carries when the run has them (runs evaluated before they existed lack them)."""
    PUBLISHED_DIRS = (f"{PLOTS}/", f"{PREDICTIONS}/", f"{TENSORBOARD}/")
    """Run folders a published version carries whole."""

    def _at(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    @property
    def config(self) -> str:
        """The resolved pipeline config the run's stages ran with (``config.to_dict``)."""
        return self._at(self.CONFIG)

    def write_config(self, cfg: PipelineConfig) -> str:
        """Save the resolved config beside the run's artifacts (each stage rewrites it with what it ran)."""
        storage.write_json(self.config, to_dict(cfg))
        return self.config

    def read_config(self) -> PipelineConfig | None:
        """The config the run's stages saved, or ``None`` before the first stage ran."""
        if not storage.exists(self.config):
            return None
        return from_dict(PipelineConfig, storage.read_json(self.config))

    @property
    def head_model(self) -> str:
        return self._at(self.HEAD, "head.keras")

    def history(self, stage: str) -> str:
        """``head/history.json`` or ``finetune/history.json``: per-epoch metrics of a training stage."""
        if stage not in (self.HEAD, self.FINETUNE):
            raise BadInput(f"stage must be {self.HEAD!r} or {self.FINETUNE!r}, got {stage!r}")
        return self._at(stage, "history.json")

    @property
    def finetune_state(self) -> str:
        """The fine-tuning resume marker, written after each epoch's checkpoint."""
        return self._at(self.FINETUNE, "state.json")

    def checkpoint(self, name: str) -> str:
        return self._at(self.FINETUNE, "checkpoints", name)

    @property
    def model(self) -> str:
        """The final model, what evaluation scores and the registry publishes."""
        return self._at(self.MODEL)

    def predictions(self, split: str) -> str:
        return self._at(self.PREDICTIONS, f"{split}.parquet")

    def baseline_predictions(self, split: str) -> str:
        """The metadata baseline's predictions on this run's studies (published with the run's own)."""
        return self._at(self.PREDICTIONS, f"baseline-{split}.parquet")

    @property
    def baseline_model(self) -> str:
        """In a baseline folder: the fitted metadata model (features, standardisation, weights) as JSON."""
        return self._at("baseline_model.json")

    @property
    def metrics(self) -> str:
        return self._at(self.METRICS)

    @property
    def plots(self) -> str:
        return self._at(self.PLOTS)

    def plot(self, name: str) -> str:
        return self._at(self.PLOTS, f"{name}.png")

    @property
    def model_card(self) -> str:
        return self._at(self.MODEL_CARD)

    @property
    def fingerprint(self) -> str:
        """What determines the run's model (``contracts.Fingerprint``), written when the run starts."""
        return self._at(self.FINGERPRINT)

    @property
    def profile(self) -> str:
        """The test split's reference profile (``contracts.Profile``), beside metrics.json."""
        return self._at(self.PROFILE)

    def tensorboard(self, stage: str) -> str:
        """TensorBoard event files of a training stage: ``tensorboard/head`` or ``tensorboard/finetune``."""
        if stage not in (self.HEAD, self.FINETUNE):
            raise BadInput(f"stage must be {self.HEAD!r} or {self.FINETUNE!r}, got {stage!r}")
        return self._at(self.TENSORBOARD, stage)


def worklist_companion(worklist: str, kind: str) -> str:
    """A file written beside a worklist: ``<stem>.drift.json`` / ``<stem>.drift.png`` (``kind``: ``drift.json``,
    ``drift.png``)."""
    if kind not in ("drift.json", "drift.png"):
        raise BadInput(f"worklist companion must be 'drift.json' or 'drift.png', got {kind!r}")
    for suffix in (".csv", ".parquet"):
        if worklist.endswith(suffix):
            return f"{worklist[: -len(suffix)]}.{kind}"
    return f"{worklist}.{kind}"


@dataclass(frozen=True)
class Workspace:
    """Everything a pipeline writes for one dataset (see the module docstring for the tree)."""

    root: str

    SHARDS = "shards"
    MARKERS = "_manifests"
    STAGING = "_staging"
    RUNS = "runs"
    BASELINE = "baseline"

    def _at(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    @property
    def manifest(self) -> str:
        return self._at("manifest", "manifest.parquet")

    @property
    def manifest_summary(self) -> str:
        """Counts per split and class, every excluded row with its reason (``data.manifest``)."""
        return self._at("manifest", "summary.json")

    @property
    def shards(self) -> str:
        return self._at(self.SHARDS)

    def shard(self, relative: str) -> str:
        """A committed shard from its path relative to ``shards/`` (``<split>/<name>``, as markers list it)."""
        return self._at(self.SHARDS, *relative.split("/"))

    @property
    def markers(self) -> str:
        return self._at(self.SHARDS, self.MARKERS)

    def marker(self, stem: str) -> str:
        """The commit marker of one archive (``images_001`` -> ``shards/_manifests/images_001.json``)."""
        return self._at(self.SHARDS, self.MARKERS, f"{stem}.json")

    @property
    def staging(self) -> str:
        """Where a local workspace stages an archive's parts (same file system as the shards: a rename commits)."""
        return self._at(self.SHARDS, self.STAGING)

    def is_bookkeeping(self, uri: str) -> bool:
        """Whether a URI under ``shards/`` is a marker or a staged part rather than a shard."""
        return f"/{self.MARKERS}/" in uri or f"/{self.STAGING}/" in uri

    @property
    def validation(self) -> str:
        return self._at(self.SHARDS, "validation.json")

    @property
    def source_state(self) -> str:
        """The source's archives and metadata files as last ingested and validated (``data.source_state``)."""
        return self._at(self.SHARDS, "source.json")

    @property
    def feature_sets(self) -> str:
        """The folder holding one ``<base>-<input_size>/`` folder per base and input size features exist for."""
        return self._at("features")

    def features(self, base: str, input_size: int) -> str:
        """The features of one base at one input size: ``features/<base>-<input_size>/``."""
        return self._at("features", f"{base}-{int(input_size)}")

    def feature_file(self, base: str, input_size: int, split: str, shard: str) -> str:
        """The Parquet file holding one shard's features (``shard``: its marker path or URI)."""
        stem = storage.basename(shard).removesuffix(".tfrecord")
        return storage.join(self.features(base, input_size), split, f"{stem}.parquet")

    @property
    def runs(self) -> str:
        return self._at(self.RUNS)

    def baseline(self, manifest_sha256: str) -> RunDir:
        """The metadata-only baseline fitted on one manifest: ``baseline/<manifest_sha256>/`` (a folder of the run
        layout: metrics.json, predictions/, baseline_model.json)."""
        if not re.fullmatch(r"[0-9a-f]{64}", manifest_sha256):
            raise BadInput(
                f"a baseline is keyed by a manifest's sha256 (64 hex digits), got {manifest_sha256!r}"
            )
        return RunDir(self._at(self.BASELINE, manifest_sha256))

    def run(self, run_id: str) -> RunDir:
        """The run folder for ``run_id``; characters outside ``A-Za-z0-9_.-`` become ``-`` (Airflow run ids hold
        ``:`` and ``+``)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-")
        if not safe:
            raise BadInput(f"run id {run_id!r} has no usable characters")
        return RunDir(self._at(self.RUNS, safe))
