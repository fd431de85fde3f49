"""
### NIH ChestX-ray14 archives -> validated TFRecord shards, only for news

Runs on the deployment's schedule (Airflow config `[xray] ingest_schedule`: a cron expression, a preset such as
`@daily`, or `none` for manual runs only; read when the file is parsed, without a database call) or by hand.
Archives are sharded in parallel up to `[xray] ingest_parallelism` at once (default `workers`: as many as the
`default` queue's worker slots allow).
`check_source` first compares the **source** (archive names, sizes and ETags; the metadata and split-list files'
sha256) with what the workspace last ingested and validated (`shards/source.json`).  With no news it short-circuits:
nothing is validated and no `xray_shards` event is emitted, so no retraining starts; its log says what it compared.
Otherwise `manifest` rebuilds labels and patient-wise splits when the metadata or lists changed, every new or
changed archive is sharded in a mapped task of its own (named after the archive in the UI; an archive whose bytes
or labels changed has its old commit withdrawn first), and `validate` checks the whole shard set: every image
accounted for, no patient in two splits, a quarantine summary.

#### Assets
- produces **`xray_shards`** (from `validate`, only when there was news), with
  `extra = {workspace, images, shards, counts, format, ingested}`; it schedules `xray_train` on that workspace.

#### Params
Each empty param falls back to Airflow Variable `xray_<name>`, then config `[xray] <name>`, then env
`XRAY_<NAME>`, then a default under `$AIRFLOW_HOME/xray/`.
- `source`: folder or `s3://` prefix with the archives and `Data_Entry_2017*.csv` (and the official
  `train_val_list.txt` / `test_list.txt`, when present, for the splits).
- `workspace`: folder or `s3://` prefix the manifest and shards go to.
- `profile`: `full` (the default) or `demo` (small images, minutes on a laptop).

Storage credentials come from the `aws` connection named by the setting `s3_conn_id` (default `xray_s3`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from xray_common import (
    DEFAULT_ARGS,
    LIGHT_TIMEOUT,
    SHARDS,
    TAGS,
    config_args,
    ingest_parallelism,
    ingest_schedule,
    log,
    run,
    setting,
)


@dag(
    schedule=ingest_schedule(),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=TAGS,
    doc_md=__doc__,
    params={
        "source": Param(
            "", type="string", title="Source", description="Folder or s3:// prefix with the archives"
        ),
        "workspace": Param("", type="string", title="Workspace", description="Where manifest and shards go"),
        "profile": Param("", type="string", enum=["", "demo", "full"], title="Profile"),
    },
)
def xray_ingest():
    @task.short_circuit(execution_timeout=LIGHT_TIMEOUT)
    def check_source(params=None):
        """Compares the source with what was ingested; without news, skips everything after it."""
        from xray_tasks.contracts import SourceCheck

        result = run("check-source", config_args(params, "source", "workspace"), params)
        check = SourceCheck.from_dict(result, "check-source")
        log.info("compared %s", check.compared)
        if not check.news:
            log.info("no news at %s: nothing to ingest, no validation, no xray_shards event", check.source)
            return False
        log.info("news: %s; ingesting %d archive(s)", "; ".join(check.reasons), len(check.ingest))
        return result

    @task(execution_timeout=LIGHT_TIMEOUT)
    def manifest(check: dict, params=None):
        """Labels, patient-wise train/val/test splits and the image list, rebuilt when the metadata changed."""
        if not check["rebuild_manifest"]:
            log.info("metadata and split lists unchanged: the manifest stays")
            return {"rebuilt": False}
        return {"rebuilt": True, **run("manifest", config_args(params, "source", "workspace"), params)}

    @task
    def archives_to_ingest(check: dict) -> list[str]:
        """The new and changed archives only."""
        return list(check["ingest"])

    # A mapped task gets no doc_md from its docstring (Airflow 3.3 sets it in __call__, not in expand).
    @task(
        map_index_template="{{ task.op_kwargs['archive'].rsplit('/', 1)[-1] }}",
        max_active_tis_per_dagrun=ingest_parallelism(),
        doc_md="One archive -> its TFRecord shards and commit marker; undecodable images are quarantined.",
    )
    def ingest_archive(archive: str, check: dict, params=None):
        from xray_tasks.contracts import ArchiveSummary

        if archive in check["replace"]:
            run("retire-archive", [archive, *config_args(params, "workspace")], params)
        result = run("ingest-archive", [archive, *config_args(params, "workspace")], params)
        summary = ArchiveSummary.from_dict(result, f"ingest-archive {archive}")
        log.info(
            "%s: %s images, %s quarantined, %s images/s%s",
            summary.archive,
            summary.members.sharded,
            summary.members.quarantined,
            summary.images_per_s,
            " (already committed)" if summary.skipped else "",
        )
        return result

    # none_failed: metadata that changed without relabelling any committed image ingests no archive, and the
    # set is still validated and the new source state recorded (the short-circuit above skips regardless).
    @task(outlets=[SHARDS], execution_timeout=LIGHT_TIMEOUT, trigger_rule="none_failed")
    def validate(archives: list[dict], check: dict, params=None, outlet_events=None):
        """Checks the whole shard set against the manifest, records the source as ingested and emits
        `xray_shards` for training."""
        import json

        from xray_tasks.contracts import ArchiveSummary, ValidationSummary

        result = run("validate", config_args(params, "workspace"), params)
        summary = ValidationSummary.from_dict(result, "validate")
        sharded = sum(ArchiveSummary.from_dict(a, "ingest_archive XCom").members.sharded for a in archives)
        if sharded > summary.images:
            raise ValueError(
                f"archives report {sharded} sharded images, the shard set holds only {summary.images}"
            )
        log.info(
            "shard set: %d images in %d shards; quarantined %s; missing %d",
            summary.images,
            summary.shards,
            summary.quarantined.by_kind,
            summary.missing.count,
        )
        state = json.dumps(check["state"])
        run("record-source", [*config_args(params, "workspace"), "--state", state], params)
        outlet_events[SHARDS].extra = {
            "workspace": setting("workspace", params),
            "images": summary.images,
            "shards": summary.shards,
            "counts": result["counts"],
            "format": summary.format,
            "ingested": [a.rsplit("/", 1)[-1] for a in check["ingest"]],
        }
        return result

    check = check_source()
    shards = ingest_archive.partial(check=check).expand(archive=archives_to_ingest(check))
    manifest(check) >> shards
    validate(shards, check)


xray_ingest()
