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


def run(stage: str, args: Sequence[str], params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``xray-tasks STAGE ARGS...`` in a child process; its log streams into the task log.

    Returns the stage's JSON summary (what goes to XCom).  A failing stage raises
    :class:`xray_tasks.runner.StageFailed` carrying the stage's own error message, which fails the task.  The
    task's ``execution_timeout`` interrupts the wait, and the runner then kills the stage.
    """
    from xray_tasks.runner import run_stage

    check_run_conf(
        params, SOURCES
    )  # the whole run conf against the deployment's allow-lists, before any work
    return run_stage(stage, args, env=storage_env(setting("s3_conn_id", params)), log=log.info)


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


def plan_training(
    params: Mapping[str, Any], run_id: str, event: Mapping[str, Any] | None, actor: str | None = None
) -> dict[str, Any]:
    """Resolve and validate everything a training run needs, before any heavy work starts.

    The workspace is the param, else the one the triggering ``xray_shards`` event names, else the setting.  The
    run directory is derived from the DAG run id, so a retried task resumes the same run.

    Raises:
        ValueError: an unknown or invalid config key/value, a model name the registry would refuse, or
            ``force_publish`` without a reason.
    """
    from xray_tasks.config import override, profile
    from xray_tasks.registry.layout import check_name
    from xray_tasks.workspace import Workspace

    workspace = params.get("workspace") or (event or {}).get("workspace") or setting("workspace")
    assignments = deployment_overrides()
    assignments.update(
        {key: params[name] for name, key in TRAINING_PARAMS.items() if params.get(name) not in (None, "")}
    )
    assignments.update(params.get("overrides") or {})
    name = setting("profile", params)
    override(profile(name), assignments)  # raises ValueError naming the bad key or value
    # A name from a Variable or the environment skipped the param's schema: refuse it now, not after training.
    model_name = check_name(setting("model_name", params))
    if params.get("force_publish") and not str(params.get("force_reason") or "").strip():
        raise ValueError(
            "force_publish needs a force_reason: it is recorded with the decision in the registry"
        )
    plan = {
        "workspace": workspace,
        "registry": setting("registry", params),
        "model_name": model_name,
        "profile": name,
        "s3_conn_id": setting("s3_conn_id", params),
        "sets": [arg for key, value in assignments.items() for arg in ("--set", f"{key}={value}")],
        "run_dir": Workspace(workspace).run(run_id).root,
        "force_reason": str(params.get("force_reason") or "").strip() if params.get("force_publish") else "",
        "actor": f"airflow:{actor or 'unknown'}",
    }
    log.info("training plan: %s", plan)
    return plan


def champion_of(params: Mapping[str, Any], event: Mapping[str, Any] | None) -> dict[str, Any]:
    """The champion to score with: registry and model from the triggering ``xray_model`` event, else settings.

    Returns the version, its key metrics and every location the scoring task needs.
    """
    from xray_tasks.contracts import Metrics

    event = event or {}
    registry = params.get("registry") or event.get("registry") or setting("registry")
    model_name = params.get("model_name") or event.get("model_name") or setting("model_name")
    conn_id = setting("s3_conn_id", params)
    details = run(
        "models",
        ["show", "--registry", registry, "--model-name", model_name, "--format", "json"],
        {"s3_conn_id": conn_id},
    )
    if event.get("version") and event["version"] != details["version"]:
        # Another publish promoted a newer champion since the event: score with the current one.
        log.info("event announced version %s, the champion is now %s", event["version"], details["version"])
    metrics = Metrics.from_dict(details["metrics"], where=f"{details['uri']}/metrics.json")
    champion = {
        "registry": registry,
        "model_name": model_name,
        "version": details["version"],
        "uri": details["uri"],
        "threshold": metrics.operating_point.threshold,
        "test_auroc": metrics.test.auroc,
        "sensitivity": metrics.test.at_operating_point.recall,
        "healthy_cleared": metrics.test.at_operating_point.healthy_cleared,
        "images": setting("images", params),
        "worklists": setting("worklists", params),
        "s3_conn_id": conn_id,
    }
    log.info(
        "champion %s v%s at %s: test AUROC %.3f, threshold %.3f",
        model_name,
        champion["version"],
        champion["uri"],
        champion["test_auroc"],
        champion["threshold"],
    )
    return champion


def read_text(uri: str, conn_id: str) -> str:
    """A small text object, read in the task itself: ``s3://`` through the Amazon provider's hook and the same
    connection the stages get (its credentials never enter this process's environment), else a local path."""
    from xray_tasks import storage

    if storage.is_s3(uri):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            return storage.read_text(uri)  # no connection: the worker's own environment, as for the stages
        bucket, key = storage.split_s3(uri)
        return S3Hook(aws_conn_id=conn_id).read_key(key, bucket)
    return storage.read_text(uri)


def top_of_worklist(uri: str, rows: int, conn_id: str) -> list[dict[str, str]]:
    """The first ``rows`` rows of a CSV worklist, also written to the task log as a small table."""
    import csv
    import io

    top = list(csv.DictReader(io.StringIO(read_text(uri, conn_id))))[:rows]
    for row in top:
        log.info(
            "%4s  %-40s  %s  %s",
            row.get("rank"),
            row.get("image", "").rsplit("/", 1)[-1],
            row.get("probability") or "-",
            row.get("decision") or row.get("error"),
        )
    return top
