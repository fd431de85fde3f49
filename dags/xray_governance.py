"""Governed promotion in the training DAG: the signing secret, what a reviewer sees, the approval and its outcome.

A candidate is staged in the registry (complete, verified, signed when a key is configured, not champion), then
waits in ``approval``: an :class:`~airflow.providers.standard.operators.hitl.ApprovalOperator` whose body shows the
candidate against the champion, answered on Airflow's required-actions page.  Under the deployment's approval
policy ``auto`` (profile ``demo``) nobody is asked and the candidate is approved by the policy.  A reviewer's
Reject, or no answer before the policy's timeout, is recorded in the registry's decision log with who and the
comment.  The signing key comes from the Airflow connection ``xray_signing`` (its password, or extra
``private_key``): it reaches the publish stage's environment only, and is masked in every log.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseHook, Param, conf
from airflow.sdk.exceptions import AirflowSkipException
from xray_common import log, run

SIGNING_CONN_ID = "xray_signing"
MODELS_ROUTE = "plugin/models"
RESPONSE_KEY = "response"
"""XCom key of the approval's answer, pushed before the operator skips its downstream on Reject."""


def signing_env() -> dict[str, str]:
    """``{"XRAY_SIGNING_KEY": PEM}`` from connection ``xray_signing``, or ``{}`` without that connection.

    Raises:
        ValueError: the connection exists but holds no key.
    """
    from airflow.sdk.exceptions import AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    try:
        conn = BaseHook.get_connection(SIGNING_CONN_ID)
    except AirflowNotFoundException:
        log.info("no connection %r: the version is published unsigned", SIGNING_CONN_ID)
        return {}
    key = conn.password or (conn.extra_dejson or {}).get("private_key") or ""
    if not key.strip():
        raise ValueError(
            f"connection {SIGNING_CONN_ID!r} holds no private key: put the PEM in its password or extra private_key"
        )
    mask_secret(key)
    for line in key.splitlines():
        if len(line.strip()) >= 8 and "-----" not in line:
            mask_secret(line.strip())
    log.info("signing key from connection %r (not shown)", SIGNING_CONN_ID)
    return {"XRAY_SIGNING_KEY": key}


def models_url() -> str:
    """The Models page in the UI (the plugin's external view), absolute when ``[api] base_url`` is set."""
    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}/{MODELS_ROUTE}" if base else f"/{MODELS_ROUTE}"


def review(plan: dict[str, Any], staged: dict[str, Any]) -> str:
    """The approval body for a staged candidate: it against the champion, the gate's checks, the Models page."""
    from xray_tasks.contracts import Metrics
    from xray_tasks.evaluation.compare import review_markdown

    where = ["--registry", plan["registry"], "--model-name", plan["model_name"], "--format", "json"]
    candidate = run("models", ["show", *where, "--version", staged["version"]], plan)
    champion = None
    if staged.get("previous_champion"):
        champion = run("models", ["show", *where, "--version", staged["previous_champion"]], plan)
    record = next(
        (d for d in reversed(candidate.get("decisions") or []) if d.get("gate")),
        {},
    )
    forced = None
    if plan.get("forced"):
        forced = {"by": plan["actor"], "reason": plan["force_reason"], "changed_keys": plan["changed_keys"]}
    return review_markdown(
        plan["model_name"],
        staged["version"],
        Metrics.from_dict(candidate["metrics"], where=f"version {staged['version']} metrics.json"),
        record.get("gate"),
        staged.get("previous_champion"),
        Metrics.from_dict(champion["metrics"], where="champion metrics.json") if champion else None,
        models_url(),
        forced,
    )


def outcome(response: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the approval's XCom says (:func:`xray_tasks.governance.approval_outcome`)."""
    from xray_tasks.governance import approval_outcome

    return approval_outcome(response, approve=ApprovalOperator.APPROVE)


class CandidateApproval(ApprovalOperator):
    """A reviewer's sign-off on the candidate the ``candidate_task`` staged (its XCom: the publish summary plus
    ``review``, ``subject`` and the deployment's ``approval`` policy).

    Skipped when nothing was staged (the gate rejected the run); approved by the policy under ``auto``; else the
    task waits for a response on the required-actions page for the policy's ``timeout_hours``, after which the
    default answer, Reject, is taken (and recorded as ``approval_timed_out``).
    """

    def __init__(self, *, candidate_task: str, **kwargs: Any) -> None:
        pull = f"ti.xcom_pull(task_ids='{candidate_task}')"
        kwargs.pop("params", None)  # the DAG's params, handed in by apply_defaults: the form has its own
        # The wait is bounded by the policy's response_timeout (set in execute); the DAG's execution_timeout would
        # be taken for it, with a deprecation warning in every task log of the DAG (HITLOperator, Airflow 3.3).
        kwargs["execution_timeout"] = None
        super().__init__(
            subject="{{ " + pull + "['subject'] }}",
            body="{{ " + pull + "['review'] }}",
            defaults=ApprovalOperator.REJECT,
            params={
                "comment": Param(
                    "",
                    type="string",
                    title="Comment",
                    description="Why you approve or reject (recorded in the registry's decision log)",
                )
            },
            **kwargs,
        )
        self.candidate_task = candidate_task

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # On Reject the operator skips its downstream by raising (the Task SDK's skip), so it never returns and
        # no return value reaches XCom: the answer is pushed first, for record_rejection.
        if "error" not in event:
            responded_at = event.get("responded_at")
            context["ti"].xcom_push(
                key=RESPONSE_KEY,
                value={
                    "chosen_options": list(event.get("chosen_options") or []),
                    "params_input": dict(event.get("params_input") or {}),
                    "responded_by_user": event.get("responded_by_user"),
                    "responded_at": getattr(responded_at, "isoformat", lambda: responded_at)(),
                },
            )
        return super().execute_complete(context, event)

    def execute(self, context: Any) -> Any:
        from airflow.sdk.timezone import utcnow

        staged = context["ti"].xcom_pull(task_ids=self.candidate_task) or {}
        if not staged.get("review"):
            raise AirflowSkipException(
                f"nothing to approve: version {staged.get('version')} was {staged.get('decision')}"
            )
        policy = staged["approval"]
        if policy["policy"] == "auto":
            from xray_tasks.governance import AUTO_ACTOR

            log.info(
                "approval policy auto: %s approved version %s, no reviewer", AUTO_ACTOR, staged["version"]
            )
            answer = {
                "chosen_options": [ApprovalOperator.APPROVE],
                "params_input": {"comment": "approval policy auto (deployment profile)"},
                "responded_at": utcnow().isoformat(),
                "responded_by_user": None,
                "auto": True,
            }
            context["ti"].xcom_push(key=RESPONSE_KEY, value=answer)
            return answer
        self.response_timeout = timedelta(hours=float(policy["timeout_hours"]))
        log.info(
            "version %s waits for a reviewer (timeout %s h) on the required-actions page",
            staged["version"],
            policy["timeout_hours"],
        )
        return super().execute(context)
