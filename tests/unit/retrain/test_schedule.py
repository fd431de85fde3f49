"""`[xray] ingest_schedule`: none, a preset or a cron expression, read when the DAG file is parsed."""

from __future__ import annotations

import pytest
from support.airflow_env import airflow_home  # noqa: F401

from xray_tasks.settings import parse_schedule


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
