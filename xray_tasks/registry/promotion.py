"""Moving the champion on a person's word: sign-off of a staged candidate, rollback, a forced pin, a rejection.

``promote`` is a compare-and-swap of the champion pointer, like a publish's last step, taken on a version that is
re-verified first (complete, every file's checksum, and under a key policy a trusted signature).  Every call is
one immutable record in the version's decision log naming who, why and the champion it replaced.

Which versions each decision may move to champion:

- ``approved``: a version whose latest decision is ``candidate`` (gate passed, staged) or one that was approved
  before; never one the gate or a reviewer rejected;
- ``rolled_back``: a version that was champion before (an ``approved``, ``forced`` or ``rolled_back`` record);
- ``forced``: any complete, verified version (the reason is recorded as the justification).
"""

from __future__ import annotations

import logging
from typing import Any

from xray_tasks.contracts import DecisionRecord, Forced, PromotionSummary
from xray_tasks.errors import BadInput
from xray_tasks.registry import catalog, pointers, versions
from xray_tasks.registry.layout import (
    ChampionConflict,
    check_name,
    new_id,
    now,
    parse_version,
    pause,
)

logger = logging.getLogger(__name__)

PROMOTE_DECISIONS = ("approved", "rolled_back", "forced")
REJECT_DECISIONS = ("rejected_by_reviewer", "approval_timed_out")
_MOVED_CHAMPION = ("approved", "forced", "rolled_back")
_APPROVABLE = ("candidate", *_MOVED_CHAMPION)
_UNSET: Any = object()


def _latest(history: list[dict[str, Any]]) -> str | None:
    decisions = [d["decision"] for d in history if d["decision"] != "conflict"]
    return decisions[-1] if decisions else None


def _check_eligible(model_name: str, version: str, decision: str, history: list[dict[str, Any]]) -> None:
    latest = _latest(history)
    if decision == "approved" and latest not in _APPROVABLE:
        raise BadInput(
            f"{model_name} version {version}: its latest decision is {latest or 'none'}, not a staged candidate; "
            f"approving it would overrule that: use --decision forced with a reason"
        )
    if decision == "rolled_back" and not any(d["decision"] in _MOVED_CHAMPION for d in history):
        raise BadInput(
            f"{model_name} version {version} was never champion, so it cannot be rolled back to: "
            f"use --decision forced with a reason"
        )


def promote(
    registry: str,
    model_name: str,
    version: str | int,
    *,
    reason: str,
    actor: str | None,
    decision: str = "approved",
    expected_champion: str | None = _UNSET,
    trusted_keys: dict[str, Any] | None = None,
) -> PromotionSummary:
    """Make ``version`` the champion by compare-and-swap after re-verifying it; record who and why.

    Args:
        expected_champion: when given (a version, or ``None`` for "no champion"), refuse unless that is still
            the champion: an approval taken against one champion is not applied against another.
        trusted_keys: key id -> public key; default ``signing.trusted_keys()`` (env, and the signing key's own).

    Raises:
        BadInput: an empty reason, an unknown decision, or a version not eligible for that decision.
        IntegrityError: incomplete, a file not matching, or under a key policy unsigned / unknown key / bad
            signature.
        ChampionConflict: the champion is not ``expected_champion``, or moved during the promotion (recorded).
    """
    check_name(model_name)
    version = parse_version(version)
    if decision not in PROMOTE_DECISIONS:
        raise BadInput(f"decision must be one of {list(PROMOTE_DECISIONS)}, got {decision!r}")
    if not reason or not reason.strip():
        raise BadInput("promoting a version needs a reason (--reason TEXT): it is recorded with who did it")
    who = versions.actor(actor)
    pointer, tag = pointers.read_champion(registry, model_name)
    current = pointer["version"] if pointer else None
    if expected_champion is not _UNSET:
        expected = parse_version(expected_champion) if expected_champion else None
        if current != expected:
            raise ChampionConflict(
                f"{model_name}: the champion is {current or 'nothing'}, not {expected or 'nothing'} as this "
                f"promotion of {version} expected; nothing was changed"
            )
    if current == version:
        logger.info("%s version %s is already the champion: nothing to do", model_name, version)
        return PromotionSummary(
            model_name=model_name,
            version=version,
            previous_champion=current,
            champion=current,
            decision="unchanged",
            promoted=False,
            actor=who,
            decision_record=None,
            key_id=pointer.get("key_id") if pointer else None,
        )
    verified = versions.verify(registry, model_name, version, trusted_keys)
    _check_eligible(model_name, version, decision, catalog.read_decisions(registry, model_name, version))
    record = DecisionRecord(
        decision=decision,
        reasons=(),
        gate=None,
        policy={},
        publish_id=new_id(),
        decided_at=now(),
        run=verified.manifest.get("run", {}).get("uri", ""),
        version=version,
        champion_before=current,
        forced=Forced(by=who, reason=reason.strip()) if decision == "forced" else None,
        actor=who,
        comment=reason.strip(),
        key_id=verified.key_id,
    )
    name = versions.record_decision(registry, model_name, version, record)
    pause("before_promote")
    new_pointer = versions.champion_pointer(model_name, verified, record.publish_id, name, current)
    try:
        pointers.swap_champion(registry, model_name, new_pointer, tag)
    except ChampionConflict as exc:
        versions.record_decision(
            registry,
            model_name,
            version,
            record.replace(decision="conflict", reasons=(str(exc),), decided_at=now()),
        )
        raise
    logger.info("%s champion %s -> %s (%s by %s)", model_name, current, version, decision, who)
    return PromotionSummary(
        model_name=model_name,
        version=version,
        previous_champion=current,
        champion=version,
        decision=decision,
        promoted=True,
        actor=who,
        decision_record=name,
        key_id=verified.key_id,
    )


def reject(
    registry: str,
    model_name: str,
    version: str | int,
    *,
    decision: str = "rejected_by_reviewer",
    actor: str | None,
    comment: str | None = None,
) -> PromotionSummary:
    """Record that a staged candidate was rejected by a reviewer or timed out waiting; the champion stays.

    Raises:
        BadInput: an unknown decision, or the version is the champion (roll back to another one instead).
        IntegrityError: the version is incomplete.
    """
    check_name(model_name)
    version = parse_version(version)
    if decision not in REJECT_DECISIONS:
        raise BadInput(f"decision must be one of {list(REJECT_DECISIONS)}, got {decision!r}")
    who = versions.actor(actor)
    details = catalog.version_details(registry, model_name, version)  # raises for a missing/incomplete one
    current = catalog.champion_version(registry, model_name)
    if current == version:
        raise BadInput(
            f"{model_name} version {version} is the champion: rejecting it would leave it in place; "
            f"promote another version with --decision rolled_back instead"
        )
    record = DecisionRecord(
        decision=decision,
        reasons=(comment.strip(),) if comment and comment.strip() else (),
        gate=None,
        policy={},
        publish_id=new_id(),
        decided_at=now(),
        run=details["manifest"].get("run", {}).get("uri", ""),
        version=version,
        champion_before=current,
        forced=None,
        actor=who,
        comment=comment.strip() if comment and comment.strip() else None,
        key_id=details["signature"]["key_id"],
    )
    name = versions.record_decision(registry, model_name, version, record)
    logger.info("%s version %s: %s by %s; champion stays %s", model_name, version, decision, who, current)
    return PromotionSummary(
        model_name=model_name,
        version=version,
        previous_champion=current,
        champion=current,
        decision=decision,
        promoted=False,
        actor=who,
        decision_record=name,
        key_id=record.key_id,
    )
