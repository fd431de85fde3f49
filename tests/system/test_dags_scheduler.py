"""The Assets really chain the DAGs: under a running scheduler (LocalExecutor, api-server for the execution API),
the ingest run's `xray_shards` event starts training, and training's `xray_model` event starts scoring.

`airflow dags test` / `dag.test()` record asset events and queue the consumer DAGs, but only a scheduler turns that
queue into runs; this test runs one, briefly, on SQLite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from support.airflow_env import REPO, VENV_BIN, ApiServer, migrated_home
from support.services import free_port

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

TIMEOUT_S = 600


def _runs(af, dag_id: str) -> list[dict]:
    return [
        dict(r)
        for r in af.query("SELECT run_id, run_type, state FROM dag_run WHERE dag_id = ? ORDER BY id", dag_id)
    ]


def test_asset_events_trigger_training_then_scoring(tmp_path, synth_tree):
    # A home of its own: the asset queue must hold only what this test's ingest run puts in it.
    af = migrated_home(tmp_path / "home")
    source = synth_tree(patients=90, archives=2, image_size=64)
    fresh = synth_tree(patients=3, archives=1, image_size=64, seed=9)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    subprocess.run(["tar", "-xzf", str(fresh / "images_001.tar.gz"), "-C", str(incoming)], check=True)
    port = free_port()
    env = {
        "XRAY_PROFILE": "demo",
        "XRAY_IMAGES": str(incoming),
        "XRAY_WORKLISTS": str(tmp_path / "worklists"),
        # Scheduled runs take default params: let this deployment's gate pass whatever the tiny model scores.
        "XRAY_OVERRIDES": json.dumps(
            {"gate.min_auroc": 0.0, "gate.min_auroc_ci_low": 0.0, "gate.sensitivity_tolerance": 1.0}
        ),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": "test-jwt-secret-shared-by-scheduler-and-api-server",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
    }
    af.env.update(env)
    # The setup command: without pool `gpu` the scheduler would leave features/finetune `scheduled` forever.
    subprocess.run(
        ["bash", str(REPO / "scripts" / "airflow-setup.sh")],
        check=True,
        capture_output=True,
        env={**af.env, "AIRFLOW": str(VENV_BIN / "airflow"), "XRAY_SKIP_MIGRATE": "1"},
    )
    workspace = tmp_path / "ws-named-by-the-event"
    ingest = af.run_dag("xray_ingest", {"source": str(source), "workspace": str(workspace)})
    assert ingest.state == "success", ingest.output[-3000:]
    assert af.queued_for("xray_train") == ["xray_shards"]

    with ApiServer(af, port), open(af.home / "scheduler.log", "w") as log:
        scheduler = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "scheduler"],
            env=af.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                done = [r for r in _runs(af, "xray_score") if r["state"] in ("success", "failed")]
                failed = [r for r in _runs(af, "xray_train") if r["state"] == "failed"]
                if done or failed or scheduler.poll() is not None:
                    break
                time.sleep(2)
        finally:
            os.killpg(scheduler.pid, signal.SIGTERM)
            try:
                scheduler.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(scheduler.pid, signal.SIGKILL)
                scheduler.wait()

    trains, scores = _runs(af, "xray_train"), _runs(af, "xray_score")
    context = (af.home / "scheduler.log").read_text()[-3000:]
    assert [(r["run_type"], r["state"]) for r in trains] == [("asset_triggered", "success")], (
        trains,
        context,
    )
    assert [(r["run_type"], r["state"]) for r in scores] == [("asset_triggered", "success")], (
        scores,
        context,
    )
    # Training found the shards through the event, not through a param.
    plan = json.loads(
        af.query(
            "SELECT value FROM xcom WHERE dag_id = 'xray_train' AND task_id = 'plan' AND key = 'return_value'"
        )[0]["value"]
    )
    assert plan["workspace"] == str(workspace) != af.env["XRAY_WORKSPACE"]
    model_events = af.asset_events("xray_model", trains[0]["run_id"])
    assert len(model_events) == 1
    worklists = list((tmp_path / "worklists").glob("*.csv"))
    assert len(worklists) == 1 and f"v{model_events[0]['extra']['version']}" in worklists[0].name


def _wait(af, scheduler, until, what: str, timeout: float = TIMEOUT_S):
    """Poll the metadata database until ``until()`` is truthy; fails naming ``what`` with the scheduler log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = until()
        if value:
            return value
        if scheduler.poll() is not None:
            break
        time.sleep(2)
    raise AssertionError(f"{what}: not reached\n{(af.home / 'scheduler.log').read_text()[-3000:]}")


def _states(af, dag_id: str, run_id: str) -> dict[str, str]:
    rows = af.query(
        "SELECT task_id, map_index, rendered_map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
        dag_id,
        run_id,
    )
    return {
        r["task_id"] if r["map_index"] < 0 else f"{r['task_id']}[{r['rendered_map_index']}]": r["state"]
        for r in rows
    }


def test_scheduled_ingest_starts_training_only_for_news(tmp_path):
    from support.retrain import add_archive, make_source, relabel

    af = migrated_home(tmp_path / "home")
    source = make_source(tmp_path, str(tmp_path / "source"), patients=60)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    port = free_port()
    af.env.update(
        {
            "XRAY_PROFILE": "demo",
            "XRAY_SOURCE": source["root"],
            "XRAY_CODE_VERSION": "scheduler-test",  # one code version, whatever is committed meanwhile
            "XRAY_IMAGES": str(incoming),
            "XRAY_WORKLISTS": str(tmp_path / "worklists"),
            "XRAY_OVERRIDES": json.dumps(
                {
                    "gate.min_auroc": 0.0,
                    "gate.min_auroc_ci_low": 0.0,
                    "gate.sensitivity_tolerance": 1.0,
                    "gate.max_auroc_drop": 1.0,
                    "head.epochs": 8,
                    "finetune.epochs": 1,
                }
            ),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": "test-jwt-secret-shared-by-scheduler-and-api-server",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
    )
    subprocess.run(
        ["bash", str(REPO / "scripts" / "airflow-setup.sh")],
        check=True,
        capture_output=True,
        env={**af.env, "AIRFLOW": str(VENV_BIN / "airflow"), "XRAY_SKIP_MIGRATE": "1"},
    )
    af.cli("dags", "reserialize")

    def ingest_run() -> tuple[str, dict[str, str]]:
        """Trigger xray_ingest through the scheduler and wait for the run to end."""
        before = {r["run_id"] for r in _runs(af, "xray_ingest")}
        af.cli("dags", "trigger", "xray_ingest")
        new = _wait(
            af,
            scheduler,
            lambda: [
                r
                for r in _runs(af, "xray_ingest")
                if r["run_id"] not in before and r["state"] in ("success", "failed")
            ],
            "ingest run finished",
        )[0]
        assert new["state"] == "success", _states(af, "xray_ingest", new["run_id"])
        return new["run_id"], _states(af, "xray_ingest", new["run_id"])

    def trains_done(n: int):
        runs = _runs(af, "xray_train")
        assert not [r for r in runs if r["state"] == "failed"], runs
        return len([r for r in runs if r["state"] == "success"]) >= n

    with ApiServer(af, port), open(af.home / "scheduler.log", "w") as log:
        scheduler = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "scheduler"],
            env=af.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _, states = ingest_run()
            assert states["ingest_archive[images_001.tar.gz]"] == "success"
            _wait(af, scheduler, lambda: trains_done(1), "first training")

            # The same source again: check_source short-circuits, nothing is emitted, no training starts.
            unchanged, states = ingest_run()
            assert states.pop("check_source") == "success" and set(states.values()) == {"skipped"}, states
            assert af.asset_events("xray_shards", unchanged) == []
            time.sleep(15)  # a scheduler loop or five: nothing may be queued or started
            assert af.queued_for("xray_train") == [] and len(_runs(af, "xray_train")) == 1

            add_archive(source)
            _, states = ingest_run()
            assert sorted(k for k in states if k.startswith("ingest_archive[")) == [
                "ingest_archive[images_003.tar.gz]"
            ]
            _wait(af, scheduler, lambda: trains_done(2), "training on the new archive")

            relabel(source, tmp_path)
            relabelled, states = ingest_run()
            assert len(af.asset_events("xray_shards", relabelled)) == 1
            _wait(af, scheduler, lambda: trains_done(3), "training on the relabelled metadata")
        finally:
            os.killpg(scheduler.pid, signal.SIGTERM)
            try:
                scheduler.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(scheduler.pid, signal.SIGKILL)
                scheduler.wait()

    trains = _runs(af, "xray_train")
    assert [(r["run_type"], r["state"]) for r in trains] == [("asset_triggered", "success")] * 3
    plans = [
        json.loads(r["value"])
        for r in af.query(
            "SELECT value FROM xcom WHERE dag_id = 'xray_train' AND task_id = 'plan' AND key = 'return_value' "
            "ORDER BY dag_run_id"
        )
    ]
    assert len({p["fingerprint"] for p in plans}) == 3  # each retrain had something new to train on
