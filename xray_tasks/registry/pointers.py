"""The two race-safe steps of a publish: claiming a version id and swapping the champion pointer.

Both rest on ``conditional.write_bytes_if``: a version id belongs to whoever created its ``CLAIM.json`` (create-only),
and the champion pointer only moves from the state a publisher read (compare-and-swap on its tag).  Payloads carry
the publish id, so a retried request that already landed is recognised as the publisher's own.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from xray_tasks import storage
from xray_tasks.registry import integrity
from xray_tasks.registry.layout import (
    CLAIM,
    VERSION_DIGITS,
    ChampionConflict,
    RegistryError,
    champion_uri,
    format_version,
    now,
    version_uri,
    versions_uri,
)
from xray_tasks.storage import conditional

logger = logging.getLogger(__name__)

MAX_CLAIM_ATTEMPTS = 50


def version_ids(root: str, model_name: str) -> list[str]:
    """Every claimed version id of a model (complete or not), ascending.

    A folder without its ``CLAIM.json`` is not a version: gc removed it, and some S3 servers (SeaweedFS's filer)
    keep listing an emptied folder.
    """
    base = versions_uri(root, model_name)
    names = sorted(n for n in storage.list_dirs(base) if n.isdigit() and len(n) == VERSION_DIGITS)
    return [n for n in names if storage.exists(storage.join(base, n, CLAIM))]


def claim_version(root: str, model_name: str, publish_id: str, details: dict[str, Any]) -> str:
    """Own the next free version id by creating its ``CLAIM.json``; a lost race moves on to the next id.

    Raises:
        RegistryError: ``MAX_CLAIM_ATTEMPTS`` ids in a row were taken by others.
    """
    existing = version_ids(root, model_name)
    number = int(existing[-1]) + 1 if existing else 1
    for _ in range(MAX_CLAIM_ATTEMPTS):
        version = format_version(number)
        claim = {"version": version, "publish_id": publish_id, "claimed_at": now(), **details}
        try:
            conditional.write_bytes_if(
                storage.join(version_uri(root, model_name, version), CLAIM),
                integrity.encode(claim),
                absent=True,
            )
        except conditional.PreconditionFailed:
            logger.info(
                "%s version %s was claimed by another publish; trying the next id", model_name, version
            )
            number += 1
            continue
        logger.info("claimed %s version %s", model_name, version)
        return version
    raise RegistryError(
        f"{model_name}: {MAX_CLAIM_ATTEMPTS} version ids in a row were taken by concurrent publishes"
    )


def read_champion(root: str, model_name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The champion pointer and its tag, or ``(None, None)`` before the first promotion."""
    uri = champion_uri(root, model_name)
    try:
        raw, tag = conditional.read_bytes_tagged(uri)
    except FileNotFoundError:
        return None, None
    try:
        pointer = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # not JSON, not UTF-8, too deep
        raise RegistryError(f"{uri}: champion pointer is not valid JSON ({exc})") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise RegistryError(f"{uri}: champion pointer has no 'version' string (e.g. \"000007\")")
    return pointer, tag


def swap_champion(root: str, model_name: str, pointer: dict[str, Any], expected_tag: str | None) -> None:
    """Point the champion at ``pointer["version"]`` if it is still in the state read as ``expected_tag``.

    Raises:
        ChampionConflict: the pointer moved (or appeared) since it was read; it names the current champion.
    """
    uri = champion_uri(root, model_name)
    payload = integrity.encode(pointer)
    try:
        if expected_tag is None:
            conditional.write_bytes_if(uri, payload, absent=True)
        else:
            conditional.write_bytes_if(uri, payload, tag=expected_tag)
    except conditional.PreconditionFailed:
        current, _ = read_champion(root, model_name)
        now_at = current["version"] if current else "nothing"
        before = pointer.get("previous") or "no champion"
        raise ChampionConflict(
            f"{model_name}: the champion changed while this publish ran (it decided against {before}, the champion "
            f"is now {now_at}); version {pointer['version']} was not promoted: publish again to gate it against "
            f"the new champion"
        ) from None
    logger.info("%s champion -> version %s", model_name, pointer["version"])
