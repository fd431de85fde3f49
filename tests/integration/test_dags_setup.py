"""scripts/airflow-setup.sh: the `gpu` pool and the storage connection, idempotently, secrets kept out of output."""

from __future__ import annotations

import json
import subprocess

import pytest
from support.airflow_env import REPO, VENV_BIN, AirflowHome, migrated_home

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SETUP = REPO / "scripts" / "airflow-setup.sh"


def _setup(af, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SETUP)],
        env={**af.env, "AIRFLOW": str(VENV_BIN / "airflow"), "XRAY_SKIP_MIGRATE": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> AirflowHome:
    """A home of its own: the connection written here must not reach the DAG tests' shared home."""
    return migrated_home(tmp_path_factory.mktemp("airflow-setup-home"))


def test_setup_creates_pool_and_connection_and_can_run_again(airflow_home):
    secret = "setup-Secret-7Hq2"
    creds = {
        "XRAY_S3_ACCESS_KEY_ID": "AKIASETUP",
        "XRAY_S3_SECRET_ACCESS_KEY": secret,
        "XRAY_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
    }
    first = _setup(airflow_home, **creds)
    assert first.returncode == 0, first.stderr
    second = _setup(airflow_home, XRAY_GPU_SLOTS="2", **creds)
    assert second.returncode == 0, second.stderr
    assert secret not in first.stdout + first.stderr + second.stdout + second.stderr

    pools = airflow_home.query("SELECT slots FROM slot_pool WHERE pool = 'gpu'")
    assert [p["slots"] for p in pools] == [2]
    conns = airflow_home.query("SELECT conn_type, login FROM connection WHERE conn_id = 'xray_s3'")
    assert [(c["conn_type"], c["login"]) for c in conns] == [("aws", "AKIASETUP")]
    # Password and extra are stored encrypted: read them back through Airflow itself.
    got = airflow_home.cli("connections", "get", "xray_s3", "-o", "json")
    conn = json.loads(got.stdout)[0]
    assert conn["password"] == secret
    assert conn["extra_dejson"] == {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:9000"}


def test_setup_rejects_a_bad_slot_count(airflow_home):
    proc = _setup(airflow_home, XRAY_GPU_SLOTS="two")
    assert proc.returncode == 2 and "XRAY_GPU_SLOTS must be a whole number" in proc.stderr
