"""The ingest DAG end to end with dag.test(): mapped per archive, validated, emitting the shard-set Asset."""

from __future__ import annotations

import json

import pytest
from support.airflow_env import airflow_home  # noqa: F401

from xray_tasks import storage

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def test_ingest_dag_maps_archives_validates_and_emits_the_shards_asset(airflow_home, synth_tree, tmp_path):  # noqa: F811
    source = synth_tree(patients=12, archives=2, image_size=64, inject=("corrupt_png", "unknown_label"))
    workspace = tmp_path / "ws"
    run = airflow_home.run_dag(
        "xray_ingest", {"source": str(source), "workspace": str(workspace), "profile": "demo"}
    )
    assert run.state == "success", run.output[-4000:]
    assert run.task_states() == {
        "check_source": "success",
        "manifest": "success",
        "archives_to_ingest": "success",
        "validate": "success",
        # Mapped task instances are labelled by archive (map_index_template), as the UI shows them.
        "ingest_archive[images_001.tar.gz]": "success",
        "ingest_archive[images_002.tar.gz]": "success",
    }
    summary = run.xcoms["validate"]
    per_archive = [run.xcoms[f"ingest_archive[{i}]"] for i in (0, 1)]
    assert summary["images"] == sum(a["members"]["sharded"] for a in per_archive) > 0
    assert summary["leaking_patients"] == 0
    assert summary["quarantined"]["by_kind"] == {"corrupt_png": 1, "no_metadata": 1}
    assert storage.exists(str(workspace / "shards" / "validation.json"))
    # Stage progress reached the task log through the runner.
    assert "running: xray-tasks ingest-archive" in run.output and "images/s" in run.output

    events = airflow_home.asset_events("xray_shards", run.run_id)
    assert len(events) == 1 and events[0]["source_task_id"] == "validate"
    assert events[0]["extra"]["workspace"] == str(workspace)
    assert events[0]["extra"]["images"] == summary["images"]


def test_a_failing_stage_fails_its_task_with_the_stage_error_in_the_log(airflow_home, synth_tree, tmp_path):  # noqa: F811
    source = synth_tree(patients=10, archives=2, image_size=64, inject=("truncated_archive",))
    run = airflow_home.run_dag(
        "xray_ingest", {"source": str(source), "workspace": str(tmp_path / "ws"), "profile": "demo"}
    )
    assert run.state == "failed"
    states = run.task_states()
    failed = [k for k, v in states.items() if v == "failed"]
    assert len(failed) == 1 and failed[0].startswith("ingest_archive[images_0")
    assert states["validate"] == "upstream_failed"
    # The stage's own error, as the CLI reported it, is in the failing task's log and its exception.
    assert "StageFailed" in run.output and "stage 'ingest-archive' failed (exit status 1)" in run.output
    assert "truncat" in run.output.split("stage 'ingest-archive' failed", 1)[1].splitlines()[0].lower()
    assert airflow_home.asset_events("xray_shards", run.run_id) == []


@pytest.mark.s3
def test_ingest_dag_reads_and_writes_s3_with_credentials_from_the_connection(
    airflow_home,  # noqa: F811
    s3_server,
    s3_bucket,
    synth_tree,
):
    source = synth_tree(patients=8, archives=1, image_size=64)
    for path in source.iterdir():
        storage.put_file(path, f"{s3_bucket}/source/{path.name}")
    secret = s3_server.rw_secret  # the server checks it (a per-session random value); it must not leak
    connection = {
        "conn_type": "aws",
        "login": s3_server.rw_key,
        "password": secret,
        "extra": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"},
    }
    run = airflow_home.run_dag(
        "xray_ingest",
        {"source": f"{s3_bucket}/source", "workspace": f"{s3_bucket}/ws", "profile": "demo"},
        env={"AIRFLOW_CONN_XRAY_S3": json.dumps(connection)},
    )
    assert run.state == "success", run.output[-4000:]
    assert "storage credentials from connection 'xray_s3'" in run.output
    assert secret not in run.output
    assert storage.exists(f"{s3_bucket}/ws/shards/validation.json")
    assert airflow_home.asset_events("xray_shards", run.run_id)[0]["extra"]["workspace"] == f"{s3_bucket}/ws"
