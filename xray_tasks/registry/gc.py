"""Clean-up of incomplete versions (publishes that died before their manifest): a dry run unless asked to apply.

What is never touched: a complete version (it has a ``MANIFEST.json``), the champion, a version claimed less
than ``older_than`` ago (its publish may still be uploading), and the newest claimed id (deleting it would free
the id, and a new publish would claim it again while an old, stalled one might still write into it).  The
manifest is looked for again right before a version's files are removed, and ``CLAIM.json`` goes last, so a
clean-up cut short leaves an incomplete version, never a half-removed complete one.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from xray_tasks import storage
from xray_tasks.errors import BadInput
from xray_tasks.registry import pointers
from xray_tasks.registry.layout import CLAIM, MANIFEST, check_name, version_uri

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_OLDER_THAN = "24h"


def parse_age(text: str) -> float:
    """``"24h"``, ``"90m"``, ``"7d"``, ``"30s"`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not match:
        raise BadInput(f"--older-than must look like 24h, 90m, 7d or 3600s, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _claimed_at(vuri: str) -> datetime | None:
    try:
        claim = storage.read_json(storage.join(vuri, CLAIM))
        return datetime.fromisoformat(str(claim["claimed_at"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def collect(
    registry: str,
    model_name: str,
    *,
    older_than: str | float = DEFAULT_OLDER_THAN,
    apply: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """List (and with ``apply`` remove) the incomplete versions of a model older than ``older_than``.

    Returns ``{model_name, apply, older_than_s, removable, removed, kept}``; ``kept`` rows say why each other
    version stays.
    """
    check_name(model_name)
    age = older_than if isinstance(older_than, int | float) else parse_age(older_than)
    now = now or datetime.now(UTC)
    champion, _ = pointers.read_champion(registry, model_name)
    champion_version = champion["version"] if champion else None
    ids = pointers.version_ids(registry, model_name)
    removable, kept = [], []
    for version in ids:
        vuri = version_uri(registry, model_name, version)
        why = None
        if version == champion_version:
            why = "champion"
        elif storage.exists(storage.join(vuri, MANIFEST)):
            why = "complete"
        elif version == ids[-1]:
            why = "newest id (kept so that the id is never claimed twice)"
        else:
            claimed = _claimed_at(vuri)
            if claimed is not None and (now - claimed).total_seconds() < age:
                why = f"incomplete but claimed {int((now - claimed).total_seconds())} s ago (younger than {age:g} s)"
        if why:
            kept.append({"version": version, "why": why})
        else:
            files = storage.list_files(vuri)
            removable.append({"version": version, "uri": vuri, "files": len(files)})
    removed = []
    if apply:
        for row in removable:
            if _remove(row["uri"]):
                removed.append(row["version"])
            else:
                kept.append({"version": row["version"], "why": "completed while gc ran"})
    logger.info(
        "%s gc (%s): %d incomplete version(s) %s, %d kept",
        model_name,
        "apply" if apply else "dry run",
        len(removable),
        "removed" if apply else "would be removed",
        len(kept),
    )
    return {
        "model_name": model_name,
        "apply": apply,
        "older_than_s": age,
        "removable": removable,
        "removed": removed,
        "kept": sorted(kept, key=lambda r: r["version"]),
    }


def _remove(vuri: str) -> bool:
    """Delete an incomplete version's files, its claim last; ``False`` (nothing deleted) if it became complete."""
    if storage.exists(storage.join(vuri, MANIFEST)):
        return False
    claim = storage.join(vuri, CLAIM)
    for uri in storage.list_files(vuri):
        if uri != claim and storage.basename(uri) != CLAIM:
            storage.delete(uri)
    storage.delete(claim)
    storage.delete_tree(vuri)  # the empty folders a local root keeps (nothing is left under it on S3)
    return True
