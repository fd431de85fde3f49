"""Only what changed, through the DAGs (dag.test): ingest short-circuits on an unchanged source and ingests a new
archive alone; relabelled metadata rebuilds the manifest; training skips a fingerprint the registry already has,
retrains on a config change, and retrains an unchanged one only when `force_retrain` gives a reason."""

from __future__ import annotations

import pytest
from support.airflow_env import airflow_home, place  # noqa: F401
from support.retrain import add_archive, make_source, relabel

from xray_tasks import registry, storage

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

# No gate overrides: under governance a run that changes gate.* is a forced publish and needs a reason each time;
# whether the tiny model clears the gate is not the point here (a rejected candidate is still a version).
TRAIN = {
    "profile": "demo",
    "head_epochs": 8,
    "finetune_epochs": 1,
}


# One code version for every run of a test, whatever is committed meanwhile (the fingerprint counts the commit).
CODE = {"XRAY_CODE_VERSION": "retrain-test", "XRAY_PROFILE": "demo"}  # one code version; a demo deployment


def mapped(run) -> list[str]:
    return sorted(
        k.split("[", 1)[1].rstrip("]") for k in run.task_states() if k.startswith("ingest_archive[")
    )


def test_ingest_runs_only_for_news(airflow_home, place, tmp_path):  # noqa: F811
    source = make_source(tmp_path, storage.join(place["root"], "source"), patients=30)
    conf = {"source": source["root"], "workspace": storage.join(place["root"], "ws"), "profile": "demo"}

    def ingest():
        run = airflow_home.run_dag("xray_ingest", conf, env=place["env"])
        assert run.state == "success", run.errors()
        return run, airflow_home.asset_events("xray_shards", run.run_id)

    first, events = ingest()
    assert mapped(first) == ["images_001.tar.gz", "images_002.tar.gz"] and len(events) == 1

    unchanged, events = ingest()
    states = unchanged.task_states()
    assert states.pop("check_source") == "success" and set(states.values()) == {"skipped"}, states
    assert events == []
    assert "no news at" in unchanged.output and "compared 2 archive(s)" in unchanged.output

    add_archive(source)
    third, events = ingest()
    assert mapped(third) == ["images_003.tar.gz"]  # the new archive alone ...
    assert third.xcoms["validate"]["archives"] == 3  # ... then the whole set validated
    assert third.xcoms["manifest"] == {"rebuilt": False}
    assert [e["extra"]["ingested"] for e in events] == [["images_003.tar.gz"]]

    relabel(source, tmp_path)
    fourth, events = ingest()
    assert fourth.xcoms["manifest"]["rebuilt"] is True and len(events) == 1
    assert mapped(fourth) and set(mapped(fourth)) <= {
        "images_001.tar.gz",
        "images_002.tar.gz",
        "images_003.tar.gz",
    }
    assert "Data_Entry_2017_v2020.csv" in fourth.output


def test_training_skips_an_unchanged_fingerprint_unless_forced_with_a_reason(airflow_home, place, tmp_path):  # noqa: F811
    source = make_source(tmp_path, storage.join(place["root"], "source"), patients=60, hold_back=0)
    where = {
        "workspace": storage.join(place["root"], "ws"),
        "registry": storage.join(place["root"], "registry"),
    }
    env = {**CODE, **place["env"]}

    def run_dag(dag_id: str, conf: dict):
        return airflow_home.run_dag(dag_id, conf, env=env)

    ingest = run_dag("xray_ingest", {"source": source["root"], **where, "profile": "demo"})
    assert ingest.state == "success", ingest.errors()

    # Forced, so that the tiny model becomes champion whatever it scores; force_publish is no part of the
    # fingerprint (it decides the publish, not the model).
    first = run_dag(
        "xray_train", {**where, **TRAIN, "force_publish": True, "force_reason": "first model of the test"}
    )
    assert first.state == "success", first.errors()
    published = first.xcoms["promote"]  # staged as a candidate, auto-approved (demo deployment), promoted
    assert published["decision"] == "forced" and published["promoted"]
    version = published["version"]

    same = run_dag("xray_train", {**where, **TRAIN})
    states = same.task_states()
    assert same.state == "success" and states.pop("plan") == "success", (states, same.errors())
    assert set(states.values()) == {"skipped"}, states
    assert f"unchanged since version {version} (forced, champion)" in same.output
    assert airflow_home.asset_events("xray_model", same.run_id) == []
    assert [r["version"] for r in registry.list_versions(where["registry"], "xray-triage")] == [version]

    changed = run_dag("xray_train", {**where, **TRAIN, "head_epochs": 9})
    assert changed.state == "success", changed.errors()
    assert changed.task_states()["train_head"] == "success"
    second = changed.xcoms["stage_candidate"]["version"]
    assert second != version

    no_reason = run_dag("xray_train", {**where, **TRAIN, "force_retrain": True})
    assert no_reason.state == "failed" and no_reason.task_states()["plan"] == "failed"
    assert "force_retrain needs a retrain_reason" in no_reason.output

    reason = "nightly reproducibility check"
    forced = run_dag("xray_train", {**where, **TRAIN, "force_retrain": True, "retrain_reason": reason})
    assert forced.state == "success", forced.errors()
    assert forced.task_states()["finetune"] == "success"
    assert f"unchanged since version {version}" in forced.output and "retraining anyway" in forced.output
    third = forced.xcoms["stage_candidate"]["version"]
    details = registry.version_details(where["registry"], "xray-triage", third)
    retrain = details["manifest"]["fingerprint"]["retrain"]
    assert (
        retrain["reason"] == reason and retrain["version"] == version and retrain["by"].startswith("airflow:")
    )
    # the decision log: the stage record carries it (a later promote or reject record need not)
    assert any((d.get("retrain") or {}).get("reason") == reason for d in details["decisions"])
    run_fp = storage.read_json(storage.join(forced.xcoms["plan"]["run_dir"], "fingerprint.json"))
    assert run_fp["retrain"]["reason"] == reason  # the run
    first_fp = registry.version_details(where["registry"], "xray-triage", version)["manifest"]["fingerprint"]
    assert details["manifest"]["fingerprint"]["digest"] == first_fp["digest"]
