"""Ingest -> training -> scoring with dag.test() on tiny synthetic data, workspace and registry on a loopback S3
server reached only through the Airflow connection; then the Models page over that registry."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import uuid

import pytest
from support.airflow_env import ApiServer, airflow_home  # noqa: F401
from support.services import free_port

from xray_tasks import registry, storage
from xray_tasks.data.synth import generate

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.s3]

INCOMING = 6


@pytest.fixture(scope="module")
def pipeline(airflow_home, s3_server, tmp_path_factory):  # noqa: F811
    """One bucket, the three DAGs run in order; every test below reads what they left."""
    bucket = f"s3://pipeline-{uuid.uuid4().hex[:10]}"
    storage.s3_client().create_bucket(Bucket=bucket[5:])
    source = tmp_path_factory.mktemp("pipeline-source")
    generate(source, patients=90, archives=2, image_size=64)
    for path in source.iterdir():
        storage.put_file(path, f"{bucket}/source/{path.name}")
    fresh = tmp_path_factory.mktemp("pipeline-new")
    generate(fresh, patients=4, archives=1, image_size=64, seed=5)
    with tarfile.open(fresh / "images_001.tar.gz") as tar:
        pngs = [m for m in tar.getmembers() if m.name.endswith(".png")][:INCOMING]
        for member in pngs:
            storage.write_bytes(
                f"{bucket}/incoming/{member.name.rsplit('/', 1)[-1]}", tar.extractfile(member).read()
            )

    connection = {
        "conn_type": "aws",
        "login": s3_server.rw_key,
        "password": s3_server.rw_secret,
        "extra": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"},
    }
    env = {"AIRFLOW_CONN_XRAY_S3": json.dumps(connection)}
    where = {"workspace": f"{bucket}/ws", "registry": f"{bucket}/registry", "profile": "demo"}
    runs = {"ingest": airflow_home.run_dag("xray_ingest", {**where, "source": f"{bucket}/source"}, env=env)}
    assert runs["ingest"].state == "success", runs["ingest"].errors()
    runs["train"] = airflow_home.run_dag(
        "xray_train", {**where, "force_publish": True, "force_reason": "first model of the test"}, env=env
    )
    runs["rejected"] = airflow_home.run_dag(
        "xray_train", {**where, "overrides": {"gate.min_healthy_cleared": 1.0}}, env=env
    )
    runs["score"] = airflow_home.run_dag(
        "xray_score",
        {
            "registry": where["registry"],
            "images": f"{bucket}/incoming",
            "worklists": f"{bucket}/worklists",
            "top": 3,
        },
        env=env,
    )
    return {"bucket": bucket, "runs": runs, "secret": connection["password"], **where}


def test_training_publishes_on_the_gpu_queue_and_emits_the_model_asset(pipeline, airflow_home):  # noqa: F811
    run = pipeline["runs"]["train"]
    assert run.state == "success", run.errors()
    assert set(run.task_states().values()) == {"success"}
    placement = {t["task_id"]: (t["queue"], t["pool"]) for t in run.tasks}
    assert placement["features"] == placement["finetune"] == ("gpu", "gpu")
    assert placement["train_head"] == ("default", "default_pool")

    published = run.xcoms["gate_and_publish"]
    assert published["decision"] == "forced" and published["promoted"]
    assert registry.champion_version(pipeline["registry"], "xray-triage") == published["version"]
    events = airflow_home.asset_events("xray_model", run.run_id)
    assert [e["extra"]["version"] for e in events] == [published["version"]]
    assert events[0]["extra"]["registry"] == pipeline["registry"]
    # The event queued a run of the consumer DAG: the scheduler would start it (test_dags_scheduler runs it).
    assert "xray_model" in airflow_home.queued_for("xray_score")
    assert pipeline["secret"] not in run.output


def test_a_rejected_candidate_is_recorded_but_not_announced(pipeline, airflow_home):  # noqa: F811
    run = pipeline["runs"]["rejected"]
    assert run.state == "success", run.errors()
    assert run.task_states()["gate_and_publish"] == "success"
    assert run.task_states()["announce_champion"] == "skipped"
    result = run.xcoms["gate_and_publish"]
    assert result["decision"] == "rejected" and not result["promoted"]
    assert any("healthy" in reason.lower() for reason in result["reasons"])
    assert airflow_home.asset_events("xray_model", run.run_id) == []
    first = pipeline["runs"]["train"].xcoms["gate_and_publish"]["version"]
    assert registry.champion_version(pipeline["registry"], "xray-triage") == first
    rows = {r["version"]: r for r in registry.list_versions(pipeline["registry"], "xray-triage")}
    assert rows[result["version"]]["decision"] == "rejected"


def test_scoring_writes_a_worklist_ordered_by_risk(pipeline):
    run = pipeline["runs"]["score"]
    assert run.state == "success", run.errors()
    summary = run.xcoms["score"]
    assert summary["version"] == pipeline["runs"]["train"].xcoms["gate_and_publish"]["version"]
    assert summary["images"] == INCOMING and summary["errors"] == 0
    assert summary["worklist"].startswith(f"{pipeline['bucket']}/worklists/")
    rows = list(csv.DictReader(io.StringIO(storage.read_text(summary["worklist"]))))
    probabilities = [float(r["probability"]) for r in rows]
    assert len(rows) == INCOMING and probabilities == sorted(probabilities, reverse=True)
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, INCOMING + 1)]
    assert summary["top"] == rows[:3]


def test_training_params_are_validated_before_any_work(airflow_home):  # noqa: F811
    # A 64-character model name passes the param's schema and the registry's rule: plan fails on the reason only.
    run = airflow_home.run_dag(
        "xray_train", {"force_publish": True, "profile": "demo", "model_name": "m" * 64}
    )
    assert run.state == "failed"
    assert run.task_states()["plan"] == "failed" and run.task_states()["features"] == "upstream_failed"
    assert "force_publish needs a force_reason" in run.output
    # The JSON schema of the params rejects a bad value before a run even exists.
    for conf in ({"head_epochs": 0}, {"model_name": "m" * 65}):
        proc = airflow_home.cli("dags", "test", "xray_train", "-c", json.dumps(conf), check=False)
        assert (
            proc.returncode != 0
            and f"Invalid input for param {next(iter(conf))}" in proc.stdout + proc.stderr
        )


def test_a_model_name_from_the_environment_is_checked_in_plan(airflow_home):  # noqa: F811
    run = airflow_home.run_dag("xray_train", {"profile": "demo"}, env={"XRAY_MODEL_NAME": "Not a name"})
    assert run.task_states()["plan"] == "failed" and run.task_states()["features"] == "upstream_failed"
    assert "model name must be 1-64 characters" in run.output


def test_the_models_page_lists_the_published_version(pipeline, airflow_home, s3_server):  # noqa: F811
    storage_env = {k: v for k, v in s3_server.env().items()}
    with ApiServer(
        airflow_home, free_port(), env={**storage_env, "XRAY_REGISTRY": pipeline["registry"]}
    ) as api:
        assert api.request("/models/")[0] == 401
        token = api.token("viewer")
        status, body, _ = api.request("/models/", cookie=token)
        page = body.decode()
        champion = pipeline["runs"]["train"].xcoms["gate_and_publish"]["version"]
        rejected = pipeline["runs"]["rejected"].xcoms["gate_and_publish"]["version"]
        assert status == 200
        row = page.split(f"<tr><td>{champion}</td>", 1)[1].split("</tr>", 1)[0]
        assert "champion" in row and "forced" in row
        assert "rejected" in page.split(f"<tr><td>{rejected}</td>", 1)[1].split("</tr>", 1)[0]
        assert f'src="plot/xray-triage/{champion}/roc.png"' in page
        status, png, headers = api.request(f"/models/plot/xray-triage/{champion}/roc.png", token=token)
        assert status == 200 and png.startswith(b"\x89PNG") and headers["content-type"] == "image/png"
        status, data, _ = api.request("/models/api/models", token=token)
        assert [m["champion"] for m in json.loads(data)["models"]] == [champion]
