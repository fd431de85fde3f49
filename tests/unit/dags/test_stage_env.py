"""What a stage process inherits from its Airflow worker (dags/xray_common.run -> xray_tasks.runner): the storage
environment and ordinary variables, never Airflow's own secrets."""

from __future__ import annotations

import json
import sys

import pytest
from support import REPO

from xray_tasks import runner

WORKER_SECRETS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:db-Secret-1@pg/airflow",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": "cat /run/secrets/db",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-Secret-2",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-Secret-3",
    "AIRFLOW__API__SECRET_KEY": "api-Secret-4",
    "AIRFLOW__CELERY__BROKER_URL": "redis://:redis-Secret-5@redis:6379/0",
    "AIRFLOW__CELERY__RESULT_BACKEND": "db+postgresql://airflow:db-Secret-1@pg/airflow",
    "AIRFLOW__WEBSERVER__SECRET_KEY": "web-Secret-6",
    "AIRFLOW_CONN_XRAY_S3": '{"conn_type": "aws", "password": "conn-Secret-7"}',
    "AIRFLOW_VAR_XRAY_TOKEN": "var-Secret-8",
}
KEPT = {
    "PATH": "/usr/bin:/bin",
    "AIRFLOW_HOME": "/opt/airflow",
    "AIRFLOW__XRAY__PROFILE": "demo",
    "LANG": "C.UTF-8",
}


@pytest.fixture
def xray_common(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "dags"))  # as Airflow's dag bundle does
    sys.modules.pop("xray_common", None)
    import xray_common

    return xray_common


def child_env_of_run(xray_common, monkeypatch, connection=None) -> dict[str, str]:
    """The environment ``xray_common.run`` hands to the stage process (run_stage captured, nothing started)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    def get_connection(conn_id):
        if connection is None:
            raise AirflowNotFoundException(conn_id)
        return connection

    seen: dict[str, dict[str, str]] = {}
    monkeypatch.setattr(xray_common.BaseHook, "get_connection", staticmethod(get_connection))
    monkeypatch.setattr(runner, "run_stage", lambda stage, args, env, log: seen.setdefault("env", env) and {})
    xray_common.run("list-archives", ["s3://b/src"], {"s3_conn_id": "xray_s3"})
    return seen["env"]


def test_a_stage_never_inherits_airflow_secrets(xray_common, monkeypatch):
    for key, value in {**WORKER_SECRETS, **KEPT, "AWS_ACCESS_KEY_ID": "worker-key"}.items():
        monkeypatch.setenv(key, value)
    env = child_env_of_run(xray_common, monkeypatch)
    leaked = sorted(set(WORKER_SECRETS) & set(env))
    assert not leaked, leaked
    assert not [v for v in env.values() if any(s in v for s in ("Secret-1", "Secret-3", "Secret-7"))]
    assert {k: env[k] for k in KEPT} == KEPT
    assert env["AWS_ACCESS_KEY_ID"] == "worker-key"  # no connection: the worker's own storage environment


def test_with_a_connection_the_stage_gets_its_storage_keys_and_still_no_airflow_secrets(
    xray_common, monkeypatch
):
    from types import SimpleNamespace

    for key, value in WORKER_SECRETS.items():
        monkeypatch.setenv(key, value)
    conn = SimpleNamespace(
        login="AKIDCONN", password="conn-key-9", extra_dejson={"endpoint_url": "http://s3:8333"}
    )
    env = child_env_of_run(xray_common, monkeypatch, conn)
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("AKIDCONN", "conn-key-9")
    assert not sorted(set(WORKER_SECRETS) & set(env))


def test_the_real_child_process_sees_no_airflow_secret(tmp_path):
    """End to end through run_stage: a stand-in interpreter prints the environment it was started with."""
    python = tmp_path / "python"
    python.write_text(
        "#!/usr/bin/env python3\nimport json, os\nprint(json.dumps({'env': sorted(os.environ)}))\n"
    )
    python.chmod(0o755)
    base = {**WORKER_SECRETS, **KEPT, "PATH": "/usr/bin:/bin"}
    summary = runner.run_stage("anything", env=runner.child_environment({}, base), python=str(python))
    assert not sorted(set(WORKER_SECRETS) & set(summary["env"]))
    assert "AIRFLOW__XRAY__PROFILE" in summary["env"] and "PATH" in summary["env"]
    assert json.dumps(summary).count("Secret") == 0


def test_a_run_conf_outside_the_allow_list_fails_before_any_stage_starts(xray_common, monkeypatch):
    from xray_tasks.settings import NotAllowed

    monkeypatch.setenv("AIRFLOW__XRAY__ALLOWED_LOCATIONS", "s3://xray/")
    monkeypatch.setattr(
        xray_common,
        "SOURCES",
        xray_common.Sources(
            config=lambda n: None,
            environ={"XRAY_ALLOWED_LOCATIONS": "s3://xray/", "XRAY_ALLOWED_CONN_IDS": "xray_s3"},
        ),
    )
    started: list[str] = []
    monkeypatch.setattr(runner, "run_stage", lambda stage, *a, **k: started.append(stage) or {})
    for conf, message in (
        ({"s3_conn_id": "aws_default"}, "allowed allowed_conn_ids: 'xray_s3'"),
        (
            {"source": "s3://xray/src", "workspace": "s3://elsewhere/ws"},
            "allowed allowed_locations: 's3://xray/'",
        ),
    ):
        with pytest.raises(NotAllowed, match=message):
            xray_common.run("ingest-archive", ["--workspace", "s3://elsewhere/ws"], conf)
    assert started == []


class _TaskInstance:
    def __init__(self, ti_id: str):
        self.id = ti_id
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = json.loads(json.dumps(value))  # what the XCom backend would store


def test_each_stage_a_task_runs_is_recorded_on_its_xcom(xray_common, monkeypatch):
    import airflow.sdk

    summaries = iter(
        [{"_elapsed_s": 1.25, "_cpu_s": 1.0, "_peak_rss_mb": 180.0, "ok": 1}, {"_elapsed_s": 0.5}]
    )
    monkeypatch.setattr(xray_common.BaseHook, "get_connection", staticmethod(lambda conn_id: _raise(conn_id)))
    monkeypatch.setattr(runner, "run_stage", lambda stage, args, env, log: next(summaries))
    first, second = _TaskInstance("ti-1"), _TaskInstance("ti-2")
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: {"ti": first})
    assert xray_common.run("fingerprint", [], {})["ok"] == 1  # the summary itself is returned untouched
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: {"ti": second})
    xray_common.run("models", ["show"], {})

    (entry,) = first.pushed[xray_common.STAGE_USAGE_KEY]
    assert {k: entry[k] for k in ("stage", "elapsed_s", "cpu_s", "peak_rss_mb")} == {
        "stage": "fingerprint",
        "elapsed_s": 1.25,
        "cpu_s": 1.0,
        "peak_rss_mb": 180.0,
    }
    (other,) = second.pushed[xray_common.STAGE_USAGE_KEY]  # another task instance starts a list of its own
    assert other["stage"] == "models" and other["elapsed_s"] == 0.5 and other["ended_at"] >= entry["ended_at"]


def test_a_second_stage_of_the_same_task_is_appended(xray_common, monkeypatch):
    import airflow.sdk

    monkeypatch.setattr(xray_common.BaseHook, "get_connection", staticmethod(lambda conn_id: _raise(conn_id)))
    monkeypatch.setattr(runner, "run_stage", lambda stage, args, env, log: {"_elapsed_s": 2.0})
    ti = _TaskInstance("ti-3")
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: {"ti": ti})
    xray_common.run("publish", [], {})
    xray_common.run("models", ["show"], {})
    assert [e["stage"] for e in ti.pushed[xray_common.STAGE_USAGE_KEY]] == ["publish", "models"]


def test_outside_a_task_nothing_is_recorded_and_the_stage_still_runs(xray_common, monkeypatch):
    monkeypatch.setattr(xray_common.BaseHook, "get_connection", staticmethod(lambda conn_id: _raise(conn_id)))
    monkeypatch.setattr(runner, "run_stage", lambda stage, args, env, log: {"_elapsed_s": 2.0, "n": 3})
    assert xray_common.run("validate", [], {})["n"] == 3
    assert xray_common._usage == {}


def _raise(conn_id):
    from airflow.sdk.exceptions import AirflowNotFoundException

    raise AirflowNotFoundException(conn_id)
