"""The Models page's monitoring section in a real browser (headless Debian Chromium, Playwright).

The plugin's FastAPI app is served by uvicorn on a free loopback port (its login dependency replaced: the full
UI login is what tests/system/test_browser.py covers) over a registry whose champion has scored batches (one
like its test split, one from a brighter, flatter "new scanner") and has recorded outcomes.  The drift time
series (an inline SVG) and the outcomes table are checked and screenshotted to
``test-artifacts/monitoring/`` (or ``$XRAY_TEST_ARTIFACTS/monitoring``).  ``XRAY_SCREENS_REGISTRY=<root>`` shows an
existing registry instead (e.g. ``demo/registry`` after ``make demo``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
import pytest
from support import REPO
from support.cluster import artifacts_dir, free_port
from support.registry import png, write_run, xray_pngs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("XRAY_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _registry(tmp_path) -> str:
    """A champion with a reference profile, three scoring runs (two alike, one shifted) and two outcomes."""
    from xray_tasks.cli import run
    from xray_tasks.evaluation.profile import ProfileBuilder
    from xray_tasks.registry import inference

    blobs = xray_pngs(80, seed=11)
    builder = ProfileBuilder()
    builder.add_pixels(np.stack([inference.decode_stored(b, 48) for b in blobs]))
    builder.add_scores(np.linspace(0.05, 0.95, len(blobs)))
    builder.add_files(blobs)
    run_dir = write_run(tmp_path / "run", seed=1, auroc=0.88)
    (run_dir / "profile.json").write_text(json.dumps(builder.build("test split", 0.45).to_dict()))
    root = str(tmp_path / "registry")
    assert run(["publish", "--run-dir", str(run_dir), "--registry", root]) == 0
    batches = {"monday": xray_pngs(60, seed=12), "tuesday": xray_pngs(60, seed=13)}
    batches["new-scanner"] = [
        png(
            np.clip(128 + 0.5 * (inference.decode_stored(b, 64)[..., 0] - 128.0) + 60, 0, 255).astype(
                np.uint8
            )
        )
        for b in xray_pngs(60, seed=14)
    ]
    for name, images in batches.items():
        folder = tmp_path / "in" / name
        folder.mkdir(parents=True)
        for i, blob in enumerate(images):
            (folder / f"{name}_{i:03d}.png").write_bytes(blob)
        out = tmp_path / "worklists" / f"{name}.csv"
        assert run(["score", "--registry", root, "--images", str(folder), "--out", str(out)]) == 0
        time.sleep(1.1)  # one report per second-stamped name, in order
    # Outcomes for a worklist of 40 studies, 20 flagged at the champion's threshold: first every flagged one
    # unhealthy and every cleared one healthy (within target), then 30 unhealthy, 10 of them cleared (below target).
    threshold = json.loads((run_dir / "metrics.json").read_text())["operating_point"]["threshold"]
    worklist = tmp_path / "worklists" / "outcomes.csv"
    probs = [threshold + (1 - threshold) * (20 - i) / 21 for i in range(20)]
    probs += [threshold * (40 - i) / 21 for i in range(20, 40)]
    worklist.write_text(
        "rank,image,probability,decision,error,model_version,threshold\n"
        + "".join(f"{i + 1},/in/o{i}.png,{p:.6f},,,1,{threshold:.6f}\n" for i, p in enumerate(probs))
    )
    for unhealthy in (sum(p >= threshold for p in probs), 30):
        labels = tmp_path / f"labels-{unhealthy}.csv"
        labels.write_text("image,label\n" + "".join(f"o{i}.png,{int(i < unhealthy)}\n" for i in range(40)))
        run(["outcomes", "--registry", root, "--worklist", str(worklist), "--labels", str(labels)])
        time.sleep(1.1)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = os.environ.get("XRAY_SCREENS_REGISTRY") or _registry(tmp_path_factory.mktemp("screens"))
    import uvicorn

    sys.path.insert(0, str(REPO / "plugins"))
    import xray_models

    xray_models.app.dependency_overrides[xray_models.require_user] = lambda: None
    os.environ["XRAY_REGISTRY"] = root
    port = free_port()
    config = uvicorn.Config(xray_models.app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            time.sleep(0.2)
    yield url, root
    srv.should_exit = True
    thread.join(timeout=10)


def test_models_page_shows_drift_history_and_outcomes(server):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    url, _root = server
    shots = artifacts_dir() / "monitoring"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    profile = tempfile.mkdtemp(prefix="xray-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1300, "height": 900},
        )
        try:
            page = context.new_page()
            page.goto(url)
            section = page.locator("section.monitoring").first
            expect(section).to_be_visible()
            expect(section.locator("h3")).to_contain_text("In the field: version")
            svg = section.locator("svg.drift")
            expect(svg).to_be_visible()
            assert svg.locator("circle").count() >= 2
            rows = section.locator("table").first.locator("tr")
            assert rows.count() >= 3  # header + at least two scoring runs
            if not os.environ.get("XRAY_SCREENS_REGISTRY"):
                expect(section).to_contain_text("drift")
                expect(section.locator("table").nth(1)).to_contain_text("BELOW TARGET")
                expect(section.locator("table").nth(1)).to_contain_text("within target")
            section.scroll_into_view_if_needed()
            section.screenshot(path=shots / "01-monitoring-section.png")
            page.screenshot(path=shots / "02-models-page.png", full_page=True)
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
    assert (shots / "01-monitoring-section.png").stat().st_size > 10_000
