"""The rollback DAG (dags/xray_promote.py) with dag.test(): the champion goes back to an earlier version, the
decision log says who and why, and `xray_model` is emitted so that scoring runs with the restored champion."""

from __future__ import annotations

import pytest
from support.airflow_env import airflow_home, place  # noqa: F401
from support.registry import write_run

from xray_tasks import registry, storage
from xray_tasks.registry import promotion, publish

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

MODEL = "xray-triage"


def test_rolling_back_puts_the_earlier_champion_back_and_announces_it(airflow_home, place, tmp_path):  # noqa: F811
    root = storage.join(place["root"], "registry")
    first = publish(str(write_run(tmp_path / "a", seed=1, auroc=0.8)), root).version
    second = publish(str(write_run(tmp_path / "b", seed=2, auroc=0.85)), root, stage=True).version
    promotion.promote(root, MODEL, second, reason="reviewed", actor="airflow:rev", decision="approved")
    assert registry.champion_version(root, MODEL) == second

    run = airflow_home.run_dag(
        "xray_promote",
        {"version": str(int(first)), "reason": "v2 misses effusions", "registry": root},
        env=place["env"],
    )
    assert run.state == "success", run.errors()
    assert registry.champion_version(root, MODEL) == first
    result = run.xcoms["promote"]
    assert result["previous_champion"] == second and result["decision"] == "rolled_back"
    last = registry.version_details(root, MODEL, first)["decisions"][-1]
    assert last["decision"] == "rolled_back" and last["actor"] == "airflow:dag_test"
    assert last["comment"] == "v2 misses effusions" or "v2 misses effusions" in str(last)
    assert last["champion_before"] == second
    events = airflow_home.asset_events("xray_model", run.run_id)
    assert [e["extra"]["version"] for e in events] == [first]
    assert "xray_model" in airflow_home.queued_for("xray_score")


def test_a_version_never_champion_cannot_be_rolled_back_to(airflow_home, tmp_path):  # noqa: F811
    root = str(tmp_path / "registry")
    publish(str(write_run(tmp_path / "a", seed=1, auroc=0.8)), root)
    staged = publish(str(write_run(tmp_path / "b", seed=2, auroc=0.85)), root, stage=True).version
    run = airflow_home.run_dag("xray_promote", {"version": staged, "reason": "try", "registry": root})
    assert run.state == "failed" and run.task_states()["announce_champion"] == "upstream_failed"
    assert "never champion" in run.output
    assert registry.champion_version(root, MODEL) != staged
