"""
### NIH ChestX-ray14 archives -> validated TFRecord shards

Lists the `images_*.tar.gz` archives at the **source**, builds the manifest (labels and patient-wise splits from
the metadata), shards every archive in a mapped task of its own (named after the archive in the UI), then
validates the whole shard set: every image accounted for, no patient in two splits, a quarantine summary.
Archives already committed are skipped, so a rerun only does what is missing.

#### Assets
- produces **`xray_shards`** (from `validate`), with `extra = {workspace, images, shards, counts, format}`;
  it schedules `xray_train` on that workspace.

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
from xray_common import DEFAULT_ARGS, LIGHT_TIMEOUT, SHARDS, TAGS, config_args, log, run, setting


@dag(
    schedule=None,
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
    @task(execution_timeout=LIGHT_TIMEOUT)
    def list_archives(params=None) -> list[str]:
        """The `images_*.tar.gz` archives at the source, in order; fails when there are none."""
        archives = run("list-archives", [setting("source", params)], params)["archives"]
        if not archives:
            raise ValueError(f"no images_*.tar.gz archives at {setting('source', params)!r}")
        return archives

    @task(execution_timeout=LIGHT_TIMEOUT)
    def manifest(params=None):
        """Labels, patient-wise train/val/test splits and the image list, from the source's metadata files."""
        return run("manifest", config_args(params, "source", "workspace"), params)

    # A mapped task gets no doc_md from its docstring (Airflow 3.3 sets it in __call__, not in expand).
    @task(
        map_index_template="{{ task.op_kwargs['archive'].rsplit('/', 1)[-1] }}",
        max_active_tis_per_dagrun=4,
        doc_md="One archive -> its TFRecord shards and commit marker; undecodable images are quarantined.",
    )
    def ingest_archive(archive: str, params=None):
        from xray_tasks.contracts import ArchiveSummary

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

    @task(outlets=[SHARDS], execution_timeout=LIGHT_TIMEOUT)
    def validate(archives: list[dict], params=None, outlet_events=None):
        """Checks the whole shard set against the manifest and emits `xray_shards` for training."""
        from xray_tasks.contracts import ArchiveSummary, ValidationSummary

        result = run("validate", config_args(params, "workspace"), params)
        summary = ValidationSummary.from_dict(result, "validate")
        sharded = sum(ArchiveSummary.from_dict(a, "ingest_archive XCom").members.sharded for a in archives)
        if sharded != summary.images:
            raise ValueError(
                f"archives report {sharded} sharded images, the shard set holds {summary.images}"
            )
        log.info(
            "shard set: %d images in %d shards; quarantined %s; missing %d",
            summary.images,
            summary.shards,
            summary.quarantined.by_kind,
            summary.missing.count,
        )
        outlet_events[SHARDS].extra = {
            "workspace": setting("workspace", params),
            "images": summary.images,
            "shards": summary.shards,
            "counts": result["counts"],
            "format": summary.format,
        }
        return result

    shards = ingest_archive.expand(archive=list_archives())
    manifest() >> shards
    validate(shards)


xray_ingest()
