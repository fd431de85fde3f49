"""
### Score new studies with the champion: a worklist ordered by risk

The consumer of **`xray_model`**: runs whenever training promotes a new champion (or by hand), loads the
champion from the registry (its files verified against the published manifest) and scores every PNG in a folder
or `s3://` prefix of new studies.  The worklist (CSV, highest risk first; unreadable images listed last with
their error) lands under `worklists` as `<model_name>-v<version>-<run id>.csv`; its first rows are shown in the
task log and returned by `score`.

#### Assets
- consumes **`xray_model`**: the event's `registry` and `model_name` say which champion to load (a param that is
  set wins); if a newer champion was promoted since, that one scores.

#### Params
Each empty param falls back to Airflow Variable `xray_<name>`, then config `[xray] <name>`, then env
`XRAY_<NAME>`, then a default under `$AIRFLOW_HOME/xray/`.
- `images`: folder or `s3://` prefix of the new PNG studies.
- `registry`, `model_name`: where the champion is (default model name `xray-triage`).
- `worklists`: folder or `s3://` prefix the worklists are written to.
- `top`: how many rows of the worklist to show in the log (0-1000, default 10).
- `drift_action`: past a drift limit, `fail` (default) fails `check_drift`; `asset` emits **`xray_drift`**
  instead and the run succeeds.

#### Drift
`score` profiles the batch and compares it with the champion's reference profile (its test split): PSI of the
score and image-statistic distributions, the Kolmogorov-Smirnov D of the scores, the share flagged against the
share expected.  `<worklist>.drift.json` and `.drift.png` land beside the worklist.  `check_drift` fails with a
message naming the statistic, its value and its limit (a batch too small to judge is reported, not failed); the
setting `alert` (`smtp:<address>`) tells a person through the SMTP provider.  The limits are the config's
`drift.*` keys, set for a deployment in the setting `overrides` (e.g. `{"drift.psi_limit": 0.3}`).

Storage credentials come from the `aws` connection named by the setting `s3_conn_id` (default `xray_s3`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pendulum
from airflow.sdk import Asset, BaseHook, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from xray_alerts import notify_person
from xray_common import (
    DEFAULT_ARGS,
    HEAVY_TIMEOUT,
    LIGHT_TIMEOUT,
    MODEL,
    TAGS,
    deployment_overrides,
    run,
    setting,
)

DRIFT = Asset(name="xray_drift", uri="xray://drift", group="xray")
"""A scored batch past a drift limit (with ``drift_action=asset``); ``extra`` carries the report's summary."""

WORKLIST_TEMPLATE = "{model_name}-v{version}-{run}.csv"
log = logging.getLogger("xray.dags")


def champion_of(params: Mapping[str, Any], event: Mapping[str, Any] | None) -> dict[str, Any]:
    """The champion to score with: registry and model from the triggering ``xray_model`` event, else settings.

    Returns the version, its key metrics and every location the scoring task needs.
    """
    from xray_tasks.contracts import Metrics

    event = event or {}
    registry = params.get("registry") or event.get("registry") or setting("registry")
    model_name = params.get("model_name") or event.get("model_name") or setting("model_name")
    conn_id = setting("s3_conn_id", params)
    details = run(
        "models",
        ["show", "--registry", registry, "--model-name", model_name, "--format", "json"],
        {"s3_conn_id": conn_id},
    )
    if event.get("version") and event["version"] != details["version"]:
        # Another publish promoted a newer champion since the event: score with the current one.
        log.info("event announced version %s, the champion is now %s", event["version"], details["version"])
    metrics = Metrics.from_dict(details["metrics"], where=f"{details['uri']}/metrics.json")
    champion = {
        "registry": registry,
        "model_name": model_name,
        "version": details["version"],
        "uri": details["uri"],
        "threshold": metrics.operating_point.threshold,
        "test_auroc": metrics.test.auroc,
        "sensitivity": metrics.test.at_operating_point.recall,
        "healthy_cleared": metrics.test.at_operating_point.healthy_cleared,
        "images": setting("images", params),
        "worklists": setting("worklists", params),
        "s3_conn_id": conn_id,
    }
    log.info(
        "champion %s v%s at %s: test AUROC %.3f, threshold %.3f",
        model_name,
        champion["version"],
        champion["uri"],
        champion["test_auroc"],
        champion["threshold"],
    )
    return champion


def read_text(uri: str, conn_id: str) -> str:
    """A small text object, read in the task itself: ``s3://`` through the Amazon provider's hook and the same
    connection the stages get (its credentials never enter this process's environment), else a local path."""
    from xray_tasks import storage

    if storage.is_s3(uri):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            return storage.read_text(uri)  # no connection: the worker's own environment, as for the stages
        bucket, key = storage.split_s3(uri)
        return S3Hook(aws_conn_id=conn_id).read_key(key, bucket)
    return storage.read_text(uri)


def top_of_worklist(uri: str, rows: int, conn_id: str) -> list[dict[str, str]]:
    """The first ``rows`` rows of a CSV worklist, also written to the task log as a small table."""
    import csv
    import io

    top = list(csv.DictReader(io.StringIO(read_text(uri, conn_id))))[:rows]
    for row in top:
        log.info(
            "%4s  %-40s  %s  %s",
            row.get("rank"),
            row.get("image", "").rsplit("/", 1)[-1],
            row.get("probability") or "-",
            row.get("decision") or row.get("error"),
        )
    return top


@dag(
    schedule=[MODEL],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=TAGS,
    doc_md=__doc__,
    params={
        "images": Param("", type="string", description="Folder or s3:// prefix of new PNG studies"),
        "registry": Param("", type="string"),
        "model_name": Param("", type="string"),
        "worklists": Param("", type="string", description="Where worklists are written"),
        "top": Param(10, type="integer", minimum=0, maximum=1000, description="Rows shown in the log"),
        "drift_action": Param("", type="string", description="fail (default) or asset"),
    },
)
def xray_score():
    @task(execution_timeout=LIGHT_TIMEOUT)
    def champion(params=None, triggering_asset_events=None):
        """The current champion (version, threshold, test metrics) and every location scoring needs."""
        events = triggering_asset_events[MODEL] if triggering_asset_events else []
        return champion_of(params, events[-1].extra if events else None)

    @task(execution_timeout=HEAVY_TIMEOUT)
    def score(model: dict, params=None, run_id=None):
        """Every PNG under `images` -> a worklist CSV, highest risk first; returns its top rows."""
        from xray_tasks import storage

        name = WORKLIST_TEMPLATE.format(
            model_name=model["model_name"],
            version=model["version"],
            run="".join(c if c.isalnum() else "-" for c in run_id),
        )
        out = storage.join(model["worklists"], name)
        summary = run(
            "score",
            [
                "--registry",
                model["registry"],
                "--model-name",
                model["model_name"],
                "--version",
                model["version"],
                "--images",
                model["images"],
                "--out",
                out,
                "--profile",
                setting("profile", params),
                *drift_limits(),
            ],
            model,
        )
        summary["top"] = top_of_worklist(out, params["top"], model["s3_conn_id"])
        return summary

    @task(execution_timeout=LIGHT_TIMEOUT, retries=0, on_failure_callback=notify_person)
    def check_drift(summary: dict, params=None):
        """The batch against the champion's reference: fails past a limit, naming statistic, value and limit."""
        import json

        from xray_tasks.contracts import DriftReport
        from xray_tasks.registry.monitoring import verdict

        uri = summary["drift_json"]
        report = DriftReport.from_dict(json.loads(read_text(uri, setting("s3_conn_id", params))), where=uri)
        result, failure = verdict(report, setting("drift_action", params))
        if failure:
            raise AirflowFailException(f"{failure} (report: {uri}, plot: {summary.get('drift_plot')})")
        (log.warning if result["announce"] else log.info)("drift check: %s", report.message)
        return {**result, "drift_json": uri, "drift_plot": summary.get("drift_plot")}

    @task(execution_timeout=LIGHT_TIMEOUT, outlets=[DRIFT])
    def announce_drift(verdict: dict, outlet_events=None):
        """Emits `xray_drift` when the batch drifted and the deployment asked for an Asset instead of a failure."""
        if not verdict["announce"]:
            raise AirflowSkipException(f"nothing to announce: {verdict['status']}")
        outlet_events[DRIFT].extra = {k: verdict[k] for k in ("message", "drift_json", "version", "drifted")}

    announce_drift(check_drift(score(champion())))


def drift_limits() -> list[str]:
    """``--set drift.<key>=<value>`` for each drift limit the deployment's ``overrides`` setting holds."""
    return [
        arg
        for key, value in deployment_overrides().items()
        if key.startswith("drift.")
        for arg in ("--set", f"{key}={value}")
    ]


xray_score()
