"""Bottleneck features: the frozen base runs once over the shards; pooled vectors go to Parquet, one file per shard.

Layout: ``<ws>/features/<base>-<input_size>/<split>/<shard-stem>.parquet`` with columns ``image_index`` (string),
``patient_id`` (int64), ``split`` (string), ``label`` (int8), ``labels`` (fixed_size_list<int8>[14], order of
``config.PATHOLOGIES``) and ``features`` (fixed_size_list<float32>[D]).  The vectors are the output of the base's
global average pool, which is the first layer of the report's head, so the head trains on them exactly.

Resumable per shard: a shard whose Parquet exists (written atomically) is skipped when its provenance (base,
weights, sizes, the shard's sha256) matches, and refused when it does not, so features of two different bases
never mix under one name.  Pending shards are read through one sequential tf.data pipeline (it stays warm across
shards) and cut back into shards by the record counts their commit markers list.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xray_tasks import storage
from xray_tasks.config import PATHOLOGIES, SPLITS, FeatureConfig
from xray_tasks.contracts import FeatureProvenance, FeaturesSummary, SplitFeatures
from xray_tasks.data import shards
from xray_tasks.errors import BadInput, IntegrityError, MissingInput, StageError
from xray_tasks.workspace import Workspace

logger = logging.getLogger(__name__)

PROVENANCE_KEY = b"xray_tasks.features"
PROGRESS_EVERY_S = 30.0


@dataclass(frozen=True)
class FeatureSet:
    """One split's features as arrays (row order: archive, shard, image name)."""

    image_index: np.ndarray
    patient_id: np.ndarray
    label: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    weights_id: str

    def __len__(self) -> int:
        return len(self.label)


def to_table(
    image_index: Sequence[str],
    patient_id: np.ndarray,
    split: str,
    label: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    provenance: FeatureProvenance,
) -> pa.Table:
    """Arrow table in the features schema; ``provenance`` goes into the schema metadata."""
    n, dim = features.shape
    if (
        labels.shape != (n, len(PATHOLOGIES))
        or len(image_index) != n
        or len(label) != n
        or len(patient_id) != n
    ):
        raise BadInput(
            f"column lengths disagree: {n} feature rows, labels {labels.shape}, {len(image_index)} names"
        )
    flat = np.ascontiguousarray(features, dtype=np.float32).reshape(-1)
    return pa.table(
        {
            "image_index": pa.array(list(image_index), pa.string()),
            "patient_id": pa.array(np.asarray(patient_id, np.int64), pa.int64()),
            "split": pa.array([split] * n, pa.string()),
            "label": pa.array(np.asarray(label, np.int8), pa.int8()),
            "labels": pa.FixedSizeListArray.from_arrays(
                pa.array(np.asarray(labels, np.int8).reshape(-1), pa.int8()), len(PATHOLOGIES)
            ),
            "features": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim),
        },
        metadata={PROVENANCE_KEY: json.dumps(provenance.to_dict(), sort_keys=True).encode()},
    )


def read_provenance(uri: str) -> FeatureProvenance:
    """The provenance a features file was written with (only the footer is read for local files)."""
    return _provenance(storage.read_parquet_schema(uri).metadata, uri)


def _provenance(metadata: dict | None, uri: str) -> FeatureProvenance:
    raw = (metadata or {}).get(PROVENANCE_KEY)
    if raw is None:
        raise IntegrityError(f"{uri}: not a features file (no {PROVENANCE_KEY.decode()} metadata)")
    return FeatureProvenance.from_dict(json.loads(raw), where=f"{uri} ({PROVENANCE_KEY.decode()} metadata)")


def _write(table: pa.Table, uri: str) -> None:
    with tempfile.TemporaryDirectory(prefix="xray-features-") as tmp:
        local = Path(tmp) / storage.basename(uri)
        pq.write_table(table, local, compression="zstd")
        storage.put_file(local, uri)


def extract_features(
    workspace: str, cfg: FeatureConfig, splits: Sequence[str] = SPLITS, group: tuple[int, int] = (0, 1)
) -> FeaturesSummary:
    """Run the frozen base over every committed shard of ``splits`` that has no features yet.

    ``group`` ``(i, n)``: only the shards of group ``i`` of ``n`` (:func:`in_group`), so that ``n`` workers share
    the stage, one group each; the counts then cover that group's shards only.

    Returns the features folder, counts written/skipped per split, images/s.

    Raises:
        MissingInput: no committed shards, or the weights file is missing.
        BadInput: an unknown split, or an existing features file came from another base / weights / shard.
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise BadInput(f"unknown split(s) {unknown}; allowed: {list(SPLITS)}")
    index, count = group
    if not 0 <= index < count:
        raise BadInput(f"feature group {index}/{count}: need 0 <= group < groups")
    from xray_tasks.training import networks

    ws = Workspace(workspace)
    weights_path, weights_id = networks.resolve_weights(cfg.base, cfg.weights, cfg.seed)
    pending, counts = _pending_shards(ws, cfg, weights_id, splits, group)
    summary = FeaturesSummary(
        features=ws.features(cfg.base, cfg.input_size),
        base=cfg.base,
        weights=weights_id,
        input_size=cfg.input_size,
        feature_dim=None,
        splits={},
        images_extracted=0,
        images_per_s=None,
        steady_images_per_s=None,
        steady_cpu_ms_per_image=None,
        devices=None,
    )
    if pending:
        summary = summary.replace(**_run_base(ws, cfg, weights_path, pending))
    else:
        logger.info(
            "features: all %d shard(s) already extracted under %s",
            sum(c["shards"] for c in counts.values()),
            summary.features,
        )
    for _, _, provenance in pending:
        counts[_split_of(provenance)]["written"] += 1
    return summary.replace(splits={s: SplitFeatures(**c) for s, c in counts.items()})


def _split_of(provenance: FeatureProvenance) -> str:
    return provenance.shard.split("/", 1)[0]


def in_group(position: int, group: tuple[int, int]) -> bool:
    """Whether the shard at ``position`` (in the shard set sorted by path) belongs to ``group`` ``(i, n)``: every
    n-th shard from the i-th, so the groups differ by at most one shard and each split is spread over all of them."""
    return position % group[1] == group[0]


def _pending_shards(
    ws: Workspace, cfg: FeatureConfig, weights_id: str, splits: Sequence[str], group: tuple[int, int] = (0, 1)
) -> tuple[list, dict[str, dict[str, int]]]:
    """The shards of ``group`` still without features, as ``(entry, features URI, provenance)``, and counts per
    split.

    Raises:
        MissingInput: no committed shards in ``splits``.
        BadInput: a features file of another base, weights or shard version is in the way.
    """
    fmt = shards.shard_format(ws.root)
    pending = []
    counts = {s: {"shards": 0, "written": 0, "skipped": 0, "images": 0} for s in splits}
    entries = sorted(
        (
            entry
            for marker in shards.read_markers(ws.root)
            for entry in marker.shards
            if entry.split in counts
        ),
        key=lambda entry: entry.path,
    )
    for position, entry in enumerate(entries):
        if not in_group(position, group):
            continue
        provenance = FeatureProvenance(
            base=cfg.base,
            weights=weights_id,
            input_size=cfg.input_size,
            stored_image_size=fmt.image_size,
            encoding=fmt.encoding,
            shard=entry.path,
            shard_sha256=entry.sha256,
            pathologies=PATHOLOGIES,
        )
        uri = ws.feature_file(cfg.base, cfg.input_size, entry.split, entry.path)
        counts[entry.split]["shards"] += 1
        counts[entry.split]["images"] += entry.records
        if not storage.exists(uri):
            pending.append((entry, uri, provenance))
            continue
        found = read_provenance(uri)
        if not found.same_source(provenance):
            raise BadInput(
                f"{uri} holds features of {found.base} weights {found.weights} for shard sha256 "
                f"{found.shard_sha256[:12]}; this run wants {cfg.base} weights {weights_id} for "
                f"{entry.sha256[:12]}: delete {ws.features(cfg.base, cfg.input_size)} or use another workspace"
            )
        counts[entry.split]["skipped"] += 1
    if not entries:
        raise MissingInput(f"{ws.shards}: no committed shards for {list(splits)}")
    if group[1] > 1:
        logger.info(
            "features: group %d of %d: %d of the %d shard(s), %d without features yet",
            group[0] + 1,
            group[1],
            sum(c["shards"] for c in counts.values()),
            len(entries),
            len(pending),
        )
    return pending, counts


def _run_base(ws: Workspace, cfg: FeatureConfig, weights_path: str | None, pending: list) -> dict:
    from xray_tasks.data import dataset
    from xray_tasks.training import devices, networks

    settings = devices.configure(cfg.mixed_precision, cfg.xla, cfg.device, cfg.distribute)
    strategy = devices.strategy(settings)
    with strategy.scope():
        base = networks.build_base(cfg.base, cfg.input_size, weights_path, cfg.seed)
    # The input pipeline stops at the stored grey pixels; resizing and grey -> RGB run inside the forward
    # function, on the base's device, so that one CPU core can feed a GPU.
    forward = devices.replicated(
        base, strategy, settings.xla, prepare=lambda x: dataset.to_model_pixels(x, cfg.input_size, 3)
    )
    fmt = shards.shard_format(ws.root)
    uris = [ws.shard(entry.path) for entry, _, _ in pending]
    ds = dataset.make_dataset(
        uris,
        encoding=fmt.encoding,
        image_size=fmt.image_size,
        batch_size=cfg.batch_size,
        channels=1,
        cycle_length=1,
    )
    total = sum(entry.records for entry, _, _ in pending)
    logger.info(
        "features: %s (%s) at %d px over %d shard(s), %d images, batch %d over %d replica(s) (%s strategy)",
        cfg.base,
        "random" if weights_path is None else weights_path,
        cfg.input_size,
        len(pending),
        total,
        cfg.batch_size,
        settings.replicas,
        settings.strategy,
    )
    buffer: dict[str, list] = {k: [] for k in ("image_index", "patient_id", "label", "labels", "features")}
    queue = list(pending)
    done, started, last_log = 0, time.perf_counter(), time.perf_counter()
    warm_at, warm_done, warm_cpu = None, 0, 0.0
    for batch in ds:
        buffer["features"].append(forward(batch["image"]))
        buffer["image_index"].append(batch["image_index"].numpy())
        for key in ("patient_id", "label", "labels"):
            buffer[key].append(batch[key].numpy())
        done += len(buffer["label"][-1])
        buffer = _flush_complete(buffer, queue)
        if warm_at is None:  # the first batch pays for tracing: the steady rate starts after it
            warm_at, warm_done, warm_cpu = time.perf_counter(), done, time.process_time()
        if time.perf_counter() - last_log > PROGRESS_EVERY_S:
            last_log = time.perf_counter()
            rate = done / (last_log - started)
            logger.info(
                "features: %d/%d images, %.1f images/s, ETA %.0f s", done, total, rate, (total - done) / rate
            )
    if queue or sum(len(x) for x in buffer["label"]):
        raise StageError(
            f"features: shard records ran out of step with the markers ({len(queue)} shard(s) left)"
        )
    finished, cpu = time.perf_counter(), time.process_time()
    rate = done / (finished - started) if finished > started else None
    steady = (done - warm_done) / (finished - warm_at) if warm_at and done > warm_done else None
    # CPU time per image (all threads of this process) holds up better than wall time on a shared machine.
    cpu_ms = 1000 * (cpu - warm_cpu) / (done - warm_done) if warm_at and done > warm_done else None
    logger.info(
        "features: %d images in %.1f s (%.1f images/s; %.1f after the first batch, %.1f CPU ms/image)",
        done,
        finished - started,
        rate or 0.0,
        steady or 0.0,
        cpu_ms or 0.0,
    )
    return {
        "feature_dim": int(base.output.shape[-1]),
        "images_extracted": done,
        "images_per_s": round(rate, 2) if rate else None,
        "steady_images_per_s": round(steady, 2) if steady else None,
        "steady_cpu_ms_per_image": round(cpu_ms, 3) if cpu_ms else None,
        "devices": settings,
    }


def _flush_complete(buffer: dict[str, list], queue: list) -> dict[str, list]:
    """Write every pending shard whose records are all in ``buffer``; returns what is left over."""
    available = sum(len(x) for x in buffer["label"])
    while queue and available >= queue[0][0].records:
        entry, uri, provenance = queue.pop(0)
        n = entry.records
        arrays = {k: np.concatenate(v) for k, v in buffer.items()}
        names = [b.decode("utf-8") for b in arrays["image_index"][:n]]
        if names != list(entry.images):
            raise StageError(f"features for {entry.path}: records do not match the marker's image list")
        _write(
            to_table(
                names,
                arrays["patient_id"][:n],
                entry.split,
                arrays["label"][:n],
                arrays["labels"][:n],
                arrays["features"][:n],
                provenance,
            ),
            uri,
        )
        logger.debug("features: wrote %s (%d rows)", uri, n)
        buffer = {k: [v[n:]] for k, v in arrays.items()}
        available -= n
    return buffer


def load_features(workspace: str, base: str, input_size: int, split: str) -> FeatureSet:
    """Every committed shard's features of one split, as arrays (read in bulk with pyarrow, no per-row Python).

    Raises:
        FileNotFoundError: a shard has no features file yet (run ``xray-tasks features``).
        ValueError: the files come from different weights.
    """
    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r}; allowed: {list(SPLITS)}")
    ws = Workspace(workspace)
    uris = [ws.feature_file(base, input_size, split, s) for s in shards.committed_shards(workspace, split)]
    if not uris:
        raise MissingInput(f"{ws.shards}: no committed shards for split {split!r}")
    tables = []
    for uri in uris:
        if not storage.exists(uri):
            missing = sum(not storage.exists(u) for u in uris)
            raise MissingInput(
                f"{missing} of {len(uris)} {split} shard(s) have no features under "
                f"{ws.features(base, input_size)} (run `xray-tasks features`)"
            )
        tables.append(pq.read_table(io.BytesIO(storage.read_bytes(uri))))
    weights = {_provenance(t.schema.metadata, u).weights for t, u in zip(tables, uris, strict=True)}
    if len(weights) != 1:
        raise BadInput(f"{split} features come from different weights {sorted(weights)}: re-extract them")
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    n = table.num_rows
    features = table.column("features").combine_chunks()
    dim = features.type.list_size
    return FeatureSet(
        image_index=np.asarray(table.column("image_index").to_numpy(zero_copy_only=False), dtype=object),
        patient_id=table.column("patient_id").to_numpy(),
        label=table.column("label").to_numpy(),
        labels=table.column("labels").combine_chunks().flatten().to_numpy().reshape(n, len(PATHOLOGIES)),
        features=features.flatten().to_numpy().reshape(n, dim),
        weights_id=weights.pop(),
    )
