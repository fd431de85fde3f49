"""A reviewer signs a candidate off in a real browser: headless Debian Chromium driven by Playwright.

One Airflow home on SQLite with a running scheduler (LocalExecutor) and api-server; the deployment's approval
policy is ``required``.  Ingest's ``xray_shards`` event starts training, which stages candidate 1 and waits in
``approval``.  The reviewer opens the Models page, follows the pending candidate's link to Airflow's
required-actions page, reads the body (candidate against champion, gate checks) and approves with a comment: the
champion moves and ``xray_score`` runs.  A second training run stages candidate 2; the reviewer rejects it: the
champion stays, scoring does not run again, and the rejection is in the decision log with who and the comment.
Screenshots of every step, and of the Models page with the decision history, go to
``test-artifacts/governance/`` (or ``$XRAY_TEST_ARTIFACTS/governance``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from support.airflow_env import REPO, VENV_BIN, ApiServer, migrated_home
from support.cluster import artifacts_dir
from support.services import free_port

from xray_tasks import registry

pytestmark = [pytest.mark.browser, pytest.mark.airflow, pytest.mark.slow]

CHROMIUM = os.environ.get("XRAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
MODEL = "xray-triage"
WAIT_S = 900
TIMEOUT_MS = 90_000
DEPLOYMENT_OVERRIDES = {
    # Tiny synthetic data: let this deployment's gate pass what the tiny model scores, and the second candidate
    # pass against the first; the sign-off is what this test is about.
    "gate.min_auroc": 0.0,
    "gate.min_auroc_ci_low": 0.0,
    "gate.sensitivity_tolerance": 1.0,
    "gate.max_auroc_drop": 1.0,
    # The demo profile trains in minutes; its approval policy (auto) is overridden by the deployment.
    "approval.policy": "required",
    "approval.timeout_hours": 2,
}


@pytest.fixture(scope="module")
def shots() -> Path:
    path = artifacts_dir() / "governance"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def browser_page():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        message = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
        if os.environ.get("XRAY_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="xray-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def _runs(af, dag_id: str) -> list[dict]:
    return [
        dict(r)
        for r in af.query("SELECT run_id, run_type, state FROM dag_run WHERE dag_id = ? ORDER BY id", dag_id)
    ]


def _ti_state(af, run_id: str, task_id: str) -> str | None:
    rows = af.query(
        "SELECT state FROM task_instance WHERE dag_id = 'xray_train' AND run_id = ? AND task_id = ?",
        run_id,
        task_id,
    )
    return rows[0]["state"] if rows else None


def _wait(what: str, check, scheduler: subprocess.Popen, af, seconds: float = WAIT_S):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if scheduler.poll() is not None:
            break
        failed = [r for r in _runs(af, "xray_train") + _runs(af, "xray_score") if r["state"] == "failed"]
        if failed:
            break
        time.sleep(2)
    log = (af.home / "scheduler.log").read_text()[-4000:]
    raise AssertionError(f"timed out waiting for {what}; runs {_runs(af, 'xray_train')}:\n{log}")


def _xcom(af, run_id: str, task_id: str) -> dict:
    rows = af.query(
        "SELECT value FROM xcom WHERE dag_id = 'xray_train' AND run_id = ? AND task_id = ? AND key = 'return_value'",
        run_id,
        task_id,
    )
    return json.loads(rows[0]["value"]) if rows else {}


def _sign_off(page, base: str, shots: Path, step: str, option: str, comment: str, version: str) -> None:
    """From the Models page, follow the pending candidate's link and answer its approval."""
    from playwright.sync_api import expect

    page.goto(base + "/models/")
    pending = page.locator("li.pending", has_text=f"candidate {version} awaits sign-off")
    expect(pending).to_be_visible()
    page.screenshot(path=shots / f"{step}-1-models-pending.png", full_page=True)
    pending.get_by_role("link").click()
    page.wait_for_url(re.compile(r"/dags/xray_train/runs/.+/tasks/approval/required_actions"))
    expect(page.get_by_text(f"Promote {MODEL} v{version} to champion?").first).to_be_visible()
    expect(page.get_by_text(f"candidate v{version}").first).to_be_visible()
    expect(page.get_by_text("Gate checks").first).to_be_visible()
    page.locator("#element_comment").fill(comment)
    page.screenshot(path=shots / f"{step}-2-required-action.png", full_page=True)
    page.get_by_test_id(f"hitl-option-{option}").click()


def test_a_reviewer_approves_one_candidate_and_rejects_the_next(tmp_path, synth_tree, browser_page, shots):
    from playwright.sync_api import expect

    af = migrated_home(tmp_path / "home")
    source = synth_tree(patients=90, archives=2, image_size=64)
    fresh = synth_tree(patients=3, archives=1, image_size=64, seed=9)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    subprocess.run(["tar", "-xzf", str(fresh / "images_001.tar.gz"), "-C", str(incoming)], check=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    af.env.update(
        {
            "XRAY_PROFILE": "demo",
            "XRAY_IMAGES": str(incoming),
            "XRAY_WORKLISTS": str(tmp_path / "worklists"),
            "XRAY_OVERRIDES": json.dumps(DEPLOYMENT_OVERRIDES),
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
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
    ingest = af.run_dag("xray_ingest", {"source": str(source)})
    assert ingest.state == "success", ingest.output[-3000:]
    root = af.env["XRAY_REGISTRY"]
    page = browser_page

    with ApiServer(af, port) as api, open(af.home / "scheduler.log", "w") as log:
        scheduler = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "scheduler"],
            env=af.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            # Run 1, started by ingest's event: staged, then waiting for a reviewer; the champion has not moved.
            first = _wait("the first training run", lambda: _runs(af, "xray_train"), scheduler, af)[0][
                "run_id"
            ]
            _wait(
                "approval 1 awaiting input",
                lambda: _ti_state(af, first, "approval") == "awaiting_input",
                scheduler,
                af,
            )
            v1 = _xcom(af, first, "stage_candidate")["version"]
            assert registry.champion_version(root, MODEL) is None

            page.goto(base + "/auth/login")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(ApiServer.USERS["admin"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))
            _sign_off(page, base, shots, "01-approve", "Approve", "first model: gate checks pass", v1)

            _wait(
                "scoring with the approved champion",
                lambda: [r for r in _runs(af, "xray_score") if r["state"] == "success"],
                scheduler,
                af,
            )
            assert registry.champion_version(root, MODEL) == v1
            assert [r["state"] for r in _runs(af, "xray_train")] == ["success"]
            promoted = _xcom(af, first, "promote")
            assert promoted["version"] == v1 and promoted["actor"] == "airflow:admin"

            # Run 2, triggered by the reviewer's colleague through the REST API: rejected, the champion stays.
            status, body, _ = api.request(
                "/api/v2/dags/xray_train/dagRuns",
                token=api.token("admin"),
                # same data, config and code as run 1: its fingerprint would skip training without this
                body={
                    "logical_date": None,
                    "conf": {"force_retrain": True, "retrain_reason": "a second candidate for the reviewer"},
                },
            )
            assert status in (200, 201), body[:300]
            second = json.loads(body)["dag_run_id"]
            _wait(
                "approval 2 awaiting input",
                lambda: _ti_state(af, second, "approval") == "awaiting_input",
                scheduler,
                af,
            )
            v2 = _xcom(af, second, "stage_candidate")["version"]
            assert v2 != v1
            _sign_off(page, base, shots, "02-reject", "Reject", "not better than the champion", v2)
            _wait(
                "run 2 finished",
                lambda: [
                    r for r in _runs(af, "xray_train") if r["run_id"] == second and r["state"] == "success"
                ],
                scheduler,
                af,
            )
        finally:
            os.killpg(scheduler.pid, signal.SIGTERM)
            try:
                scheduler.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(scheduler.pid, signal.SIGKILL)
                scheduler.wait()

        assert registry.champion_version(root, MODEL) == v1
        assert _ti_state(af, second, "promote") == "skipped"
        assert _ti_state(af, second, "announce_champion") == "skipped"
        assert _ti_state(af, second, "record_rejection") == "success"
        assert len(_runs(af, "xray_score")) == 1
        log1 = registry.version_details(root, MODEL, v1)["decisions"]
        log2 = registry.version_details(root, MODEL, v2)["decisions"]
        assert [d["decision"] for d in log1][-1] == "approved"
        assert log1[-1]["actor"] == "airflow:admin" and log1[-1]["comment"] == "first model: gate checks pass"
        assert [d["decision"] for d in log2][-1] == "rejected_by_reviewer"
        assert log2[-1]["actor"] == "airflow:admin" and log2[-1]["comment"] == "not better than the champion"

        # The Models page: the decision history of both versions, champion against the rejected challenger.
        page.goto(base + "/models/")
        expect(page.locator(".champion").first).to_have_text(v1)
        page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
        history = page.locator("table.decisions")
        expect(history.filter(has_text="rejected by reviewer")).to_have_count(1)
        expect(history.filter(has_text="not better than the champion")).to_have_count(1)
        expect(page.locator("table.side-by-side")).to_contain_text(f"challenger {v2}")
        page.screenshot(path=shots / "03-models-decision-history.png", full_page=True)
