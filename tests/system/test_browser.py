"""A real browser on the distributed deployment: headless Debian Chromium driven by Playwright.

Logs into the Airflow UI (simple auth manager, the admin password docker/init.sh wrote), opens the training DAG's
grid and sees the successful run (every task's tooltip says so), opens its run page, then the "Models" page from
the navigation and sees the champion and its plots actually loaded.  Screenshots go to
``test-artifacts/browser/`` (or ``$XRAY_TEST_ARTIFACTS/browser``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from support.cluster import ADMIN_PASSWORD, ADMIN_USER, artifacts_dir
from support.cluster_pipeline import pipeline, stop_cluster_after_last_use  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.distributed, pytest.mark.slow]

CHROMIUM = os.environ.get("XRAY_CHROMIUM", "/usr/bin/chromium")
# Debian's Chromium in a closed network, as root, headless: no sandbox, no GPU, no background fetches.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TRAIN_TASKS = (
    "plan",
    "feature_groups",
    "features",
    "train_head",
    "finetune",
    "baseline",
    "evaluate",
    "stage_candidate",
    "approval",
    "promote",
    "announce_champion",
)
"""The tasks of a training run that succeed (under the demo profile's auto approval); record_rejection skips."""
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def shots() -> Path:
    path = artifacts_dir() / "browser"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def browser_page():
    """A page of a fresh headless Chromium (its own empty profile), closed at the end of the module."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        message = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
        if os.environ.get("XRAY_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    # expect()'s own default is 5 s: a page of the loaded two-core cluster can take longer to render its counts.
    expect.set_options(timeout=TIMEOUT_MS)
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


def test_ui_shows_the_successful_training_run_and_the_champion(pipeline, browser_page, shots):  # noqa: F811
    from playwright.sync_api import expect

    assert pipeline.failure is None and pipeline.runs["xray_train"]["state"] == "success", pipeline.explain()
    cluster, page = pipeline.cluster, browser_page
    run_id = pipeline.run_id("xray_train")
    champion = cluster.api_json(
        "GET",
        f"/api/v2/dags/xray_train/dagRuns/{run_id}/taskInstances/promote/xcomEntries/return_value",
    )["value"]
    version = (champion if isinstance(champion, dict) else json.loads(champion))["version"]

    # Login: an anonymous visit lands on the simple auth manager's form.
    page.goto(cluster.api + "/dags/xray_train")
    page.wait_for_url(re.compile(r"/auth/login"))
    page.locator("input[name=username]").fill(ADMIN_USER)
    page.locator("input[name=password]").fill(ADMIN_PASSWORD)
    page.screenshot(path=shots / "01-login.png")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/dags/xray_train$"))
    assert any(c["name"] == "_token" for c in page.context.cookies())

    # The grid: one column for the run, one cell per task; each cell's tooltip gives the task's state.
    page.get_by_test_id("grid-view-button").click()
    for task_id in TRAIN_TASKS:
        cell = page.get_by_test_id(f"grid-{run_id}-{task_id}")
        expect(cell).to_be_visible()
        cell.hover()
        tooltip = page.locator("[data-part=content]").filter(has_text=f"Task ID: {task_id}")
        expect(tooltip).to_contain_text("State: Success")
        if task_id == "finetune":  # the task the gpu worker was killed during, retried
            page.screenshot(path=shots / "02-grid-finetune-success.png")
        page.mouse.move(0, 0)
    expect(page.get_by_test_id("state-badge").first).to_have_attribute("aria-label", "success")

    # The run's own page: its state and every task instance, Success.
    page.goto(f"{cluster.api}/dags/xray_train/runs/{run_id}")
    expect(page.get_by_text(f"{len(TRAIN_TASKS) + 1} Task Instances")).to_be_visible()
    for task_id in TRAIN_TASKS:
        row = page.locator("tr").filter(has=page.get_by_role("link", name=task_id, exact=True))
        expect(row).to_contain_text("Success")
    page.screenshot(path=shots / "03-training-run.png")

    # Models, from the navigation: the plugin's page in the UI, champion and plots from the S3 registry.
    page.get_by_role("link", name="Models").click()
    page.wait_for_url(re.compile(r"/plugin/models"))
    frame = page.frame_locator("iframe").first
    expect(frame.locator("h2", has_text="xray-triage")).to_be_visible()
    expect(frame.get_by_text("champion:")).to_contain_text(version)
    expect(frame.locator("tr", has_text=version).first).to_contain_text("champion")
    plots = frame.locator("img")
    expect(plots.first).to_be_visible()
    loaded = []
    for index in range(plots.count()):
        image = plots.nth(index)
        image.scroll_into_view_if_needed()
        # Loaded and decoded by the browser: a broken image has no natural size.
        page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=image.element_handle())
        loaded.append(image.get_attribute("src"))
    names = {src.rsplit("/", 1)[-1] for src in loaded}
    assert {"roc.png", "pr.png", "confusion_matrix.png"} <= names, loaded
    assert all(f"/{version}/" in src for src in loaded)
    frame.locator("h2", has_text="xray-triage").scroll_into_view_if_needed()
    page.screenshot(path=shots / "04-models-in-ui.png")

    # The same page on its own, whole, for the record.
    page.goto(cluster.api + "/models/")
    expect(page.locator(".champion").first).to_have_text(version)
    page.screenshot(path=shots / "05-models-page-full.png", full_page=True)
