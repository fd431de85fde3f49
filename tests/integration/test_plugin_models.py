"""The "Models" plugin on the real api-server: anonymous requests refused, logged-in users served, the registry
root read from the same settings as the DAGs (the page's HTML is tested in tests/unit/plugins)."""

from __future__ import annotations

import json

import pytest
from support.airflow_env import PLUGINS, ApiServer, airflow_home  # noqa: F401
from support.services import free_port


@pytest.fixture(scope="module")
def api_server(airflow_home, tmp_path_factory):  # noqa: F811
    registry = tmp_path_factory.mktemp("empty-registry")
    with ApiServer(airflow_home, free_port(), env={"XRAY_REGISTRY": str(registry)}) as server:
        server.registry = registry
        yield server


@pytest.mark.airflow
@pytest.mark.slow
@pytest.mark.parametrize(
    "path", ["/models/", "/models/api/models", "/models/plot/xray-triage/000001/roc.png"]
)
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
