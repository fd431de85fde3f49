"""The "Models" plugin: HTML rendering (no Airflow); the real api-server refusing anonymous requests and reading
the registry root from the same settings as the DAGs."""

from __future__ import annotations

import json
import sys

import pytest
from airflow_env import PLUGINS, ApiServer, airflow_home  # noqa: F401
from conftest import free_port
from registry_support import metrics_json

sys.path.insert(0, str(PLUGINS))
import xray_models_page  # plugins/ is Airflow's plugin folder, not a package

VERSIONS = [
    {"version": "000001", "complete": True, "champion": False, "created_at": "2026-11-01T00:00:00Z",
     "summary": {"test_auroc": 0.71, "sensitivity": 0.95, "healthy_cleared": 0.2, "threshold": 0.3, "base": "r"},
     "decision": "approved", "reasons": []},
    {"version": "000002", "complete": True, "champion": True, "created_at": "2026-11-02T00:00:00Z",
     "summary": {"test_auroc": 0.74, "sensitivity": 0.96, "healthy_cleared": 0.25, "threshold": 0.31, "base": "r"},
     "decision": "forced", "reasons": ["auroc <script>alert(1)</script> below floor"]},
    {"version": "000003", "complete": False, "champion": False, "problem": "no MANIFEST.json"},
]
DETAILS = {"version": "000002", "champion": True, "uri": "s3://reg/xray-triage/versions/000002",
           "metrics": metrics_json(auroc=0.74, ci=(0.6, 0.85), recall=0.96, healthy_cleared=0.25),
           "decisions": [{"decided_at": "2026-11-02", "decision": "forced", "reasons": [],
                          "forced": {"by": "ana", "reason": "hotfix"}}],
           "plots": {"roc.png": "s3://.../plots/roc.png", "notes.txt": "s3://.../plots/notes.txt"}}


def test_page_lists_versions_marks_the_champion_and_escapes_stored_text():
    html = xray_models_page.page("s3://reg", [{"name": "xray-triage", "champion": "000002", "versions": VERSIONS,
                                              "details": [DETAILS], "problems": []}])
    assert html.count("<tr><td>0000") == 3
    row2 = html.split("<tr><td>000002</td>", 1)[1].split("</tr>", 1)[0]
    assert "champion" in row2 and "0.740" in row2 and "forced" in row2
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "incomplete" in html.split("<tr><td>000003</td>", 1)[1].split("</tr>", 1)[0]
    # Plots are relative links to the plugin's own plot route; non-PNG artifacts are not shown as images.
    assert 'src="plot/xray-triage/000002/roc.png"' in html and "notes.txt" not in html
    assert "by ana: hotfix" in html


def test_the_f_score_row_follows_the_runs_beta():
    # metrics.json written with evaluate.beta = 2: the page shows F2, never an empty F3 row.
    from xray_tasks.evaluation import metrics

    doc = metrics_json()
    rates = metrics.rates({"tn": 3, "fp": 7, "fn": 1, "tp": 19}, beta=2).to_dict()
    doc = {**doc, "schema": 2, "test": {**doc["test"], "at_0.5": rates, "at_operating_point": rates,
                                        "benchmark_always_unhealthy": metrics.rates(
                                            {"tn": 0, "fp": 10, "fn": 0, "tp": 20}, beta=2).to_dict()},
           "val": {**doc["val"], "at_operating_point": rates}}
    html = xray_models_page.version_section("xray-triage", {**DETAILS, "metrics": doc})
    row = html.split("<th>F2 (model / always-unhealthy)</th>", 1)[1].split("</tr>", 1)[0]
    assert f"{rates['f_beta']:.3f}" in row and "–" not in row and "F3" not in html


def test_page_without_models_says_so():
    assert "No model has been published yet" in xray_models_page.page("/r", [])


@pytest.fixture(scope="module")
def api_server(airflow_home, tmp_path_factory):  # noqa: F811
    registry = tmp_path_factory.mktemp("empty-registry")
    with ApiServer(airflow_home, free_port(), env={"XRAY_REGISTRY": str(registry)}) as server:
        server.registry = registry
        yield server


@pytest.mark.airflow
@pytest.mark.slow
@pytest.mark.parametrize("path", ["/models/", "/models/api/models", "/models/plot/xray-triage/000001/roc.png"])
def test_anonymous_requests_are_refused(api_server, path):
    status, body, _ = api_server.request(path)
    assert status == 401, body
    status, _, _ = api_server.request(path, token="not-a-jwt")
    assert status in (401, 403)
    status, _, _ = api_server.request(path, cookie="forged.cookie.value")
    assert status in (401, 403)


@pytest.mark.airflow
@pytest.mark.slow
def test_logged_in_users_see_the_page_by_token_or_ui_cookie(api_server):
    token = api_server.token("viewer")
    status, body, _ = api_server.request("/models/api/models", token=token)
    assert status == 200 and json.loads(body) == {"registry": str(api_server.registry), "models": []}
    # The UI's iframe sends the session cookie the login set, not a header.
    status, body, headers = api_server.request("/models/", cookie=token)
    assert status == 200 and "text/html" in headers.get("content-type", "").lower()
    assert b"No model has been published yet" in body


@pytest.mark.airflow
@pytest.mark.slow
def test_plugin_registers_the_app_and_a_nav_entry(api_server):
    status, body, _ = api_server.request("/api/v2/plugins", token=api_server.token("admin"))
    assert status == 200
    plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == "xray_models")
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/models"
    view = plugin["external_views"][0]
    assert (view["name"], view["destination"], view["href"]) == ("Models", "nav", "models/")


@pytest.mark.airflow
@pytest.mark.slow
def test_the_page_reads_the_registry_variable_on_every_request(api_server, tmp_path):
    """The api-server reads Variable ``xray_registry`` from the metadata database, ahead of the env it started with
    (tests/test_dags_settings.py checks the DAGs read the same root for every mix of Variable, config and env)."""
    token = api_server.token("viewer")
    api_server.af.cli("variables", "set", "xray_registry", str(tmp_path))
    try:
        status, body, _ = api_server.request("/models/api/models", token=token)
        assert status == 200 and json.loads(body)["registry"] == str(tmp_path)
    finally:
        api_server.af.cli("variables", "delete", "xray_registry")
    status, body, _ = api_server.request("/models/api/models", token=token)
    assert status == 200 and json.loads(body)["registry"] == str(api_server.registry)
