"""What a training run may ask of the deployment's policies: the rules of a forced publish.

The gate policy and the approval policy belong to the deployment (config, Airflow's ``[xray]`` section, or a
Variable only admins set).  A run that leaves the gate policy different from the deployment's is a *forced*
publish: it needs a reason and an actor, and the keys it changed are recorded with the decision.  A run cannot
change the approval policy at all.  Pure functions of two configurations; the training DAG's ``plan`` applies them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xray_tasks.config import PipelineConfig, to_dict
from xray_tasks.errors import BadInput

GOVERNED_SECTION = "gate"
"""The section whose every key is the deployment's: changing one makes a forced publish."""
DEPLOYMENT_ONLY = ("approval",)
"""Sections a run may not change at all."""


@dataclass(frozen=True)
class Governance:
    """What the run's request amounts to."""

    forced: bool
    """The publish is forced: asked for (``force_publish``) or implied by a changed gate key."""
    changed_keys: tuple[str, ...]
    """Dotted gate keys whose value differs from the deployment's policy."""
    reason: str
    actor: str | None


def changed_keys(section: str, cfg: PipelineConfig, reference: PipelineConfig) -> list[str]:
    """Dotted keys of ``section`` (e.g. ``gate``) whose values differ between ``cfg`` and ``reference``."""
    mine, theirs = to_dict(getattr(cfg, section)), to_dict(getattr(reference, section))
    return sorted(f"{section}.{key}" for key in mine if mine[key] != theirs.get(key))


def check_run_overrides(overrides: Mapping[str, Any]) -> None:
    """Refuse a run's ``overrides`` that touch a deployment-only section.

    Raises:
        BadInput: naming the keys.
    """
    refused = sorted(str(k) for k in overrides if str(k).split(".")[0] in DEPLOYMENT_ONLY)
    if refused:
        raise BadInput(
            f"overrides {refused}: the approval policy belongs to the deployment (config, [xray] overrides or "
            "Variable xray_overrides); a run cannot change it"
        )


def govern(
    run_cfg: PipelineConfig,
    deployment: PipelineConfig,
    *,
    force_publish: bool,
    reason: str,
    actor: str | None,
) -> Governance:
    """The forced-publish rule for a run configured as ``run_cfg`` under ``deployment``.

    Raises:
        BadInput: a forced publish without a reason, or without an actor.
    """
    changed = changed_keys(GOVERNED_SECTION, run_cfg, deployment)
    reason = (reason or "").strip()
    forced = bool(force_publish) or bool(changed)
    if forced and not reason:
        if changed:
            raise BadInput(
                f"this run changes the deployment's gate policy ({', '.join(changed)}), which makes it a forced "
                "publish: it needs a force_reason, recorded with the decision in the registry"
            )
        raise BadInput("force_publish needs a force_reason: it is recorded with the decision in the registry")
    if forced and not (actor or "").strip():
        raise BadInput(
            "a forced publish needs the user who triggered the run (it is recorded); this run has none: "
            "trigger it from the UI or the REST API as a user"
        )
    return Governance(forced, tuple(changed), reason if forced else "", actor)


AUTO_ACTOR = "policy:auto"
"""Who approved a candidate under approval policy ``auto``."""
TIMEOUT_ACTOR = "airflow:approval-timeout"
"""Who "answered" when the approval's timeout passed with no response."""


def approval_outcome(response: dict[str, Any] | None, approve: str = "Approve") -> dict[str, Any] | None:
    """What an Airflow approval's result (its XCom) means for the registry: ``{decision, actor, comment}``.

    ``decision`` is ``approved``, ``rejected_by_reviewer`` or ``approval_timed_out`` (the default answer taken by
    the scheduler when the timeout passed: it has no responding user); ``actor`` is ``airflow:<user>``, or
    :data:`AUTO_ACTOR` / :data:`TIMEOUT_ACTOR`.  None when the approval did not run (nothing was staged).
    """
    if not response or not response.get("chosen_options"):
        return None
    comment = str((response.get("params_input") or {}).get("comment") or "").strip()
    user = response.get("responded_by_user")
    if response.get("auto"):
        actor = AUTO_ACTOR
    elif user:
        actor = f"airflow:{user.get('name') or user.get('id')}"
    else:
        actor = TIMEOUT_ACTOR
    if response["chosen_options"][0] == approve:
        decision = "approved"
    else:
        decision = "rejected_by_reviewer" if user else "approval_timed_out"
    return {"decision": decision, "actor": actor, "comment": comment}
