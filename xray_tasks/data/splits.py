"""Patient-wise train / val / test assignment, and the check that no patient crosses splits.

With the official lists (``train_val_list.txt`` / ``test_list.txt``) test is exactly ``test_list.txt`` and a
deterministic share of the train_val *patients* becomes validation.  Without them, patients are grouped into the
three splits by configurable shares.  Patients are ranked by a salted hash of their id, so a patient keeps its
split when the metadata grows, and the same seed always gives the same split.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from xray_tasks import storage
from xray_tasks.data.metadata import MetadataError
from xray_tasks.errors import BadInput

logger = logging.getLogger(__name__)

TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
_EXAMPLES = 10


class LeakageError(BadInput):
    """A patient (or an image) would sit in more than one split."""


def read_list(uri: str) -> list[str]:
    names = [line.strip() for line in storage.read_text(uri).splitlines()]
    return [n for n in names if n]


def _rank(patients: np.ndarray, seed: int) -> np.ndarray:
    """Patients ordered by a salted blake2b hash of their id: stable, uniform, independent of row order."""
    keys = np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{seed}:{p}".encode(), digest_size=8).digest(), "big")
            for p in patients
        ],
        dtype=np.uint64,
    )
    return patients[np.argsort(keys, kind="stable")]


def _take_share(patients: np.ndarray, shares: list[float], seed: int) -> list[set]:
    ranked = _rank(np.unique(patients), seed)
    bounds = np.round(np.cumsum(shares) * len(ranked)).astype(int)
    bounds[-1] = len(ranked)
    starts = np.concatenate([[0], bounds[:-1]])
    return [set(ranked[a:b].tolist()) for a, b in zip(starts, bounds)]


def assign_official(
    table: pd.DataFrame,
    train_val: list[str],
    test: list[str],
    val_fraction: float,
    seed: int,
    list_names: tuple[str, str] = (TRAIN_VAL_LIST, TEST_LIST),
) -> tuple[pd.Series, dict]:
    """Split column from the official lists; names on neither list get ``""`` (excluded, reported)."""
    train_val_set, test_set = set(train_val), set(test)
    both = sorted(train_val_set & test_set)
    if both:
        raise LeakageError(
            f"{len(both)} image(s) are on both {list_names[0]} and {list_names[1]}, e.g. {both[:_EXAMPLES]}"
        )
    known = set(table["image_index"])
    report = {
        "lists": list(list_names),
        "listed_not_in_metadata": {
            list_names[0]: _examples(sorted(train_val_set - known)),
            list_names[1]: _examples(sorted(test_set - known)),
        },
    }
    split = pd.Series("", index=table.index, dtype=object)
    split[table["image_index"].isin(test_set)] = "test"
    in_train_val = table["image_index"].isin(train_val_set)
    val_patients, _ = _take_share(
        table.loc[in_train_val, "patient_id"].to_numpy(), [val_fraction, 1 - val_fraction], seed
    )
    split[in_train_val] = np.where(table.loc[in_train_val, "patient_id"].isin(val_patients), "val", "train")
    report["in_metadata_not_listed"] = _examples(sorted(table.loc[split == "", "image_index"]))
    return split, report


def assign_grouped(
    table: pd.DataFrame, fractions: tuple[float, float, float], seed: int
) -> tuple[pd.Series, dict]:
    """Split column by patient groups with (train, val, test) shares."""
    groups = _take_share(table["patient_id"].to_numpy(), list(fractions), seed)
    split = pd.Series("", index=table.index, dtype=object)
    for name, patients in zip(("train", "val", "test"), groups):
        split[table["patient_id"].isin(patients)] = name
    return split, {"lists": None, "fractions": list(fractions)}


def check_no_leakage(table: pd.DataFrame) -> None:
    """Raise :class:`LeakageError` if any patient has images in two splits."""
    assigned = table[table["split"] != ""]
    per_patient = assigned.groupby("patient_id")["split"].nunique()
    leaking = per_patient[per_patient > 1]
    if len(leaking):
        raise LeakageError(
            f"{len(leaking)} patient(s) have images in more than one split, e.g. patient ids "
            f"{leaking.index[:_EXAMPLES].tolist()}"
        )


def _examples(names: list[str]) -> dict:
    return {"count": len(names), "examples": names[:_EXAMPLES]}


def load_lists(source: str) -> tuple[list[str], list[str]] | None:
    """The official lists in ``source`` when both exist; ``None`` when neither; an error when only one does."""
    present = set(storage.listdir(source))
    have = [n for n in (TRAIN_VAL_LIST, TEST_LIST) if n in present]
    if not have:
        return None
    if len(have) == 1:
        missing = TEST_LIST if have[0] == TRAIN_VAL_LIST else TRAIN_VAL_LIST
        raise MetadataError(
            f"{source}: {have[0]} is present but {missing} is missing; provide both or neither"
        )
    return read_list(storage.join(source, TRAIN_VAL_LIST)), read_list(storage.join(source, TEST_LIST))
