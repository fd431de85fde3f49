"""Airflow 3 plugin: a "Models" page in the UI navigation, read from the xray model registry.

A FastAPI app mounted at ``/models`` on the api-server renders every model under the registry root: its versions,
their key metrics, the gate decisions, the plots, and which version is champion (``xray_tasks.registry`` is the
only thing that reads storage).  An external view puts the page in the UI's navigation, shown in an iframe.

Plugin apps are not behind Airflow's authentication on their own: every route here depends on
:func:`require_user`, which accepts the same credentials as Airflow's REST API (the UI's ``_token`` cookie or an
``Authorization: Bearer`` JWT) and refuses anonymous requests with 401.

Registry root: the setting ``registry`` resolved as the DAGs resolve it (:func:`xray_tasks.settings.resolve`):
Airflow Variable ``xray_registry``, else ``[xray] registry`` in the Airflow config (``AIRFLOW__XRAY__REGISTRY``),
else env ``XRAY_REGISTRY``, else ``$AIRFLOW_HOME/xray/registry``; looked up on every request, so a changed
Variable shows at once.  For an ``s3://`` root the api-server needs the storage environment (``AWS_*``,
``AWS_ENDPOINT_URL``), as any S3 client does.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Annotated, Any, ClassVar
from urllib.parse import quote

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

log = logging.getLogger(__name__)

URL_PREFIX = "/models"
PLOT_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.png$")
_bearer = HTTPBearer(auto_error=False)


async def require_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
):
    """The logged-in Airflow user making the request; 401 without valid credentials, 403 without UI access."""
    # Imported here: the plugin module is loaded by every Airflow component, only the api-server needs these.
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user

    user = await get_user(request=request, _oauth_token=None, bearer_credentials=credentials)
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not allowed to view the Airflow UI")
    return user


def _variable(key: str) -> str | None:
    """Variable ``key`` as the api-server reads it: secrets backends, then the metadata database."""
    # airflow.models.Variable, not the Task SDK's: the SDK's reads the database only in a process marked as a
    # server (_AIRFLOW_PROCESS_CONTEXT, set by airflow.api_fastapi.main but not by every host of this app).  A
    # failing backend (no database) is logged by Airflow and skipped, so the lookup falls through to config and env.
    # Ruff checks AIR311 in tests/test_dags.py only, hence also RUF100 for the default rule set.
    from airflow.models import Variable

    return Variable.get(key, default_var=None)  # noqa: AIR311, RUF100


def _config(name: str) -> str | None:
    return conf.get("xray", name, fallback=None)


def registry_root() -> str:
    """Where the registry lives: the same setting, in the same order, as the DAGs read it."""
    from xray_tasks.settings import Sources, resolve

    return resolve("registry", Sources(variable=_variable, config=_config, environ=os.environ))


SUBJECT = re.compile(r"^Promote (?P<model>[a-z0-9][a-z0-9._-]{0,63}) v(?P<version>[0-9]+) to champion\?$")
"""The subject the training DAG's ``approval`` task asks with (dags/xray_train.py)."""


def approval_links() -> dict[tuple[str, str], str]:
    """``(model, version) -> required-actions page`` of every approval still waiting for a reviewer.

    Read from Airflow's own human-in-the-loop records (the api-server's metadata database); links are relative to
    the UI's base URL.  Without a database (a page served outside Airflow) there are none.
    """
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with create_session() as session:
            rows = session.execute(
                select(HITLDetail.subject, TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id)
                .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
                .where(HITLDetail.responded_at.is_(None))
            ).all()
    except SQLAlchemyError as exc:  # no metadata database here: the page still works, without the links
        log.info("no approval links: %s", exc)
        return {}
    links = {}
    for subject, dag_id, run_id, task_id in rows:
        match = SUBJECT.match(subject or "")
        if match:
            key = (match["model"], match["version"])
            links[key] = f"dags/{quote(dag_id)}/runs/{quote(run_id)}/tasks/{quote(task_id)}/required_actions"
    return links


def collect(root: str, approvals: dict[tuple[str, str], str] | None = None) -> list[dict[str, Any]]:
    """Models, versions and the details of every complete version, as the page and the JSON route show them;
    ``approvals`` (from :func:`approval_links`) adds each pending candidate's approval link."""
    from xray_monitoring_page import monitoring_of

    from xray_tasks import registry

    models = []
    for name in registry.list_models(root):
        versions = registry.list_versions(root, name)
        details, problems = [], []
        for row in reversed(versions):
            if not row.get("complete"):
                continue
            try:
                details.append(registry.version_details(root, name, row["version"]))
            except registry.RegistryError as exc:  # IntegrityError included: show it, keep the page up
                problems.append(f"version {row['version']}: {exc}")
        champion = next((row["version"] for row in versions if row.get("champion")), None)
        models.append(
            {
                "name": name,
                "champion": champion,
                "versions": versions,
                "details": details,
                "problems": problems,
                "approvals": {
                    row["version"]: (approvals or {}).get((name, row["version"]))
                    for row in versions
                    if row.get("pending")
                },
                "monitoring": monitoring_of(root, name, champion),
            }
        )
    return models


def _storage_errors() -> tuple[type[Exception], ...]:
    from xray_tasks import registry, storage

    return (registry.RegistryError, storage.StorageError, OSError)


app = FastAPI(
    title="xray models", dependencies=[Depends(require_user)], docs_url=None, redoc_url=None, openapi_url=None
)


# Plain (not async) routes: registry reads block, and FastAPI runs these in its thread pool.
@app.get("/", response_class=HTMLResponse)
def models_page() -> HTMLResponse:
    from xray_models_page import page

    root = registry_root()
    try:
        return HTMLResponse(page(root, collect(root, approval_links())))
    except _storage_errors() as exc:
        log.warning("registry %s unreadable: %s", root, exc)
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"registry {root} unreadable: {exc}") from None


@app.get("/api/models")
def models_json() -> dict[str, Any]:
    root = registry_root()
    try:
        models = collect(root, approval_links())
    except _storage_errors() as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"registry {root} unreadable: {exc}") from None
    for model in models:  # the manifests' per-file digests are long and of no use to a reader of this route
        for details in model["details"]:
            details.pop("manifest", None)
    return {"registry": root, "models": models}


@app.get("/plot/{model_name}/{version}/{name}")
def plot(model_name: str, version: str, name: str) -> Response:
    from xray_tasks import registry

    if not PLOT_NAME.match(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no plot {name!r}")
    try:
        data = registry.read_artifact(registry_root(), model_name, version, f"plots/{name}")
    except (ValueError, FileNotFoundError, registry.RegistryError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


class XrayModelsPlugin(AirflowPlugin):
    name = "xray_models"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": app, "url_prefix": URL_PREFIX, "name": "xray models"}
    ]
    # A relative href (no leading slash) resolves against the UI's base URL, so a proxy prefix keeps working.
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Models",
            "href": "models/",
            "destination": "nav",
            "url_route": "models",
            "nav_top_level": True,
        },
    ]
