"""`[xray] ingest_schedule`: none, a preset or a cron expression, read when the DAG file is parsed."""

from __future__ import annotations

import pytest
from support.airflow_env import airflow_home  # noqa: F401

from xray_tasks.settings import parse_parallelism, parse_schedule


@pytest.mark.parametrize(
    ("text", "schedule"),
    [
        (None, None),
        ("", None),
        ("none", None),
        (" None ", None),
        ("@daily", "@daily"),
        ("@hourly", "@hourly"),
        ("*/15 * * * *", "*/15 * * * *"),
        ("0  2 * *   MON-FRI", "0 2 * * MON-FRI"),
    ],
)
def test_schedule_text_becomes_a_dag_schedule(text, schedule):
    assert parse_schedule(text) == schedule


@pytest.mark.parametrize("text", ["@fortnightly", "every day", "* * * *", "0 2 * * * * *", "0 2 * * ;rm"])
def test_a_bad_schedule_is_refused_naming_the_setting(text):
    with pytest.raises(ValueError, match=r"\[xray\] ingest_schedule"):
        parse_schedule(text)


@pytest.mark.airflow
def test_the_ingest_dag_takes_its_schedule_from_the_airflow_config(airflow_home):  # noqa: F811
    plain = airflow_home.dagbag()
    assert plain["schedules"]["xray_ingest"] == "NullTimetable" and plain["import_errors"] == {}
    cron, _, _ = airflow_home.child("dagbag", env={"AIRFLOW__XRAY__INGEST_SCHEDULE": "*/30 * * * *"})
    assert cron["schedules"]["xray_ingest"] == "*/30 * * * *" and cron["import_errors"] == {}
    preset, _, _ = airflow_home.child("dagbag", env={"AIRFLOW__XRAY__INGEST_SCHEDULE": "@daily"})
    assert preset["schedules"]["xray_ingest"] == "0 0 * * *"  # Airflow's own reading of @daily
    bad, _, _ = airflow_home.child("dagbag", env={"AIRFLOW__XRAY__INGEST_SCHEDULE": "sometimes"})
    (error,) = [v for k, v in bad["import_errors"].items() if k.endswith("xray_ingest.py")]
    assert "[xray] ingest_schedule" in error and "'sometimes'" in error


@pytest.mark.parametrize(
    ("text", "cap"), [(None, None), ("", None), ("workers", None), (" Workers ", None), ("12", 12)]
)
def test_ingest_parallelism_is_the_workers_or_a_number(text, cap):
    assert parse_parallelism(text) == cap


@pytest.mark.parametrize("text", ["0", "-3", "four", "2.5"])
def test_a_bad_ingest_parallelism_is_refused_naming_the_setting(text):
    with pytest.raises(ValueError, match=r"\[xray\] ingest_parallelism"):
        parse_parallelism(text)


@pytest.mark.airflow
def test_the_ingest_dag_takes_its_parallelism_from_the_airflow_config(airflow_home):  # noqa: F811
    """No constant: by default the workers' slots are the limit; a deployment can cap one run's archives."""
    plain = airflow_home.dagbag()
    assert plain["tasks"]["xray_ingest"]["ingest_archive"]["max_active_tis_per_dagrun"] is None
    capped, _, _ = airflow_home.child("dagbag", env={"AIRFLOW__XRAY__INGEST_PARALLELISM": "6"})
    assert capped["tasks"]["xray_ingest"]["ingest_archive"]["max_active_tis_per_dagrun"] == 6
    bad, _, _ = airflow_home.child("dagbag", env={"AIRFLOW__XRAY__INGEST_PARALLELISM": "lots"})
    (error,) = [v for k, v in bad["import_errors"].items() if k.endswith("xray_ingest.py")]
    assert "[xray] ingest_parallelism" in error and "'lots'" in error
