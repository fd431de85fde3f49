"""Read NIH ``Data_Entry_2017*.csv`` (either release, plain or ``.gz``) into a normalised table.

The 2017 release has CRLF line endings, a trailing comma on the header, zero-padded ids and ages like ``058Y``;
the 2020 release has LF endings and plain integers.  Both yield the same columns here.  Rows that cannot be used
(unknown finding, contradictory labels, unreadable id, duplicate image) are returned as exclusions with a reason,
never dropped silently.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xray_tasks import storage
from xray_tasks.config import NO_FINDING, PATHOLOGIES
from xray_tasks.errors import BadInput

logger = logging.getLogger(__name__)

COLUMNS = {
    "Image Index": "image_index",
    "Finding Labels": "finding_labels",
    "Follow-up #": "follow_up",
    "Patient ID": "patient_id",
    "Patient Age": "age",
    "Patient Gender": "sex",
    "View Position": "view",
}
METADATA_NAMES = (
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv",
    "Data_Entry_2017.csv.gz",
)
_AGE_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 1 / 52, "D": 1 / 365}
MAX_PLAUSIBLE_AGE = 120.0


class MetadataError(BadInput):
    """The metadata or a split list cannot be used at all; the message names the file and the problem."""


@dataclass
class Metadata:
    table: pd.DataFrame
    """One row per usable image: image_index, patient_id, follow_up, age, sex, view, finding_labels, label,
    and one int8 column per pathology (in ``PATHOLOGIES`` order)."""
    source: str
    excluded: list[dict] = field(default_factory=list)
    implausible_ages: int = 0


def find_metadata(source: str, name: str | None = None) -> str:
    """The metadata file in ``source``: ``name`` if given, else the 2020 release, else the 2017 one."""
    candidates = [name] if name else list(METADATA_NAMES)
    present = set(storage.listdir(source))
    for candidate in candidates:
        if candidate in present:
            return storage.join(source, candidate)
    raise MetadataError(f"{source}: no metadata file found (looked for {candidates})")


def read_metadata(uri: str) -> Metadata:
    """Parse one metadata file; raises :class:`MetadataError` when a required column is missing."""
    name = storage.basename(uri)
    raw = storage.read_bytes(uri)
    compression = "gzip" if name.endswith(".gz") else None
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, compression=compression)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise MetadataError(f"{name}: not a readable CSV: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise MetadataError(f"{name}: missing column(s) {missing}; found {list(frame.columns)}")
    frame = frame[list(COLUMNS)].rename(columns=COLUMNS)
    for col in frame.columns:
        frame[col] = frame[col].str.strip()

    excluded: list[dict] = []

    def exclude(mask: pd.Series, reason) -> None:
        nonlocal frame
        for _, row in frame[mask].iterrows():
            text = reason(row) if callable(reason) else reason
            excluded.append({"image_index": row["image_index"], "file": name, "reason": text})
        frame = frame[~mask]

    exclude(frame["image_index"] == "", "empty Image Index")
    exclude(frame["image_index"].duplicated(keep="first"), "duplicate metadata row (first one kept)")
    patient = pd.to_numeric(frame["patient_id"], errors="coerce")
    exclude(patient.isna(), lambda r: f"unreadable Patient ID {r['patient_id']!r}")
    follow = pd.to_numeric(frame["follow_up"], errors="coerce")

    labels = frame["finding_labels"].str.get_dummies(sep="|")
    labels.columns = [c.strip() for c in labels.columns]
    labels = labels.T.groupby(level=0).max().T if labels.columns.duplicated().any() else labels
    unknown = [c for c in labels.columns if c not in PATHOLOGIES and c != NO_FINDING]
    if unknown:
        bad = labels[unknown].any(axis=1).reindex(frame.index, fill_value=False)
        exclude(bad, lambda r: f"unknown pathology label(s) in {r['finding_labels']!r}")
    empty = frame["finding_labels"] == ""
    exclude(empty, "empty Finding Labels")
    if NO_FINDING in labels.columns:
        found = labels.reindex(
            index=frame.index, columns=[c for c in PATHOLOGIES if c in labels.columns]
        ).sum(axis=1)
        contradictory = (labels[NO_FINDING].reindex(frame.index) == 1) & (found > 0)
        exclude(contradictory, lambda r: f"'No Finding' combined with findings in {r['finding_labels']!r}")

    table = pd.DataFrame(
        {
            "image_index": frame["image_index"].to_numpy(dtype=object),
            "patient_id": patient.reindex(frame.index).astype("int64").to_numpy(),
            "follow_up": follow.reindex(frame.index).fillna(-1).astype("int32").to_numpy(),
            "age": np.nan,
            "sex": frame["sex"].to_numpy(dtype=object),
            "view": frame["view"].to_numpy(dtype=object),
            "finding_labels": frame["finding_labels"].to_numpy(dtype=object),
        }
    )
    ages = _parse_ages(frame["age"])
    implausible = int((ages > MAX_PLAUSIBLE_AGE).sum())
    table["age"] = ages.where(ages <= MAX_PLAUSIBLE_AGE).astype("float32").to_numpy()
    multi_hot = labels.reindex(index=frame.index, columns=list(PATHOLOGIES), fill_value=0).astype("int8")
    for name_ in PATHOLOGIES:
        table[name_] = multi_hot[name_].to_numpy()
    table["label"] = (multi_hot.sum(axis=1) > 0).astype("int8").to_numpy()
    logger.info(
        "%s: %d usable rows, %d excluded, %d implausible ages set to null",
        name,
        len(table),
        len(excluded),
        implausible,
    )
    return Metadata(table=table, source=uri, excluded=excluded, implausible_ages=implausible)


def _parse_ages(ages: pd.Series) -> pd.Series:
    """``058Y`` / ``006M`` / ``57`` -> years as float; anything else -> NaN."""
    parts = ages.str.extract(r"^(\d+)\s*([YMWD]?)$")
    value = pd.to_numeric(parts[0], errors="coerce")
    unit = parts[1].fillna("").replace("", "Y").map(_AGE_UNITS)
    return (value * unit).astype("float64")
