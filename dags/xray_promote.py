"""
### Put a version back as champion (rollback), or promote a pinned one, from the UI

Run by hand only, with the form below: `promote` moves the registry's champion pointer to `version` by
compare-and-swap (`xray-tasks models promote`), refusing an incomplete, unverified, or (when keys are
configured) unsigned version, and records the previous champion, who triggered the run and the reason in the
version's decision log.  `announce_champion` then emits **`xray_model`**, so `xray_score` runs again with the
restored champion.

#### Assets
- produces **`xray_model`** with `extra = {registry, model_name, version, decision, previous_champion}`; it
  schedules `xray_score`.

#### Params
- `version`: the version to make champion, e.g. `7` or `000007` (see the Models page).
- `reason`: why, in words (recorded; required).
- `decision`: `rolled_back` (default: putting an earlier version back) or `approved` (promoting a reviewed one).
- `registry`, `model_name`: where the model is; empty falls back to Variable `xray_<name>`, then config
  `[xray] <name>`, then env `XRAY_<NAME>`, then the default (`xray-triage`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from xray_common import DEFAULT_ARGS, LIGHT_TIMEOUT, MODEL, TAGS, log, run, setting

from xray_tasks.settings import MODEL_NAME_PATTERN


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 0},
    tags=TAGS,
    doc_md=__doc__,
    params={
        "version": Param("", type="string", pattern=r"^[0-9]{1,6}$", description="Version to make champion"),
        "reason": Param("", type="string", minLength=1, description="Why (recorded with the decision)"),
        "decision": Param("rolled_back", type="string", enum=["rolled_back", "approved"]),
        "registry": Param("", type="string", description="Registry root, local path or s3://"),
        "model_name": Param("", type="string", pattern=f"^$|{MODEL_NAME_PATTERN}"),
    },
)
def xray_promote():
    @task(execution_timeout=LIGHT_TIMEOUT)
    def promote(params=None, dag_run=None):
        """Moves the champion to `version` (compare-and-swap), recording the previous one, who and why."""
        from xray_tasks.registry.layout import check_name

        reason = str(params.get("reason") or "").strip()
        if not reason:
            raise ValueError("reason is required: it is recorded with the decision in the registry")
        user = getattr(dag_run, "triggering_user_name", None)
        if not user:
            raise ValueError(
                "this run has no triggering user to record: trigger it from the UI or the REST API"
            )
        registry = setting("registry", params)
        model_name = check_name(setting("model_name", params))
        result = run(
            "models",
            [
                "promote",
                "--registry",
                registry,
                "--model-name",
                model_name,
                "--version",
                params["version"],
                "--reason",
                reason,
                "--actor",
                f"airflow:{user}",
                "--decision",
                params["decision"],
            ],
            params,
        )
        log.info("champion %s -> %s (%s)", result.get("previous_champion"), result["version"], reason)
        return {**result, "registry": registry, "model_name": model_name}

    @task(outlets=[MODEL], execution_timeout=LIGHT_TIMEOUT)
    def announce_champion(result: dict, outlet_events=None):
        """Emits `xray_model` for the restored champion, so that scoring runs with it."""
        extra = {
            "registry": result["registry"],
            "model_name": result["model_name"],
            "version": result["version"],
            "decision": result["decision"],
            "previous_champion": result.get("previous_champion"),
        }
        outlet_events[MODEL].extra = extra
        return extra

    announce_champion(promote())


xray_promote()
