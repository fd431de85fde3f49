"""Read NIH ``Data_Entry_2017*.csv`` (either release, plain or ``.gz``) into a normalised table.

The 2017 release has CRLF line endings, a trailing comma on the header, zero-padded ids and ages like ``058Y``;
the 2020 release has LF endings and plain integers.  Both yield the same columns here.  Rows that cannot be used
(unknown finding, contradictory labels, unreadable id, duplicate image) are returned as exclusions with a reason,
never dropped silently.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xray_tasks import storage
from xray_tasks.config import NO_FINDING, PATHOLOGIES
from xray_tasks.data.archives import shorten
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
MAX_METADATA_BYTES = 128 * 1024 * 1024
"""Largest metadata file read (after gunzip): the real one is 9 MB; a bigger one is refused, not parsed."""
UNKNOWN_KEPT = 50
"""Distinct unknown label names counted (the rows naming any unknown label are all excluded and counted)."""
VALUE_SHOWN = 80
"""Longest cell value quoted in an exclusion reason."""
_PLAIN_ID = r"\d{1,18}"  # fits int64: `1.5`, `1e30`, `inf`, `-3`, `0x10` are not plain integers
_AGE = r"^(\d{1,9})\s*([YMWD]?)$"


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
    unknown_labels: dict[str, int] = field(default_factory=dict)
    """Rows per unknown label name (the most frequent :data:`UNKNOWN_KEPT`)."""


def find_metadata(source: str, name: str | None = None) -> str:
    """The metadata file in ``source``: ``name`` if given, else the 2020 release, else the 2017 one."""
    candidates = [name] if name else list(METADATA_NAMES)
    present = set(storage.listdir(source))
    for candidate in candidates:
        if candidate in present:
            return storage.join(source, candidate)
    raise MetadataError(f"{source}: no metadata file found (looked for {candidates})")


def read_metadata(uri: str) -> Metadata:
    """Parse one metadata file; raises :class:`MetadataError` when it is too large, unreadable or lacks a column.

    Memory stays proportional to the file whatever its label vocabulary: each distinct ``Finding Labels`` string
    is parsed once against the 14 known names (no column per label string).  Ids, follow-up numbers and ages
    must be plain integers (ages with an optional ``Y``/``M``/``W``/``D`` unit); any other value excludes its
    row with the reason.
    """
    name = storage.basename(uri)
    frame = _read_table(uri, name)
    labels = parse_labels(frame["finding_labels"])  # before any exclusion: row positions are the index
    excluded: list[dict] = []

    def exclude(mask: pd.Series, what: str, column: str | None = None) -> None:
        nonlocal frame
        mask = mask.reindex(frame.index, fill_value=False)
        if not mask.any():
            return
        rows = frame.loc[mask, ["image_index"] if column is None else ["image_index", column]]
        for values in rows.itertuples(index=False):
            text = what if column is None else f"{what} in '{shorten(values[1], VALUE_SHOWN)}'"
            excluded.append({"image_index": shorten(values[0]), "file": name, "reason": text})
        frame = frame[~mask]

    exclude(frame["image_index"] == "", "empty Image Index")
    exclude(frame["image_index"].duplicated(keep="first"), "duplicate metadata row (first one kept)")
    exclude(~frame["patient_id"].str.fullmatch(_PLAIN_ID), "Patient ID is not a plain integer", "patient_id")
    exclude(~frame["follow_up"].str.fullmatch(_PLAIN_ID), "Follow-up # is not a plain integer", "follow_up")
    ages = frame["age"].str.extract(_AGE)
    exclude(ages[0].isna(), "Patient Age is not a plain integer (with an optional Y/M/W/D unit)", "age")
    for reason in _LABEL_REASONS:
        exclude(labels.reason == reason, reason, "finding_labels")

    multi_hot = labels.multi_hot[frame.index.to_numpy()]
    table = pd.DataFrame(
        {
            "image_index": frame["image_index"].to_numpy(dtype=object),
            "patient_id": frame["patient_id"].astype("int64").to_numpy(),
            "follow_up": frame["follow_up"].astype("int64").clip(upper=2**31 - 1).astype("int32").to_numpy(),
            "age": np.nan,
            "sex": frame["sex"].to_numpy(dtype=object),
            "view": frame["view"].to_numpy(dtype=object),
            "finding_labels": frame["finding_labels"].to_numpy(dtype=object),
        }
    )
    years = _parse_ages(frame["age"])
    implausible = int((years > MAX_PLAUSIBLE_AGE).sum())
    table["age"] = years.where(years <= MAX_PLAUSIBLE_AGE).astype("float32").to_numpy()
    for i, name_ in enumerate(PATHOLOGIES):
        table[name_] = multi_hot[:, i]
    table["label"] = (multi_hot.sum(axis=1) > 0).astype("int8")
    if labels.unknown:
        logger.warning(
            "%s: %d row(s) name an unknown label (excluded); the most frequent: %s",
            name,
            int((labels.reason == UNKNOWN_LABEL).sum()),
            dict(labels.unknown.most_common(10)),
        )
    logger.info(
        "%s: %d usable rows, %d excluded, %d implausible ages set to null",
        name,
        len(table),
        len(excluded),
        implausible,
    )
    return Metadata(
        table=table,
        source=uri,
        excluded=excluded,
        implausible_ages=implausible,
        unknown_labels=dict(labels.unknown.most_common(UNKNOWN_KEPT)),
    )


UNKNOWN_LABEL = "unknown pathology label(s)"
_LABEL_REASONS = (UNKNOWN_LABEL, "empty Finding Labels", "'No Finding' combined with findings")


@dataclass
class Labels:
    multi_hot: np.ndarray
    """int8 (rows, 14), in ``PATHOLOGIES`` order, indexed by the frame's row positions."""
    reason: pd.Series
    """Per row: ``""`` when the labels are usable, else one of ``_LABEL_REASONS``."""
    unknown: Counter
    """Rows per unknown label name (at most :data:`UNKNOWN_KEPT` names tracked)."""


def parse_labels(values: pd.Series) -> Labels:
    """``Finding Labels`` strings -> 14-column multi-hot (rows by position), parsing each distinct string once."""
    codes, uniques = pd.factorize(values, sort=False)
    known = {label: i for i, label in enumerate(PATHOLOGIES)}
    rows = np.zeros((len(uniques), len(PATHOLOGIES)), dtype=np.int8)
    reasons = np.empty(len(uniques), dtype=object)
    unknown_per_unique: list[tuple[int, list[str]]] = []
    for u, text in enumerate(uniques):
        parts = [p.strip() for p in str(text).split("|")]
        strange = [p for p in parts if p not in known and p != NO_FINDING]
        if text == "":
            reasons[u] = "empty Finding Labels"
        elif strange:
            reasons[u] = UNKNOWN_LABEL
            unknown_per_unique.append((u, strange))
        elif NO_FINDING in parts and len(set(parts)) > 1:
            reasons[u] = "'No Finding' combined with findings"
        else:
            reasons[u] = ""
            for p in parts:
                if p != NO_FINDING:
                    rows[u, known[p]] = 1
    unknown: Counter = Counter()
    if unknown_per_unique:
        per_unique = np.bincount(codes[codes >= 0], minlength=len(uniques))
        for u, strange in unknown_per_unique:
            for label in set(strange):
                if label in unknown or len(unknown) < UNKNOWN_KEPT:
                    unknown[shorten(label, VALUE_SHOWN)] += int(per_unique[u])
    return Labels(
        multi_hot=rows[codes], reason=pd.Series(reasons[codes], index=values.index), unknown=unknown
    )


def _read_table(uri: str, name: str) -> pd.DataFrame:
    """The metadata's seven columns as stripped strings (at most :data:`MAX_METADATA_BYTES`, after gunzip)."""
    raw = storage.read_bytes(uri)
    if name.endswith(".gz"):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                raw = gz.read(MAX_METADATA_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise MetadataError(f"{name}: not a readable gzip file: {exc}") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise MetadataError(f"{name}: larger than {MAX_METADATA_BYTES} bytes (the NIH file is about 9 MB)")
    try:
        frame = pd.read_csv(
            io.BytesIO(raw),
            dtype=str,
            keep_default_na=False,
            usecols=lambda c: str(c).strip() in COLUMNS,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as exc:
        raise MetadataError(f"{name}: not a readable CSV: {shorten(str(exc), 300)}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        header = raw.split(b"\n", 1)[0].decode("utf-8", "replace")
        raise MetadataError(f"{name}: missing column(s) {missing}; found {shorten(header, 300)!r}")
    frame = frame.loc[:, ~frame.columns.duplicated()][list(COLUMNS)].rename(columns=COLUMNS)
    for col in frame.columns:
        frame[col] = frame[col].fillna("").astype(str).str.strip()
    return frame.reset_index(drop=True)


def _parse_ages(ages: pd.Series) -> pd.Series:
    """``058Y`` / ``006M`` / ``57`` -> years as float; anything else -> NaN."""
    parts = ages.str.extract(_AGE)
    value = pd.to_numeric(parts[0], errors="coerce")
    unit = parts[1].fillna("").replace("", "Y").map(_AGE_UNITS)
    return (value * unit).astype("float64")
