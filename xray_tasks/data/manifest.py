"""Metadata + split lists -> ``<workspace>/manifest/manifest.parquet`` and its ``summary.json``.

One row per usable image: ids, demographics, the 14-finding multi-hot (``labels``, fixed order of
``config.PATHOLOGIES``), the binary triage ``label`` (0 = No Finding) and the ``split``.  The summary carries the
counts per split and class, every excluded row with its reason, and what the lists and the metadata disagree on.
"""

from __future__ import annotations

import hashlib
import io
import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from xray_tasks import storage
from xray_tasks.config import PATHOLOGIES, SPLITS, IngestConfig
from xray_tasks.contracts import ManifestCounts, ManifestSummary
from xray_tasks.data.metadata import find_metadata, read_metadata
from xray_tasks.data.splits import assign_grouped, assign_official, check_no_leakage, load_lists
from xray_tasks.workspace import Workspace

logger = logging.getLogger(__name__)

EXCLUDED_ROWS_KEPT = 10_000


def build_manifest(
    source: str, cfg: IngestConfig, metadata_name: str | None = None
) -> tuple[pd.DataFrame, dict]:
    """Read the metadata and lists in ``source`` and assign splits; raises on leakage or unusable input."""
    meta_uri = find_metadata(source, metadata_name)
    meta = read_metadata(meta_uri)
    table = meta.table
    lists = load_lists(source)
    if lists is not None:
        split, split_report = assign_official(table, lists[0], lists[1], cfg.val_fraction, cfg.split_seed)
    else:
        split, split_report = assign_grouped(table, cfg.split_fractions, cfg.split_seed)
    table = table.assign(split=split.to_numpy())
    check_no_leakage(table)

    excluded = list(meta.excluded)
    unlisted = table["split"] == ""
    excluded.extend(
        {"image_index": name, "file": meta_uri, "reason": "not on train_val_list.txt or test_list.txt"}
        for name in table.loc[unlisted, "image_index"]
    )
    table = table[~unlisted].sort_values("image_index", kind="stable").reset_index(drop=True)
    summary = {
        "metadata": {"uri": meta_uri, "sha256": hashlib.sha256(storage.read_bytes(meta_uri)).hexdigest()},
        "splits": split_report,
        "counts": counts(table),
        "excluded": {
            "count": len(excluded),
            "by_reason": _by_reason(excluded),
            "rows": excluded[:EXCLUDED_ROWS_KEPT],
        },
        "implausible_ages_nulled": meta.implausible_ages,
        "config": {
            "val_fraction": cfg.val_fraction,
            "split_fractions": list(cfg.split_fractions),
            "split_seed": cfg.split_seed,
        },
    }
    return table, summary


def counts(table: pd.DataFrame) -> dict[str, Any]:
    """Images, patients and classes per split (every split listed, zero when empty)."""
    out: dict[str, Any] = {}
    for name in SPLITS:
        part = table[table["split"] == name]
        out[name] = {
            "images": len(part),
            "patients": int(part["patient_id"].nunique()),
            "healthy": int((part["label"] == 0).sum()),
            "unhealthy": int((part["label"] == 1).sum()),
        }
    out["total"] = {
        "images": len(table),
        "patients": int(table["patient_id"].nunique()),
        "healthy": int((table["label"] == 0).sum()),
        "unhealthy": int((table["label"] == 1).sum()),
    }
    return out


def format_counts(count_table: dict[str, Any]) -> str:
    lines = [f"{'split':<6} {'images':>8} {'patients':>9} {'healthy':>8} {'unhealthy':>10}"]
    for name, row in count_table.items():
        lines.append(
            f"{name:<6} {row['images']:>8} {row['patients']:>9} {row['healthy']:>8} {row['unhealthy']:>10}"
        )
    return "\n".join(lines)


def _by_reason(excluded: list[dict]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for row in excluded:
        key = row["reason"].split(" in '")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return reasons


def to_arrow(table: pd.DataFrame) -> pa.Table:
    labels = np.ascontiguousarray(table[list(PATHOLOGIES)].to_numpy(dtype=np.int8))
    return pa.table(
        {
            "image_index": pa.array(table["image_index"].tolist(), pa.string()),
            "patient_id": pa.array(table["patient_id"].to_numpy(), pa.int64()),
            "follow_up": pa.array(table["follow_up"].to_numpy(), pa.int32()),
            "age": pa.array(table["age"].to_numpy(), pa.float32(), from_pandas=True),
            "sex": pa.array(table["sex"].tolist(), pa.string()),
            "view": pa.array(table["view"].tolist(), pa.string()),
            "finding_labels": pa.array(table["finding_labels"].tolist(), pa.string()),
            "labels": pa.FixedSizeListArray.from_arrays(
                pa.array(labels.reshape(-1), pa.int8()), len(PATHOLOGIES)
            ),
            "label": pa.array(table["label"].to_numpy(), pa.int8()),
            "split": pa.array(table["split"].tolist(), pa.string()),
        },
        metadata={b"pathologies": "|".join(PATHOLOGIES).encode()},
    )


def write_manifest(table: pd.DataFrame, summary: dict, workspace: str) -> str:
    """Write the manifest Parquet, then the summary; both atomically."""
    out = io.BytesIO()
    pq.write_table(to_arrow(table), out, compression="zstd")
    ws = Workspace(workspace)
    storage.write_bytes(ws.manifest, out.getvalue())
    storage.write_json(ws.manifest_summary, summary)
    return ws.manifest


def read_manifest(workspace: str) -> pd.DataFrame:
    """The manifest as a DataFrame; ``labels`` expanded back into one int8 column per pathology."""
    table = pq.read_table(io.BytesIO(storage.read_bytes(Workspace(workspace).manifest)))
    labels = table.column("labels").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    frame = table.drop(["labels"]).to_pandas()
    multi_hot = labels.reshape(len(frame), len(PATHOLOGIES))
    for i, name in enumerate(PATHOLOGIES):
        frame[name] = multi_hot[:, i]
    return frame


def manifest_exclusions(workspace: str) -> dict[str, str]:
    """Image name -> why its metadata row was excluded (from the manifest summary)."""
    uri = Workspace(workspace).manifest_summary
    if not storage.exists(uri):
        return {}
    return {row["image_index"]: row["reason"] for row in storage.read_json(uri)["excluded"]["rows"]}


def manifest_counts(workspace: str) -> dict[str, ManifestCounts] | None:
    """Images, patients and classes per split from the manifest summary (``None`` when there is none)."""
    uri = Workspace(workspace).manifest_summary
    if not storage.exists(uri):
        return None
    return {
        name: ManifestCounts.from_dict(row, where=f"{uri} counts.{name}")
        for name, row in storage.read_json(uri)["counts"].items()
    }


def manifest_sha256(workspace: str) -> str:
    """sha256 of manifest.parquet: identifies the labels and splits a model was trained and tested on."""
    return hashlib.sha256(storage.read_bytes(Workspace(workspace).manifest)).hexdigest()


def run_manifest(
    source: str, workspace: str, cfg: IngestConfig, metadata_name: str | None = None
) -> ManifestSummary:
    """Stage entry point: build, write, log the counts; returns a small summary."""
    table, summary = build_manifest(source, cfg, metadata_name)
    uri = write_manifest(table, summary, workspace)
    logger.info("manifest %s\n%s", uri, format_counts(summary["counts"]))
    listed = summary["splits"].get("listed_not_in_metadata") or {}
    return ManifestSummary(
        manifest=uri,
        counts={k: ManifestCounts(**v) for k, v in summary["counts"].items()},
        excluded=summary["excluded"]["count"],
        listed_not_in_metadata={k: v["count"] for k, v in listed.items()},
    )
