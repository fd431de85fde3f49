"""The pipeline on a real distributed deployment: PostgreSQL, Redis, Celery workers `default` and `gpu`, S3.

The session's ``pipeline`` fixture (tests/cluster.py) starts the cluster, triggers ingest through the REST API on
tiny synthetic data, lets the `xray_shards` asset schedule training and the `xray_model` asset schedule scoring,
and SIGKILLs the gpu worker while it fine-tunes, then starts it again.  The tests read what happened: run and
task states, where each task ran, what landed in S3, what was published.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from support.cluster import HOSTNAMES, VENV_BIN
from support.cluster_pipeline import (
    GPU_TASKS,
    INCOMING,
    KILL_TASK,
    pipeline,  # noqa: F401
    stop_cluster_after_last_use,  # noqa: F401
)
from support.procs import Service, proc_stat, process_tree, still_alive

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

MODEL_NAME = "xray-triage"


def tries(cluster, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
    return sorted(cluster.api_json("GET", path)["task_instances"], key=lambda t: t["try_number"])


def xcom(cluster, dag_id: str, run_id: str, task_id: str):
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    value = cluster.api_json("GET", path)["value"]
    return json.loads(value) if isinstance(value, str) else value


def test_every_run_succeeds(pipeline):  # noqa: F811
    assert pipeline.failure is None, pipeline.explain()
    cluster = pipeline.cluster
    for dag_id in ("xray_ingest", "xray_train", "xray_score"):
        run_id = pipeline.run_id(dag_id)
        assert pipeline.runs[dag_id]["state"] == "success", pipeline.explain(dag_id)
        states = {
            (ti["task_id"], ti["map_index"]): ti["state"] for ti in cluster.task_instances(dag_id, run_id)
        }
        # record_rejection runs only when the reviewer rejects or approval times out; announce_drift only on drift
        branch = {"xray_train": "record_rejection", "xray_score": "announce_drift"}.get(dag_id)
        done = {k: v for k, v in states.items() if k[0] != branch}
        assert set(done.values()) == {"success"}, (dag_id, states)
        if branch:
            assert states[(branch, -1)] == "skipped", (dag_id, states)
    ingest = {ti["task_id"] for ti in cluster.task_instances("xray_ingest", pipeline.run_id("xray_ingest"))}
    assert ingest == {"check_source", "manifest", "archives_to_ingest", "ingest_archive", "validate"}
    mapped = [
        ti
        for ti in cluster.task_instances("xray_ingest", pipeline.run_id("xray_ingest"))
        if ti["task_id"] == "ingest_archive"
    ]
    assert len(mapped) == 2  # one mapped task per archive


def test_assets_scheduled_training_and_scoring(pipeline):  # noqa: F811
    cluster = pipeline.cluster
    train = cluster.api_json("GET", f"/api/v2/dags/xray_train/dagRuns/{pipeline.run_id('xray_train')}")
    score = cluster.api_json("GET", f"/api/v2/dags/xray_score/dagRuns/{pipeline.run_id('xray_score')}")
    assert train["run_type"] == score["run_type"] == "asset_triggered"
    assert [r["run_type"] for r in cluster.runs("xray_ingest")] == ["manual"]  # the one REST trigger
    # The training run took its workspace from the xray_shards event that ingest emitted.
    plan = xcom(cluster, "xray_train", train["dag_run_id"], "plan")
    assert plan["workspace"] == pipeline.workspace
    assert plan["registry"] == cluster.uri("registry") and plan["profile"] == "demo"


def test_gpu_tasks_ran_on_the_gpu_worker_and_the_rest_on_the_default_worker(pipeline):  # noqa: F811
    cluster = pipeline.cluster
    placement = {}
    for dag_id in ("xray_ingest", "xray_train", "xray_score"):
        for ti in cluster.task_instances(dag_id, pipeline.run_id(dag_id)):
            placement[(dag_id, ti["task_id"], ti["map_index"])] = (ti["queue"], ti["pool"], ti["hostname"])
    gpu = {key: where for key, where in placement.items() if key[1] in GPU_TASKS}
    assert sorted(key[1] for key in gpu) == sorted(GPU_TASKS)
    assert set(gpu.values()) == {("gpu", "gpu", HOSTNAMES["worker-gpu"])}
    others = {where for key, where in placement.items() if key[1] not in GPU_TASKS}
    assert others == {("default", "default_pool", HOSTNAMES["worker-default"])}
    # The metadata database agrees: task instances ran on exactly the two workers.
    workers = cluster.query("SELECT DISTINCT hostname FROM task_instance")
    assert {w[0] for w in workers} == set(HOSTNAMES.values())


def test_champion_landed_in_s3_and_scoring_used_it(pipeline):  # noqa: F811
    cluster = pipeline.cluster
    staged = xcom(cluster, "xray_train", pipeline.run_id("xray_train"), "stage_candidate")
    assert staged["decision"] == "candidate" and not staged["promoted"], staged
    # The cluster's deployment profile is demo: approval policy auto, promoted with no reviewer asked.
    result = xcom(cluster, "xray_train", pipeline.run_id("xray_train"), "promote")
    assert result["promoted"] and result["decision"] == "approved", result
    assert result["version"] == staged["version"] and result["actor"] == "policy:auto"
    version = result["version"]
    pointer = json.loads(
        cluster.s3().get_object(Bucket=cluster.bucket, Key=f"registry/{MODEL_NAME}/champion")["Body"].read()
    )
    assert pointer["version"] == version
    keys = set(cluster.keys(f"registry/{MODEL_NAME}/versions/{version}/"))
    prefix = f"registry/{MODEL_NAME}/versions/{version}/"
    assert {prefix + name for name in ("MANIFEST.json", "model.keras", "metrics.json")} <= keys
    assert any(k.startswith(prefix + "plots/") and k.endswith(".png") for k in keys)
    score = xcom(cluster, "xray_score", pipeline.run_id("xray_score"), "score")
    assert score["version"] == version and score["images"] == INCOMING and score["errors"] == 0
    assert score["worklist"].startswith(cluster.uri("worklists") + "/")
    assert score["worklist"].removeprefix(f"s3://{cluster.bucket}/") in cluster.keys("worklists/")


def test_a_lost_gpu_worker_is_retried_and_nothing_is_published_twice(pipeline):  # noqa: F811
    cluster = pipeline.cluster
    kill = pipeline.kill
    assert kill, f"{KILL_TASK} was never seen running on the gpu worker, so the worker was not killed"
    # Killed mid-computation: the stage process of the task was running, and nothing of the worker survived.
    assert any(f"xray_tasks.cli {KILL_TASK}" in command for command in kill["processes"].values()), kill
    assert kill["survivors"] == [], kill
    run_id = pipeline.run_id("xray_train")
    history = tries(cluster, "xray_train", run_id, KILL_TASK)
    assert [t["try_number"] for t in history] == [kill["try_number"], kill["try_number"] + 1]
    lost, retried = history
    assert lost["state"] == "failed" and lost["hostname"] == HOSTNAMES["worker-gpu"]
    assert retried["state"] == "success" and retried["hostname"] == HOSTNAMES["worker-gpu"]
    # Everything after the lost task ran once.
    for task_id in ("evaluate", "stage_candidate", "approval", "promote", "announce_champion"):
        assert [t["try_number"] for t in tries(cluster, "xray_train", run_id, task_id)] == [1], task_id
    # One version in the registry, two decisions about it (staged, approved), one xray_model event, one scoring run.
    versions = {k.split("/")[3] for k in cluster.keys(f"registry/{MODEL_NAME}/versions/")}
    assert versions == {"000001"}
    decisions = [k for k in cluster.keys(f"registry/{MODEL_NAME}/versions/000001/decisions/")]
    assert len(decisions) == 2, decisions
    events = cluster.api_json("GET", "/api/v2/assets/events?limit=100")["asset_events"]
    model_events = [e for e in events if e.get("name") == "xray_model" or e.get("uri") == "xray://model"]
    assert len(model_events) == 1 and model_events[0]["source_run_id"] == run_id
    assert len(cluster.runs("xray_score")) == 1
    assert len(cluster.runs("xray_train")) == 1


def test_the_compose_healthchecks_pass_on_the_real_components(pipeline):  # noqa: F811
    """The commands docker-compose.yml's healthchecks run, against live components of the same versions."""
    cluster = pipeline.cluster
    env = cluster.env()
    host = socket.gethostname()
    celery = [
        str(VENV_BIN / "celery"),
        "--app",
        "airflow.providers.celery.executors.celery_executor.app",
        "inspect",
        "ping",
        "-d",
    ]
    for queue in ("default", "gpu"):
        proc = subprocess.run(
            [*celery, f"{queue}@{host}"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0 and "pong" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run(
        [*celery, f"nobody@{host}"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode != 0  # the check can fail: an unknown node does not answer
    proc = subprocess.run(
        [str(VENV_BIN / "airflow"), "jobs", "check", "--job-type", "DagProcessorJob"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "Found one alive job" in proc.stdout, proc.stdout + proc.stderr
    with urllib.request.urlopen(
        f"http://127.0.0.1:{cluster.scheduler_health_port}/health", timeout=30
    ) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(
        f"{cluster.api}/execution/health", timeout=30
    ) as resp:  # the api-server's check
        assert json.loads(resp.read()) == {"status": "healthy"}


def test_stop_reaches_exactly_the_processes_started(tmp_path):
    """The harness's stop: the whole tree it started, nothing else.

    Shaped like a Celery worker running an Airflow task: the service forks a child in its own process group (the
    task supervisor), which starts a grandchild in a session of its own (the task process, which Airflow detaches
    so): signalling the service's process group alone would leave the grandchild running.
    """
    grandchild = "import time; time.sleep(600)"
    child = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {grandchild!r}], start_new_session=True)\n"
        "time.sleep(600)\n"
    )
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "time.sleep(600)\n"
    )
    service = Service(
        "tree", [sys.executable, "-c", script], {"PATH": "/usr/bin:/bin"}, tmp_path / "tree.log"
    )
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        service.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(process_tree(service.proc.pid)) < 3:
            time.sleep(0.1)
        tree = process_tree(service.proc.pid)
        assert len(tree) == 3, tree
        groups = {proc_stat(pid)[1] for pid in tree}
        assert len(groups) == 2  # the grandchild left the service's process group
        service.stop(grace=5.0, sig=signal.SIGTERM)
        assert still_alive(tree) == []
        assert bystander.poll() is None  # not ours to stop
    finally:
        bystander.kill()
        bystander.wait()
