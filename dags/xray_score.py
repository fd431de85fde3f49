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

Storage credentials come from the `aws` connection named by the setting `s3_conn_id` (default `xray_s3`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from xray_common import (
    DEFAULT_ARGS,
    HEAVY_TIMEOUT,
    LIGHT_TIMEOUT,
    MODEL,
    TAGS,
    champion_of,
    run,
    top_of_worklist,
)

WORKLIST_TEMPLATE = "{model_name}-v{version}-{run}.csv"


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
            ],
            model,
        )
        summary["top"] = top_of_worklist(out, params["top"], model["s3_conn_id"])
        return summary

    score(champion())


xray_score()
