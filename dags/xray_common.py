"""What the xray DAGs share: the Assets, default task arguments, where settings come from, running a stage.

Settings are resolved at run time, in this order: a non-empty DAG param, the Airflow Variable ``xray_<name>``, the
environment variable ``XRAY_<NAME>``, then a default under ``$AIRFLOW_HOME/xray``.  Nothing machine-specific is
written in the DAG files, and nothing heavy is imported at parse time: stages run as child processes of the
``xray-tasks`` CLI (:mod:`xray_tasks.runner`), so TensorFlow never loads into a worker.

Object-storage credentials come from the Airflow connection named by ``xray_s3_conn_id`` (default ``xray_s3``,
type ``aws``: login = access key, password = secret key, extra ``endpoint_url`` for MinIO / any S3 API,
``region_name``); without such a connection the stage inherits the worker's own environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, BaseHook, Variable

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


def _default(name: str) -> str:
    home = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
    return {
        "workspace": os.path.join(home, "xray", "workspace"),
        "registry": os.path.join(home, "xray", "registry"),
        "model_name": "xray-triage",
        "profile": "full",
        "s3_conn_id": "xray_s3",
    }.get(name, "")


def setting(name: str, params: Mapping[str, Any] | None = None) -> str:
    """One setting: the DAG param ``name`` if set, else Variable ``xray_<name>``, env ``XRAY_<NAME>``, default."""
    value = (params or {}).get(name)
    if value not in (None, ""):
        return str(value)
    value = Variable.get(f"xray_{name}", default=None)
    if value not in (None, ""):
        return str(value)
    return os.environ.get(f"XRAY_{name.upper()}") or _default(name)


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

    return run_stage(stage, args, env=storage_env(setting("s3_conn_id", params)), log=log.info)


def config_args(params: Mapping[str, Any] | None, *paths: str) -> list[str]:
    """``--profile`` plus ``--NAME VALUE`` for each named path setting (``workspace``, ``registry``...)."""
    args = ["--profile", setting("profile", params)]
    for name in paths:
        args += [f"--{name.replace('_', '-')}", setting(name, params)]
    return args
