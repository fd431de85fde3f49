"""Airflow test harness: a throw-away AIRFLOW_HOME on SQLite, migrated once per session.

DAG files are parsed and run (``dag.test()``) in child processes with that home's environment, so the pytest
process never imports Airflow or picks up its configuration and logging.  Run as a script, this file is that child:
``python tests/airflow_env.py dagbag`` or ``python tests/airflow_env.py run-dag DAG_ID [CONF_JSON]`` prints one
JSON line last (import errors / the run's state, task instances and return values).

Test modules use the session fixture with ``from airflow_env import airflow_home  # noqa: F401``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from support import REPO

DAGS = REPO / "dags"
PLUGINS = REPO / "plugins"
VENV_BIN = Path(sys.executable).parent


def airflow_environ(home: Path, **extra: str) -> dict[str, str]:
    """Our environment pointed at ``home``: SQLite, this repo's DAGs and plugins, no examples, no retries.

    Storage credentials and endpoints of the test session are left out: a DAG that reaches S3 must get them from
    its Airflow connection (tests pass one as ``AIRFLOW_CONN_XRAY_S3``).
    """
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AWS_", "S3_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "XRAY_TASK_RETRIES": "0",
            "XRAY_WORKSPACE": str(home / "xray" / "workspace"),
            "XRAY_REGISTRY": str(home / "xray" / "registry"),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    env.update(extra)
    return env


@dataclass
class DagRunResult:
    """What a ``dag.test()`` child reported, plus everything it printed (the task logs)."""

    state: str
    run_id: str
    tasks: list[dict[str, Any]]
    output: str
    returncode: int
    xcoms: dict[str, Any] = field(default_factory=dict)

    def errors(self) -> str:
        """The stage errors in the output (what a failed assertion should show first)."""
        lines = [
            line
            for line in self.output.splitlines()
            if "StageFailed" in line or "failed (exit status" in line
        ]
        return "\n".join(lines[-10:]) or self.output[-4000:]

    def task_states(self) -> dict[str, str]:
        """``task_id`` (``task_id[label]`` for mapped ones) -> state."""
        out = {}
        for ti in self.tasks:
            key = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['rendered_map_index']}]"
            out[key] = ti["state"]
        return out


class AirflowHome:
    """One migrated AIRFLOW_HOME and the ways tests use it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = airflow_environ(home)
        self.db_path = home / "airflow.db"

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess:
        """``airflow ARGS...`` with this home's environment (plus ``env``)."""
        proc = subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            check=False,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def child(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 1200
    ) -> tuple[dict, str, int]:
        """Run this module as a script in this home; returns (last-line JSON, all output, exit status)."""
        child_env = {**self.env, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO / "tests"), child_env.get("PYTHONPATH")])
        )
        proc = subprocess.run(
            [sys.executable, "-m", "support.airflow_env", *args],
            check=False,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise AssertionError(f"no JSON from {args} (exit {proc.returncode}):\n{proc.stdout[-6000:]}")
        return json.loads(lines[-1]), proc.stdout, proc.returncode

    def dagbag(self) -> dict[str, Any]:
        return self.child("dagbag")[0]

    def run_dag(
        self, dag_id: str, conf: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> DagRunResult:
        """``dag.test(run_conf=conf)`` in a child process."""
        report, output, returncode = self.child("run-dag", dag_id, json.dumps(conf or {}), env=env)
        return DagRunResult(output=output, returncode=returncode, **report)

    def query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        """Read the metadata database directly (no Airflow import in the test process)."""
        with sqlite3.connect(self.db_path) as con:
            con.row_factory = sqlite3.Row
            return con.execute(sql, params).fetchall()

    def asset_events(self, asset_name: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """Events of one asset, oldest first, with ``extra`` decoded; only those a given run emitted if asked."""
        rows = self.query(
            "SELECT e.id, e.extra, e.source_dag_id, e.source_run_id, e.source_task_id FROM asset_event e "
            "JOIN asset a ON a.id = e.asset_id WHERE a.name = ? ORDER BY e.id",
            asset_name,
        )
        events = [{**dict(r), "extra": json.loads(r["extra"] or "{}")} for r in rows]
        return [e for e in events if run_id is None or e["source_run_id"] == run_id]

    def queued_for(self, dag_id: str) -> list[str]:
        """Asset names waiting in the queue that makes the scheduler start an asset-triggered run of ``dag_id``."""
        rows = self.query(
            "SELECT a.name FROM asset_dag_run_queue q JOIN asset a ON a.id = q.asset_id "
            "WHERE q.target_dag_id = ?",
            dag_id,
        )
        return [r["name"] for r in rows]


class ApiServer:
    """``airflow api-server`` on loopback for one home, with simple-auth users whose passwords we know."""

    USERS: ClassVar[dict[str, str]] = {"admin": "admin-pw", "viewer": "viewer-pw"}

    def __init__(self, af: AirflowHome, port: int, env: dict[str, str] | None = None) -> None:
        self.af = af
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        passwords = af.home / "simple_auth_passwords.json"
        passwords.write_text(json.dumps(self.USERS))
        self.env = {
            **af.env,
            **(env or {}),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        }
        self.log_path = af.home / f"api-server-{port}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        log = open(self.log_path, "w")
        # A session of its own: stopping it must take its uvicorn worker processes along.
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "api-server", "-H", "127.0.0.1", "-p", str(self.port), "-w", "1"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"api-server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}"
                )
            try:
                if self.request("/api/v2/monitor/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise TimeoutError(f"api-server not healthy after 120 s:\n{self.log_path.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def request(
        self,
        path: str,
        *,
        token: str | None = None,
        cookie: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) of one HTTP request; a bearer ``token`` or a UI ``_token`` cookie if given."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if cookie:
            headers["Cookie"] = f"_token={cookie}"
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers,
            method="POST" if body is not None else "GET",
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read(), dict(err.headers)

    def token(self, user: str = "viewer") -> str:
        """A JWT from ``POST /auth/token``, as the UI and REST clients get one."""
        status, data, _ = self.request("/auth/token", body={"username": user, "password": self.USERS[user]})
        if status not in (200, 201):
            raise AssertionError(f"login as {user} -> {status}: {data[:300]!r}")
        return json.loads(data)["access_token"]


def migrated_home(home: Path) -> AirflowHome:
    af = AirflowHome(home)
    af.cli("db", "migrate")
    return af


try:
    import pytest
except ImportError:  # run as the child script in an environment without pytest: no fixtures needed
    pytest = None

_SESSION_HOME: list[AirflowHome] = []

if pytest is not None:

    @pytest.fixture(scope="session")
    def airflow_home(tmp_path_factory) -> AirflowHome:
        """A migrated AIRFLOW_HOME shared by the Airflow tests of this session."""
        # Each test module that imports this fixture gets its own copy of it: migrate only once all the same.
        if not _SESSION_HOME:
            _SESSION_HOME.append(migrated_home(tmp_path_factory.mktemp("airflow-home")))
        return _SESSION_HOME[0]

    @pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
    def place(request, tmp_path) -> dict[str, Any]:
        """Where a DAG test keeps its data: a local folder, or a bucket of the suite's S3 server that the tasks
        reach only through the Airflow connection ``xray_s3``.  ``root``, and ``env`` for :meth:`run_dag`."""
        if request.param == "local":
            return {"root": str(tmp_path / "root"), "env": {}}
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        connection = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": server.endpoint, "region_name": "us-east-1"},
        }
        return {"root": bucket, "env": {"AIRFLOW_CONN_XRAY_S3": json.dumps(connection)}}


# ----------------------------------------------------------------------------------------------------------------
# The child side: runs inside the AIRFLOW_HOME environment set above.


def _state(state: Any) -> str:
    return str(getattr(state, "value", state))


def _bag():
    # As the dag-processor and the task runner do in Airflow 3: the bundle's folder goes on sys.path, which is
    # how the DAG files import xray_common.
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name="dags-folder")


def _schedule(dag) -> str:
    """A DAG's schedule as its file states it: the cron expression or preset, or the timetable's class name."""
    return str(getattr(dag.timetable, "expression", None) or type(dag.timetable).__name__)


def _dagbag() -> dict[str, Any]:
    bag = _bag()
    dags = bag.dags.values()
    return {
        "dags": sorted(bag.dag_ids),
        "import_errors": {str(k): v for k, v in bag.import_errors.items()},
        "files": sorted(str(Path(f).name) for f in bag.file_last_changed),
        # What the UI shows on a DAG's and a task's page, and the JSON schema of each param.
        "docs": {d.dag_id: {"dag": d.doc_md, "tasks": {t.task_id: t.doc_md for t in d.tasks}} for d in dags},
        "params": {d.dag_id: {k: d.params.get_param(k).schema for k in d.params} for d in dags},
        # The wiring: each task's operator class (and its bases), upstream tasks and trigger rule.
        "tasks": {
            d.dag_id: {
                t.task_id: {
                    "classes": [c.__name__ for c in type(t).__mro__],
                    "upstream": sorted(t.upstream_task_ids),
                    "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
                    "outlets": [getattr(o, "name", str(o)) for o in t.outlets],
                    "max_active_tis_per_dagrun": t.max_active_tis_per_dagrun,
                }
                for t in d.tasks
            }
            for d in dags
        },
        "schedules": {d.dag_id: _schedule(d) for d in dags},
    }


def _run_dag(dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = _bag()
    if dag_id not in bag.dag_ids:
        raise SystemExit(f"no DAG {dag_id!r}; import errors: {bag.import_errors}")
    run = bag.get_dag(dag_id).test(run_conf=conf)
    with create_session() as session:
        tis = run.get_task_instances(session=session)
        tasks = [
            {
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "rendered_map_index": ti.rendered_map_index,
                "state": _state(ti.state),
                "queue": ti.queue,
                "pool": ti.pool,
            }
            for ti in sorted(tis, key=lambda t: (t.task_id, t.map_index))
        ]
        xcoms = {}
        for row in session.query(XComModel).filter_by(dag_id=dag_id, run_id=run.run_id, key="return_value"):
            key = row.task_id if row.map_index < 0 else f"{row.task_id}[{row.map_index}]"
            xcoms[key] = XComModel.deserialize_value(row)
    return {
        "state": _state(run.state),
        "run_id": run.run_id,
        "tasks": tasks,
        "xcoms": json.loads(json.dumps(xcoms, default=str)),
    }


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "dagbag":
        result = _dagbag()
    elif command == "run-dag":
        result = _run_dag(rest[0], json.loads(rest[1]) if len(rest) > 1 else {})
    else:
        raise SystemExit(f"unknown command {command!r}; allowed: dagbag, run-dag")
    sys.stdout.flush()
    print(json.dumps(result, default=str), flush=True)
    sys.stderr.flush()
    # Same reason as the CLI: a stage library loaded here must not turn a finished run into an abort at exit.
    os._exit(0)
