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
from xray_tasks.registry import signing

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.s3]

INCOMING = 6
WEAKENED_GATE = {"gate.min_auroc": 0.0, "gate.min_auroc_ci_low": 0.0, "gate.sensitivity_tolerance": 1.0}


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
    # The publisher's signing key, as a worker gets it: a secret in the Airflow connection xray_signing.
    keys = tmp_path_factory.mktemp("pipeline-keys")
    key_id = signing.generate(keys)["key_id"]
    pem = (keys / signing.PRIVATE_NAME).read_text()
    # The deployment's profile is demo: approval policy auto, so dag.test() needs no reviewer.
    env = {
        "AIRFLOW_CONN_XRAY_S3": json.dumps(connection),
        "AIRFLOW_CONN_XRAY_SIGNING": json.dumps({"conn_type": "generic", "password": pem}),
        "XRAY_PROFILE": "demo",
    }
    where = {"workspace": f"{bucket}/ws", "registry": f"{bucket}/registry", "profile": "demo"}
    runs = {"ingest": airflow_home.run_dag("xray_ingest", {**where, "source": f"{bucket}/source"}, env=env)}
    assert runs["ingest"].state == "success", runs["ingest"].errors()
    # The run talks the gate down with its own overrides: a forced publish, with the reason and the keys recorded.
    runs["train"] = airflow_home.run_dag(
        "xray_train",
        {**where, "overrides": WEAKENED_GATE, "force_reason": "first model of the test"},
        env={**env, "XRAY_GPU_SLOTS": "2"},  # a gpu pool of two slots: features in two mapped groups
    )
    # The deployment itself (env XRAY_OVERRIDES, as a Variable would) holds the gate high: no override, rejected.
    # Same data, config and code as the first run: without force_retrain its fingerprint would skip training.
    runs["rejected"] = airflow_home.run_dag(
        "xray_train",
        {
            **where,
            "force_retrain": True,
            "retrain_reason": "the same model under the deployment's raised gate",
        },
        env={**env, "XRAY_OVERRIDES": json.dumps({"gate.min_healthy_cleared": 1.0})},
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
    return {
        "bucket": bucket,
        "runs": runs,
        "secret": connection["password"],
        "pem": pem,
        "key_id": key_id,
        "public_key": str(keys / signing.PUBLIC_NAME),
        **where,
    }


def test_training_publishes_on_the_gpu_queue_and_emits_the_model_asset(pipeline, airflow_home):  # noqa: F811
    run = pipeline["runs"]["train"]
    assert run.state == "success", run.errors()
    states = run.task_states()
    assert states.pop("record_rejection") == "skipped" and set(states.values()) == {"success"}
    placement = {t["task_id"]: (t["queue"], t["pool"]) for t in run.tasks}
    assert placement["features"] == placement["finetune"] == ("gpu", "gpu")
    # Two gpu slots, two groups of shards: each mapped task extracted its own share, together every shard once.
    groups = [run.xcoms[f"features[{i}]"] for i in range(2)]
    assert states["features[group 0/2]"] == states["features[group 1/2]"] == "success"
    written = [sum(s["written"] for s in g["splits"].values()) for g in groups]
    assert min(written) >= 1 and abs(written[0] - written[1]) <= 1, written
    assert placement["train_head"] == ("default", "default_pool")

    staged, promoted = run.xcoms["stage_candidate"], run.xcoms["promote"]
    # Staged first (the champion did not move), then promoted after the (auto) approval.
    assert staged["decision"] in ("candidate", "forced") and not staged["promoted"]
    assert run.xcoms["approval"]["chosen_options"] == ["Approve"] and run.xcoms["approval"]["auto"]
    assert promoted["version"] == staged["version"] and promoted["decision"] == "forced"
    assert promoted["previous_champion"] is None
    assert registry.champion_version(pipeline["registry"], "xray-triage") == staged["version"]
    events = airflow_home.asset_events("xray_model", run.run_id)
    assert [e["extra"]["version"] for e in events] == [staged["version"]]
    assert events[0]["extra"]["registry"] == pipeline["registry"]
    # The event queued a run of the consumer DAG: the scheduler would start it (test_dags_scheduler runs it).
    assert "xray_model" in airflow_home.queued_for("xray_score")
    assert pipeline["secret"] not in run.output


def test_versions_are_signed_with_the_key_from_the_connection_which_is_never_logged(pipeline, monkeypatch):
    run = pipeline["runs"]["train"]
    assert run.xcoms["stage_candidate"]["key_id"] == pipeline["key_id"]
    body = [line for line in pipeline["pem"].splitlines() if "-----" not in line and line.strip()]
    for text in (run.output, pipeline["runs"]["rejected"].output):
        assert all(line not in text for line in body)
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, pipeline["public_key"])
    version = run.xcoms["stage_candidate"]["version"]
    signature = registry.version_details(pipeline["registry"], "xray-triage", version)["signature"]
    assert signature["verified"] and signature["key_id"] == pipeline["key_id"], signature


def test_a_gate_override_in_the_run_is_recorded_as_forced_with_the_keys_changed(pipeline):
    run = pipeline["runs"]["train"]
    assert run.state == "success", run.errors()
    plan = run.xcoms["plan"]
    assert plan["forced"] and plan["changed_keys"] == sorted(WEAKENED_GATE)
    assert plan["actor"] == "airflow:dag_test" and plan["force_reason"] == "first model of the test"
    version = run.xcoms["stage_candidate"]["version"]
    decisions = registry.version_details(pipeline["registry"], "xray-triage", version)["decisions"]
    staged = decisions[0]
    assert staged["changed_keys"] == sorted(WEAKENED_GATE), staged
    assert (staged.get("forced") or {}).get("reason") == "first model of the test" or staged.get(
        "comment"
    ) == "first model of the test", staged
    assert decisions[-1]["decision"] == "forced" and decisions[-1]["actor"] == "policy:auto"


def test_a_rejected_candidate_is_recorded_but_not_announced(pipeline, airflow_home):  # noqa: F811
    run = pipeline["runs"]["rejected"]
    assert run.state == "success", run.errors()
    states = run.task_states()
    assert states["stage_candidate"] == "success"
    assert {states[t] for t in ("approval", "promote", "announce_champion", "record_rejection")} == {
        "skipped"
    }
    result = run.xcoms["stage_candidate"]
    assert result["decision"] == "rejected" and not result["promoted"]
    assert not run.xcoms["plan"]["forced"] and run.xcoms["plan"]["changed_keys"] == []
    assert any("healthy" in reason.lower() for reason in result["reasons"])
    assert airflow_home.asset_events("xray_model", run.run_id) == []
    first = pipeline["runs"]["train"].xcoms["stage_candidate"]["version"]
    assert registry.champion_version(pipeline["registry"], "xray-triage") == first
    rows = {r["version"]: r for r in registry.list_versions(pipeline["registry"], "xray-triage")}
    assert rows[result["version"]]["decision"] == "rejected"


def test_scoring_writes_a_worklist_ordered_by_risk(pipeline):
    run = pipeline["runs"]["score"]
    assert run.state == "success", run.errors()
    summary = run.xcoms["score"]
    assert summary["version"] == pipeline["runs"]["train"].xcoms["promote"]["version"]
    assert summary["images"] == INCOMING and summary["errors"] == 0
    assert summary["worklist"].startswith(f"{pipeline['bucket']}/worklists/")
    rows = list(csv.DictReader(io.StringIO(storage.read_text(summary["worklist"]))))
    probabilities = [float(r["probability"]) for r in rows]
    assert len(rows) == INCOMING and probabilities == sorted(probabilities, reverse=True)
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, INCOMING + 1)]
    assert summary["top"] == rows[:3]


def test_training_params_are_validated_before_any_work(airflow_home):  # noqa: F811
    # A 64-character model name passes the param's schema and the registry's rule: plan fails on the reason only.
    demo = {
        "XRAY_PROFILE": "demo"
    }  # the deployment's profile: the run's own demo profile changes no gate key
    run = airflow_home.run_dag(
        "xray_train", {"force_publish": True, "profile": "demo", "model_name": "m" * 64}, env=demo
    )
    assert run.state == "failed"
    assert run.task_states()["plan"] == "failed" and run.task_states()["features"] == "upstream_failed"
    assert "force_publish needs a force_reason" in run.output
    # A gate override in the run is a forced publish: without a reason, plan refuses it and names the keys.
    run = airflow_home.run_dag(
        "xray_train", {"profile": "demo", "overrides": {"gate.min_auroc": 0.0}}, env=demo
    )
    assert run.task_states()["plan"] == "failed" and run.task_states()["features"] == "upstream_failed"
    assert "changes the deployment's gate policy (gate.min_auroc)" in run.output
    # The approval policy is the deployment's alone.
    run = airflow_home.run_dag(
        "xray_train", {"profile": "demo", "overrides": {"approval.policy": "auto"}}, env=demo
    )
    assert run.task_states()["plan"] == "failed"
    assert "the approval policy belongs to the deployment" in run.output
    # The JSON schema of the params rejects a bad value before a run even exists.
    for conf in ({"head_epochs": 0}, {"model_name": "m" * 65}):
        proc = airflow_home.cli("dags", "test", "xray_train", "-c", json.dumps(conf), check=False)
        assert (
            proc.returncode != 0
            and f"Invalid input for param {next(iter(conf))}" in proc.stdout + proc.stderr
        )


def test_a_model_name_from_the_environment_is_checked_in_plan(airflow_home):  # noqa: F811
    run = airflow_home.run_dag(
        "xray_train", {"profile": "demo"}, env={"XRAY_MODEL_NAME": "Not a name", "XRAY_PROFILE": "demo"}
    )
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
        champion = pipeline["runs"]["train"].xcoms["promote"]["version"]
        rejected = pipeline["runs"]["rejected"].xcoms["stage_candidate"]["version"]
        assert status == 200
        row = page.split(f"<tr><td>{champion}</td>", 1)[1].split("</tr>", 1)[0]
        assert "champion" in row and "forced" in row
        assert "rejected" in page.split(f"<tr><td>{rejected}</td>", 1)[1].split("</tr>", 1)[0]
        assert f'src="plot/xray-triage/{champion}/roc.png"' in page
        status, png, headers = api.request(f"/models/plot/xray-triage/{champion}/roc.png", token=token)
        assert status == 200 and png.startswith(b"\x89PNG") and headers["content-type"] == "image/png"
        status, data, _ = api.request("/models/api/models", token=token)
        assert [m["champion"] for m in json.loads(data)["models"]] == [champion]
