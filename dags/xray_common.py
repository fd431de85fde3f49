"""What the xray DAGs share: the Assets, default task arguments, where settings come from, running a stage.

Settings are resolved at run time by :func:`xray_tasks.settings.resolve`, the same resolver the Models page uses:
a non-empty DAG param, the Airflow Variable ``xray_<name>``, the Airflow config option ``[xray] <name>``
(``AIRFLOW__XRAY__<NAME>``), the environment variable ``XRAY_<NAME>``, then a default under
``$AIRFLOW_HOME/xray``.  Nothing machine-specific is written in the DAG files, and nothing heavy is imported at
parse time: stages run as child processes of the ``xray-tasks`` CLI (:mod:`xray_tasks.runner`), so TensorFlow
never loads into a worker.

Object-storage credentials come from the Airflow connection named by ``xray_s3_conn_id`` (default ``xray_s3``,
type ``aws``: login = access key, password = secret key, extra ``endpoint_url`` for MinIO / any S3 API,
``region_name``); without such a connection the stage inherits the worker's own environment.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, BaseHook, Variable, conf

# Names, defaults and order only: no Airflow and nothing heavy behind this import.
from xray_tasks.settings import Sources, check_run_conf, resolve

log = logging.getLogger("xray.dags")

SHARDS = Asset(name="xray_shards", uri="xray://shards", group="xray")
"""The committed, validated shard set; its events carry ``{"workspace", "images", ...}`` in ``extra``."""
MODEL = Asset(name="xray_model", uri="xray://model", group="xray")
"""A model version published to the registry; its events carry ``{"registry", "model_name", "version"}``."""

TAGS = ["xray"]

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "xray",
    # Retries cover flaky object storage and lost workers; stage failures on bad input fail the same way
    # every time, so tests and the demo turn them off with XRAY_TASK_RETRIES=0.
    "retries": int(os.environ.get("XRAY_TASK_RETRIES", "2")),
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=30),
}

LIGHT_TIMEOUT = timedelta(minutes=15)
HEAVY_TIMEOUT = timedelta(hours=12)


def _variable(key: str) -> str | None:
    # Inside a task the Task SDK's Variable asks the API server, which reads the secrets backends and the database.
    return Variable.get(key, default=None)


def _config(name: str) -> str | None:
    return conf.get("xray", name, fallback=None)


def ingest_schedule() -> str | None:
    """``xray_ingest``'s schedule: Airflow config ``[xray] ingest_schedule`` (``AIRFLOW__XRAY__INGEST_SCHEDULE``),
    a cron expression, a preset or ``none`` (the default: manual runs only).  Read at parse time from the
    configuration alone: no Variable, no database call.

    Raises:
        ValueError: the value is none of those (the DAG file then fails to import with this message).
    """
    from xray_tasks.settings import parse_schedule

    return parse_schedule(conf.get("xray", "ingest_schedule", fallback=None))


def feature_groups(params: Mapping[str, Any] | None = None) -> int:
    """How many mapped ``features`` tasks share the shards: setting ``feature_groups`` (Variable
    ``xray_feature_groups``, config ``[xray] feature_groups``, env ``XRAY_FEATURE_GROUPS``), by default the gpu
    pool's size as the deployment declares it (``XRAY_GPU_SLOTS``), else 1.

    Raises:
        ValueError: not a positive whole number.
    """
    text = setting("feature_groups", params).strip()
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise ValueError(f"setting feature_groups: {text!r} is not a whole number of groups from 1 to 256")
    return int(text)


def ingest_parallelism() -> int | None:
    """How many archives one ``xray_ingest`` run shards at once: Airflow config ``[xray] ingest_parallelism``
    (``AIRFLOW__XRAY__INGEST_PARALLELISM``), a number or ``workers`` (the default: no cap of the DAG's own, so the
    ``default`` queue's worker slots decide: 12 archives on three 4-slot workers go at once).  Read at parse time
    from the configuration alone.

    Raises:
        ValueError: neither (the DAG file then fails to import with this message).
    """
    from xray_tasks.settings import parse_parallelism

    return parse_parallelism(conf.get("xray", "ingest_parallelism", fallback=None))


SOURCES = Sources(variable=_variable, config=_config, environ=os.environ)
"""Where a task looks settings up; the Models page builds its own from the api-server's lookups."""


def setting(name: str, params: Mapping[str, Any] | None = None) -> str:
    """One setting: param, Variable ``xray_<name>``, config ``[xray] <name>``, env ``XRAY_<NAME>``, default.

    A param for the connection id or a location outside the deployment's allow-list raises
    :class:`xray_tasks.settings.NotAllowed` (``[xray] allowed_conn_ids`` / ``allowed_locations``)."""
    return resolve(name, SOURCES, params)


def storage_env(conn_id: str) -> dict[str, str]:
    """The child-process environment for a stage, with credentials from connection ``conn_id`` if it exists."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    from xray_tasks.runner import child_environment, connection_env

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.info("no connection %r: the stage uses this worker's own storage environment", conn_id)
        return child_environment({})
    log.info("storage credentials from connection %r", conn_id)
    return child_environment(connection_env(conn.login, conn.password, conn.extra_dejson))


def run(
    stage: str,
    args: Sequence[str],
    params: Mapping[str, Any] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``xray-tasks STAGE ARGS...`` in a child process; its log streams into the task log.

    Returns the stage's JSON summary (what goes to XCom).  A failing stage raises
    :class:`xray_tasks.runner.StageFailed` carrying the stage's own error message, which fails the task.  The
    task's ``execution_timeout`` interrupts the wait, and the runner then kills the stage.  ``extra_env`` (a
    secret such as the signing key) goes into the child's environment only, and is masked in what it logs.
    """
    from xray_tasks.runner import run_stage

    check_run_conf(
        params, SOURCES
    )  # the whole run conf against the deployment's allow-lists, before any work
    env = {**storage_env(setting("s3_conn_id", params)), **(extra_env or {})}
    summary = run_stage(stage, args, env=env, log=log.info)
    _record_usage(stage, summary)
    return summary


STAGE_USAGE_KEY = "xray_stages"
"""XCom key of a task's stage processes: ``[{"stage", "elapsed_s", "cpu_s", "peak_rss_mb", "ended_at"}]``, one
entry per stage the task ran (``plan`` runs ``fingerprint``, ``stage_candidate`` runs ``publish`` and ``models
show``...), ``ended_at`` in Unix seconds.  What each cost, on the task's XCom tab; ``bench/scale.py`` counts the
time in stages from it."""

_usage: dict[Any, list[dict[str, Any]]] = {}  # per task instance id: its stages so far


def _record_usage(stage: str, summary: Mapping[str, Any]) -> None:
    import time

    from airflow.sdk import get_current_context

    try:
        ti = get_current_context()["ti"]
    except RuntimeError:  # outside a running task (a test calling run directly): nothing to record it on
        return
    stages = _usage.setdefault(ti.id, [])
    stages.append(
        {
            "stage": stage,
            "elapsed_s": summary.get("_elapsed_s"),
            "cpu_s": summary.get("_cpu_s"),
            "peak_rss_mb": summary.get("_peak_rss_mb"),
            "ended_at": round(time.time(), 3),
        }
    )
    ti.xcom_push(key=STAGE_USAGE_KEY, value=stages)


def config_args(params: Mapping[str, Any] | None, *paths: str) -> list[str]:
    """``--profile`` plus ``--NAME VALUE`` for each named path setting (``workspace``, ``registry``...)."""
    args = ["--profile", setting("profile", params)]
    for name in paths:
        args += [f"--{name.replace('_', '-')}", setting(name, params)]
    return args


def deployment_overrides() -> dict[str, Any]:
    """Config keys set for every training run of this deployment: the setting ``overrides`` (a JSON object, from
    Variable ``xray_overrides``, config ``[xray] overrides`` or env ``XRAY_OVERRIDES``); the run's own params and
    ``overrides`` param win over them.

    Raises:
        ValueError, TypeError: the value is not JSON, or not a JSON object.
    """
    raw = setting("overrides")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"xray_overrides is not valid JSON ({exc.msg}): {raw[:200]!r}") from None
    if not isinstance(value, dict):
        raise TypeError(f"xray_overrides must be a JSON object of dotted keys, got {raw[:200]!r}")
    return value


TRAINING_PARAMS = {
    "base": "features.base",
    "weights": "features.weights",
    "head_epochs": "head.epochs",
    "head_learning_rate": "head.learning_rate",
    "finetune_epochs": "finetune.epochs",
    "unfreeze_layers": "finetune.unfreeze_layers",
    "finetune_learning_rate": "finetune.learning_rate",
    "target_sensitivity": "evaluate.target_sensitivity",
}
"""Training DAG params -> the config keys they set (``--set KEY=VALUE`` on every stage of the run)."""


def deployment_config():
    """The config this deployment trains under when a run sets nothing: setting ``profile`` (Variable, ``[xray]``
    or env, never the run's param) with the deployment-wide ``overrides``."""
    from xray_tasks.config import override, profile

    return override(profile(setting("profile")), deployment_overrides())


def plan_training(
    params: Mapping[str, Any], run_id: str, event: Mapping[str, Any] | None, actor: str | None = None
) -> dict[str, Any]:
    """Resolve and validate everything a training run needs, before any heavy work starts.

    The workspace is the param, else the one the triggering ``xray_shards`` event names, else the setting.  The
    run directory is derived from the DAG run id, so a retried task resumes the same run.

    Governance (:mod:`xray_tasks.governance`): the gate and approval policies are the deployment's
    (:func:`deployment_config`).  A run whose params leave the gate policy different from the deployment's is a
    forced publish: it needs ``force_reason`` and a triggering user, and the keys it changed are recorded with the
    decision.  ``approval.*`` cannot be set by a run.

    Raises:
        ValueError: an unknown or invalid config key/value, a model name the registry would refuse, a forced
            publish without a reason or without a user, or a run setting ``approval.*``.
    """
    from xray_tasks.config import override, profile, to_dict
    from xray_tasks.governance import check_run_overrides, govern
    from xray_tasks.registry.layout import check_name
    from xray_tasks.workspace import Workspace

    workspace = params.get("workspace") or (event or {}).get("workspace") or setting("workspace")
    run_overrides = dict(params.get("overrides") or {})
    check_run_overrides(run_overrides)
    assignments = deployment_overrides()
    assignments.update(
        {key: params[name] for name, key in TRAINING_PARAMS.items() if params.get(name) not in (None, "")}
    )
    assignments.update(run_overrides)
    name = setting("profile", params)
    cfg = override(profile(name), assignments)  # raises ValueError naming the bad key or value
    deployment = deployment_config()
    ruling = govern(
        cfg,
        deployment,
        force_publish=bool(params.get("force_publish")),
        reason=str(params.get("force_reason") or ""),
        actor=actor,
    )
    # A name from a Variable or the environment skipped the param's schema: refuse it now, not after training.
    model_name = check_name(setting("model_name", params))
    retrain_reason = str(params.get("retrain_reason") or "").strip() if params.get("force_retrain") else ""
    if params.get("force_retrain") and not retrain_reason:
        raise ValueError(
            "force_retrain needs a retrain_reason: it is recorded in the run and the version's decision log"
        )
    plan = {
        "workspace": workspace,
        "registry": setting("registry", params),
        "model_name": model_name,
        "profile": name,
        "s3_conn_id": setting("s3_conn_id", params),
        "feature_groups": feature_groups(params),
        "sets": [arg for key, value in assignments.items() for arg in ("--set", f"{key}={value}")],
        "run_dir": Workspace(workspace).run(run_id).root,
        "forced": ruling.forced,
        "force_reason": ruling.reason,
        "changed_keys": list(ruling.changed_keys),
        "actor": f"airflow:{actor or 'unknown'}",
        # The deployment's gate policy: publish gets it as --config, so it can tell a run's --set gate.* changes
        # from the deployment's own overrides (which the run's --set repeats).
        "deployment_gate": to_dict(deployment.gate),
        "approval": {
            "policy": deployment.approval.policy,
            "timeout_hours": deployment.approval.timeout_hours,
        },
    }
    plan.update(fingerprint_lookup(plan, retrain_reason))
    log.info("training plan: %s", plan)
    return plan


def fingerprint_lookup(plan: Mapping[str, Any], retrain_reason: str = "") -> dict[str, Any]:
    """The run's fingerprint and the complete registry version that already has it (``unchanged``), if any.

    With a ``retrain_reason`` (``force_retrain``) the reason and the actor are recorded in the run first.
    """
    args = ["--profile", plan["profile"], "--workspace", plan["workspace"], "--registry", plan["registry"]]
    args += ["--model-name", plan["model_name"], *plan["sets"]]
    if retrain_reason:
        args += ["--run-dir", plan["run_dir"], "--retrain-reason", retrain_reason, "--actor", plan["actor"]]
    result = run("fingerprint", args, plan)
    if result.get("fingerprint") is None:
        log.warning(
            "no fingerprint (%s): training goes on and its first stage reports it", result.get("problem")
        )
    return {
        "fingerprint": (result.get("fingerprint") or {}).get("digest"),
        "unchanged": result.get("match"),
        "retrain_reason": retrain_reason,
    }


def proceed_with_training(plan: Mapping[str, Any]) -> bool:
    """False (skip every heavy task, emit nothing) when a complete version already has the plan's fingerprint,
    unless ``force_retrain`` gave a reason; the log says which version stands and its decision."""
    match = plan.get("unchanged")
    if not match:
        log.info("fingerprint %s is new: training", (plan.get("fingerprint") or "(none)")[:12])
        return True
    if plan.get("retrain_reason"):
        log.info(
            "fingerprint %s unchanged since version %s (%s); retraining anyway (force_retrain): %s",
            plan["fingerprint"][:12],
            match["version"],
            match["decision"],
            plan["retrain_reason"],
        )
        return True
    log.info(
        "unchanged since version %s (%s%s): fingerprint %s (data, config, code and base weights) is already in the "
        "registry; skipping training, nothing is published or announced (force_retrain with a reason overrides)",
        match["version"],
        match["decision"],
        ", champion" if match.get("champion") else "",
        plan["fingerprint"][:12],
    )
    return False
