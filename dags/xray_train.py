"""
### Retrain the chest X-ray triage model, gate it, stage it, have it signed off, promote it

Runs when ingest emits **`xray_shards`** (the workspace comes from that event) or by hand with the form below:
`plan` (every setting resolved and validated before heavy work) -> `feature_groups` -> frozen-base `features`
(mapped: one task per group of shards, as many groups as the gpu pool has slots) -> `train_head` ->
`finetune` -> `evaluate` -> `stage_candidate` -> `approval` -> `promote` -> `announce_champion`, and
`record_rejection`, with `baseline` (the metadata-only model, seconds, once per manifest) beside them before
`evaluate`.  Feature extraction and fine-tuning run on queue `gpu` in pool `gpu`.

- `stage_candidate`: the gate holds the run to absolute floors, to the metadata baseline (profile `full`) and,
  once there is a champion, to a paired comparison with it on the candidate's test split.  A run that clears it
  is staged as a **candidate** version (uploaded, verified, signed when the `xray_signing` connection holds a
  key; the champion does not move).  A rejected run is recorded with its reasons and everything after it is
  skipped.
- `approval`: a reviewer approves or rejects on Airflow's **required actions** page; the body shows candidate
  against champion, their deltas, the gate's checks and a link to the Models page.  The deployment's approval
  policy (`approval.policy`: `required`, the default of profile `full`, or `auto`, that of profile `demo`)
  decides whether anyone is asked; after `approval.timeout_hours` the answer is Reject.
- `promote`: compare-and-swap of the champion pointer, with the approver and the reason; `announce_champion`
  then emits **`xray_model`**.  `record_rejection`: a Reject (`rejected_by_reviewer`) or a timeout
  (`approval_timed_out`) goes into the version's decision log with who and the comment.

The run folder is `<workspace>/runs/<run id>`, so a retried task resumes the same run.

#### Assets
- consumes **`xray_shards`**: its `workspace` is trained on unless the `workspace` param is set.
- produces **`xray_model`** (from `announce_champion`, only when a version is promoted), with
  `extra = {registry, model_name, version, decision, run_dir}`; it schedules `xray_score`.

#### Governance
The gate policy and the approval policy belong to the deployment: config, `[xray] overrides` or Variable
`xray_overrides` (set by admins).  A run whose params change any `gate.*` key (through `overrides`, or a profile
with another gate) is a **forced** publish: it needs `force_reason` and a triggering user, and the keys it
changed are recorded.  A run cannot set `approval.*`; the policy follows the deployment's `profile` setting, never
the run's `profile` param.

#### Params
Empty locations fall back to Airflow Variable `xray_<name>`, then config `[xray] <name>`, then env
`XRAY_<NAME>`, then a default under `$AIRFLOW_HOME/xray/`; empty training knobs keep the profile's value.
- `workspace`: the shard set to train on (default: the triggering event's); `registry`: the registry root.
- `model_name`: 1-64 characters of `a-z 0-9 . _ -`, starting with a letter or digit (default `xray-triage`).
- `profile`: `full` (default) or `demo`; `base`, `weights`: the frozen base network and its weights.
- `head_epochs`, `head_learning_rate`, `finetune_epochs`, `unfreeze_layers`, `finetune_learning_rate`,
  `target_sensitivity`: the training knobs of the form.
- `overrides`: any other config key, e.g. `{"head.batch_size": 64}`, on top of the deployment-wide setting
  `overrides` (Variable `xray_overrides`, ...); a `gate.*` key makes the run a forced publish (above).
- `force_publish` + `force_reason`: stage the candidate even if the gate rejects it; it still needs approval,
  and is promoted as `forced`; the reason and the triggering user are recorded with the decision.
- `force_retrain` + `retrain_reason`: train even though a complete version already has this run's fingerprint
  (same labels, splits, shards, config, code and base weights); otherwise `plan` logs "unchanged since version V"
  and every later task is skipped, so nothing is published or announced.
"""

from __future__ import annotations

import json
import os
import tempfile

import pendulum
from airflow.sdk import Param, TriggerRule, chain, dag, task
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
from xray_governance import RESPONSE_KEY, CandidateApproval, outcome, review, signing_env

from xray_tasks.settings import MODEL_NAME_PATTERN

STAGED = ("candidate", "forced")
"""Decisions of `publish --stage` that leave a candidate for approval (`rejected`: the gate refused it)."""
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
        "force_publish": Param(False, type="boolean", description="Stage even if the gate rejects"),
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

    @task(execution_timeout=LIGHT_TIMEOUT)
    def feature_groups(p: dict) -> list[str]:
        """One group of shards per GPU slot (setting `feature_groups`, default `XRAY_GPU_SLOTS` or 1)."""
        n = p["feature_groups"]
        log.info("features: %d group(s) of shards, one mapped task each on the gpu queue", n)
        return [f"{i}/{n}" for i in range(n)]

    # A mapped task gets no doc_md from its docstring (Airflow 3.3 sets it in __call__, not in expand).
    @task(
        queue="gpu",
        pool="gpu",
        execution_timeout=HEAVY_TIMEOUT,
        map_index_template="group {{ task.op_kwargs['group'] }}",
        doc_md="The frozen base over one group of the shards (every n-th); resumable per shard (GPU).",
    )
    def features(p: dict, group: str):
        """Runs the frozen base over one group of the shards once and stores the pooled features (GPU)."""
        args = ["--profile", p["profile"], "--workspace", p["workspace"], "--group", group, *p["sets"]]
        return run("features", args, p)

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

    @task(execution_timeout=LIGHT_TIMEOUT)
    def baseline(p: dict):
        """Fits the metadata-only baseline of the workspace's manifest, once per manifest (seconds); evaluate
        ranks the model against it and the gate's `gate.require_baseline` floor (on in profile `full`) needs it."""
        return run("baseline", ["--profile", p["profile"], "--workspace", p["workspace"], *p["sets"]], p)

    @task(execution_timeout=HEAVY_TIMEOUT)
    def evaluate(p: dict):
        """Test metrics, the operating point chosen on validation, and the plots."""
        summary = run("evaluate", ["--workspace", p["workspace"], "--run-dir", p["run_dir"]], p)
        summary.pop("plots", None)
        return summary

    @task(execution_timeout=LIGHT_TIMEOUT)
    def stage_candidate(p: dict):
        """Gates the run and stages it as a candidate version (uploaded, verified, signed); the champion stays."""
        from xray_tasks.contracts import PublishSummary

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
            "--stage",
        ]
        args += ["--actor", p["actor"]]  # who triggered the run: recorded with the candidate
        if p["forced"]:
            args += ["--force", "--reason", p["force_reason"]]
        with tempfile.TemporaryDirectory(prefix="xray-policy-") as tmp:
            # The deployment's gate policy as --config: publish records the keys the run's --set changed against it.
            policy = os.path.join(tmp, "deployment.json")
            with open(policy, "w") as fh:
                json.dump({"gate": p["deployment_gate"]}, fh)
            result = run("publish", [*args, "--config", policy], p, extra_env=signing_env())
        summary = PublishSummary.from_dict(result, "publish")
        log.info(
            "gate: %s; version %s; champion %s%s",
            summary.decision,
            summary.version,
            summary.champion,
            f"; reasons: {'; '.join(summary.reasons)}" if summary.reasons else "",
        )
        staged = summary.decision in STAGED
        return {
            **result,
            "forced": p["forced"],
            "approval": p["approval"],
            "subject": f"Promote {summary.model_name} v{summary.version} to champion?" if staged else "",
            "review": review(p, result) if staged else "",
        }

    approval = CandidateApproval(task_id="approval", candidate_task="stage_candidate")
    approval.doc_md = (
        "The reviewer's sign-off: candidate against champion, the gate's checks, a link to the Models page. "
        "Approve promotes it; Reject (or no answer before the approval policy's timeout) records why, and the "
        "champion stays.  Approved by the policy, with no one asked, under `approval.policy = auto`."
    )

    @task(execution_timeout=LIGHT_TIMEOUT)
    def promote(p: dict, staged: dict, response: dict):
        """Moves the champion to the approved candidate (compare-and-swap), recording who approved it and why."""
        decided = outcome(response)
        if decided is None or decided["decision"] != "approved":
            raise AirflowSkipException("the candidate was not approved")
        reason = decided["comment"] or f"approved in Airflow ({decided['actor']})"
        args = ["promote", "--registry", p["registry"], "--model-name", p["model_name"]]
        args += ["--version", staged["version"], "--reason", reason, "--actor", decided["actor"]]
        args += ["--decision", "forced" if staged.get("forced") else "approved"]
        # Compare-and-swap against the champion the reviewer compared with: a champion promoted meanwhile refuses.
        args += ["--expected-champion", staged.get("previous_champion") or "none"]
        result = run("models", args, p)
        log.info("champion %s -> %s (%s)", result.get("previous_champion"), result.get("version"), decided)
        return {**result, "registry": p["registry"], "model_name": p["model_name"], "run_dir": p["run_dir"]}

    @task(trigger_rule=TriggerRule.ALL_DONE, execution_timeout=LIGHT_TIMEOUT)
    def record_rejection(p: dict, ti=None):
        """Records a reviewer's Reject or an approval timeout in the registry, with who and the comment."""
        staged = ti.xcom_pull(task_ids="stage_candidate") or {}
        decided = outcome(ti.xcom_pull(task_ids="approval", key=RESPONSE_KEY))
        if decided is None or decided["decision"] == "approved":
            raise AirflowSkipException("nothing to record: no candidate was rejected here")
        args = ["reject", "--registry", p["registry"], "--model-name", p["model_name"]]
        args += [
            "--version",
            staged["version"],
            "--decision",
            decided["decision"],
            "--actor",
            decided["actor"],
        ]
        if decided["comment"]:
            args += ["--comment", decided["comment"]]
        log.info("version %s: %s by %s", staged["version"], decided["decision"], decided["actor"])
        return run("models", args, p)

    @task(outlets=[MODEL], execution_timeout=LIGHT_TIMEOUT)
    def announce_champion(result: dict, outlet_events=None):
        """Emits `xray_model` for the version just promoted, so that scoring runs with it."""
        extra = {
            "registry": result["registry"],
            "model_name": result["model_name"],
            "version": result["version"],
            "decision": result["decision"],
            "run_dir": result["run_dir"],
        }
        outlet_events[MODEL].extra = extra
        return extra

    p = plan()
    staged = stage_candidate(p)
    evaluated = evaluate(p)
    extracted = features.partial(p=p).expand(group=feature_groups(p))
    chain(extracted, train_head(p), finetune(p), evaluated, staged, approval)
    baseline(p) >> evaluated
    promoted = promote(p, staged, approval.output)
    announce_champion(promoted)
    promoted >> record_rejection(p)


xray_train()
