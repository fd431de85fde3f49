"""
### Retrain the chest X-ray triage model, gate it, publish it

Runs when ingest emits **`xray_shards`** (the workspace comes from that event) or by hand with the form below:
`plan` (every setting resolved and validated before heavy work) -> frozen-base `features` -> `train_head` ->
`finetune` -> `evaluate` -> `gate_and_publish` -> `announce_champion`.  Feature extraction and fine-tuning run on
queue `gpu` in pool `gpu`.  The gate holds every candidate to absolute floors and, once there is a champion, to
that champion's AUROC on the candidate's test split.  A version that clears the gate (or is forced, with a reason)
becomes champion and **`xray_model`** is emitted; a rejected one is recorded in the registry with its reasons and
`announce_champion` is skipped, so downstream DAGs do not run.  The run folder is `<workspace>/runs/<run id>`,
so a retried task resumes the same run.

#### Assets
- consumes **`xray_shards`**: its `workspace` is trained on unless the `workspace` param is set.
- produces **`xray_model`** (from `announce_champion`, only when a version is promoted), with
  `extra = {registry, model_name, version, decision, run_dir}`; it schedules `xray_score`.

#### Params
Empty locations fall back to Airflow Variable `xray_<name>`, then config `[xray] <name>`, then env
`XRAY_<NAME>`, then a default under `$AIRFLOW_HOME/xray/`; empty training knobs keep the profile's value.
- `workspace`: the shard set to train on (default: the triggering event's); `registry`: the registry root.
- `model_name`: 1-64 characters of `a-z 0-9 . _ -`, starting with a letter or digit (default `xray-triage`).
- `profile`: `full` (default) or `demo`; `base`, `weights`: the frozen base network and its weights.
- `head_epochs`, `head_learning_rate`, `finetune_epochs`, `unfreeze_layers`, `finetune_learning_rate`,
  `target_sensitivity`: the training knobs of the form.
- `overrides`: any other config key, e.g. `{"gate.min_auroc": 0.7, "head.batch_size": 64}`, on top of the
  deployment-wide setting `overrides` (Variable `xray_overrides`, ...).
- `force_publish` + `force_reason`: promote even if the gate rejects; the reason and the triggering user are
  recorded with the decision.
- `force_retrain` + `retrain_reason`: train even though a complete version already has this run's fingerprint
  (same labels, splits, shards, config, code and base weights); otherwise `plan` logs "unchanged since version V"
  and every later task is skipped, so nothing is published or announced.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, chain, dag, task
from airflow.sdk.exceptions import AirflowSkipException
from xray_common import (
    DEFAULT_ARGS,
    HEAVY_TIMEOUT,
    LIGHT_TIMEOUT,
    MODEL,
    SHARDS,
    TAGS,
    log,
    plan_training,
    proceed_with_training,
    run,
)

from xray_tasks.settings import MODEL_NAME_PATTERN

OPTIONAL_INT = ["null", "integer"]
OPTIONAL_NUMBER = ["null", "number"]


@dag(
    schedule=[SHARDS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=TAGS,
    doc_md=__doc__,
    params={
        "workspace": Param(
            "", type="string", description="Shards to train on (default: the triggering event's)"
        ),
        "registry": Param("", type="string", description="Registry root, local path or s3://"),
        "model_name": Param("", type="string", pattern=f"^$|{MODEL_NAME_PATTERN}"),
        "profile": Param("", type="string", enum=["", "demo", "full"]),
        "base": Param("", type="string", enum=["", "resnet50", "efficientnetb0", "mobilenetv3small"]),
        "weights": Param("", type="string", description="imagenet, none, or a local weights file"),
        "head_epochs": Param(None, type=OPTIONAL_INT, minimum=1, maximum=5000),
        "head_learning_rate": Param(None, type=OPTIONAL_NUMBER, exclusiveMinimum=0, maximum=10),
        "finetune_epochs": Param(None, type=OPTIONAL_INT, minimum=1, maximum=500),
        "unfreeze_layers": Param(None, type=OPTIONAL_INT, minimum=0, maximum=1000),
        "finetune_learning_rate": Param(None, type=OPTIONAL_NUMBER, exclusiveMinimum=0, maximum=1),
        "target_sensitivity": Param(None, type=OPTIONAL_NUMBER, exclusiveMinimum=0, exclusiveMaximum=1),
        "overrides": Param({}, type="object", description="Other config keys, dotted: value"),
        "force_publish": Param(False, type="boolean", description="Promote even if the gate rejects"),
        "force_reason": Param("", type="string", description="Required with force_publish; recorded"),
        "force_retrain": Param(
            False, type="boolean", description="Train even if a version has this fingerprint"
        ),
        "retrain_reason": Param("", type="string", description="Required with force_retrain; recorded"),
    },
)
def xray_train():
    @task.short_circuit(execution_timeout=LIGHT_TIMEOUT)
    def plan(params=None, dag_run=None, triggering_asset_events=None):
        """Resolves every location and config key of the run and validates them; nothing heavy runs first.
        Skips the rest of the run when a complete version already has the run's fingerprint."""
        events = triggering_asset_events[SHARDS] if triggering_asset_events else []
        p = plan_training(
            params,
            dag_run.run_id,
            events[-1].extra if events else None,
            actor=getattr(dag_run, "triggering_user_name", None),
        )
        return p if proceed_with_training(p) else False

    @task(queue="gpu", pool="gpu", execution_timeout=HEAVY_TIMEOUT)
    def features(p: dict):
        """Runs the frozen base over every shard once and stores the pooled features (GPU)."""
        return run("features", ["--profile", p["profile"], "--workspace", p["workspace"], *p["sets"]], p)

    @task(execution_timeout=HEAVY_TIMEOUT)
    def train_head(p: dict):
        """Trains the classification head on the stored features; saves the resolved config in the run."""
        return run(
            "train",
            ["--profile", p["profile"], "--workspace", p["workspace"], "--run-dir", p["run_dir"], *p["sets"]],
            p,
        )

    @task(queue="gpu", pool="gpu", execution_timeout=HEAVY_TIMEOUT)
    def finetune(p: dict):
        """Unfreezes the top `unfreeze_layers` of the base and fine-tunes, resuming from checkpoints (GPU)."""
        # No --profile: the stage reuses the config train_head saved in the run, and resumes from checkpoints.
        return run("finetune", ["--workspace", p["workspace"], "--run-dir", p["run_dir"]], p)

    @task(execution_timeout=HEAVY_TIMEOUT)
    def evaluate(p: dict):
        """Test metrics, the operating point chosen on validation, and the plots."""
        summary = run("evaluate", ["--workspace", p["workspace"], "--run-dir", p["run_dir"]], p)
        summary.pop("plots", None)
        return summary

    @task(execution_timeout=LIGHT_TIMEOUT)
    def gate_and_publish(p: dict):
        """Publishes the candidate as a registry version with the gate's decision; promoted if passed or forced."""
        args = [
            "--profile",
            p["profile"],
            "--workspace",
            p["workspace"],
            "--registry",
            p["registry"],
            "--model-name",
            p["model_name"],
            "--run-dir",
            p["run_dir"],
            *p["sets"],
        ]
        if p["force_reason"]:
            args += ["--force", "--reason", p["force_reason"], "--actor", p["actor"]]
        from xray_tasks.contracts import PublishSummary

        result = run("publish", args, p)
        summary = PublishSummary.from_dict(result, "publish")
        log.info(
            "gate: %s; version %s; champion %s%s",
            summary.decision,
            summary.version,
            summary.champion,
            f"; reasons: {'; '.join(summary.reasons)}" if summary.reasons else "",
        )
        return result

    @task(outlets=[MODEL], execution_timeout=LIGHT_TIMEOUT)
    def announce_champion(result: dict, outlet_events=None):
        """Emits `xray_model` for a promoted version; skipped when the champion did not change."""
        from xray_tasks.contracts import PublishSummary

        summary = PublishSummary.from_dict(result, "gate_and_publish XCom")
        if not summary.promoted:
            raise AirflowSkipException(
                f"version {summary.version} not promoted ({summary.decision}): "
                f"{'; '.join(summary.reasons) or 'champion unchanged'}"
            )
        extra = {
            "registry": summary.registry,
            "model_name": summary.model_name,
            "version": summary.version,
            "decision": summary.decision,
            "run_dir": summary.run_dir,
        }
        outlet_events[MODEL].extra = extra
        return extra

    p = plan()
    published = gate_and_publish(p)
    chain(features(p), train_head(p), finetune(p), evaluate(p), published)
    announce_champion(published)


xray_train()
