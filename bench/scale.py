"""NIH scale, rehearsed: the three DAGs on the cluster harness, on ChestX-ray14's real names at 1/16, 1/4 and 1/1.

    .venv/bin/python bench/scale.py [--fractions 1/16,1/4,1] [--meta ../shared/nih/meta] [--image-size 32]
                                    [--out test-artifacts/scale.json] [--keep DIR]

For each fraction, a tree shaped like NIH's download: the real 2020 metadata's rows of a patient-wise share of the
30,805 patients (every image of a chosen patient, none of the others), the official lists cut to them, and 12
``images_NNN.tar.gz`` in name order with NIH's proportions.  The images are tiny (``--image-size`` px, default 32:
a smooth field with noise, a bright patch for a finding) so that 112,120 of them fit on two cores; what is measured
is the orchestration and the data path at full count, not the model.

Each fraction gets a fresh cluster (``tests/support/cluster.py``: PostgreSQL, Redis, SeaweedFS, api-server,
scheduler, dag-processor, Celery workers ``default`` and ``gpu``) and runs, as the distributed test does: ingest
(12 mapped archives, triggered by REST) -> training (the ``xray_shards`` asset: features, head, one fine-tune epoch
on MobileNetV3Small, evaluation on the whole test split, publish) -> scoring (the champion's asset) of a batch of
new studies.  Per stage (task id; a mapped task's map indexes together) it records:

- wall time (first start to last end), the task instances' summed duration;
- CPU time and peak RSS of the stage process (``xray_tasks.runner``: ``_cpu_s``, ``_peak_rss_mb``);
- the largest XCom (the metadata database's serialized value);
and per fraction the commit markers' and other workspace metadata's sizes, and the orchestration overhead: the
end-to-end wall time (ingest's start to scoring's end) in which no stage process ran.

It then prints, per 4x of work, how each stage's wall and CPU time grow (``(t(4f) / t(f)) / 4``: 1.0 is linear)
against the targets (at most 1.25; peak RSS under 2 GB at full size; no XCom over 64 KB; overhead under 10% at the
largest fraction) and writes everything to ``--out``.  Not part of CI: CI runs ``--fractions 1/64`` as a smoke test
(tests/system/test_scale_smoke.py), which checks the run and the bounds that do not depend on size.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import logging
import sys
import tarfile
import tempfile
import time
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

logger = logging.getLogger("bench.scale")

METADATA = "Data_Entry_2017_v2020.csv"
LISTS = ("train_val_list.txt", "test_list.txt")
NIH_ARCHIVE_SIZES = (4999, *(10000,) * 10, 7121)
"""How NIH's 112,120 images fall into images_001 .. images_012, in name order."""
DAGS = ("xray_ingest", "xray_train", "xray_score")
OVERRIDES = {
    "ingest.image_size": 32,
    "features.input_size": 32,
    "features.batch_size": 256,
    "head.epochs": 20,
    "head.patience": 5,
    "head.batch_size": 256,
    "finetune.epochs": 1,
    "finetune.batch_size": 64,
    "evaluate.batch_size": 256,
    "evaluate.bootstrap": 100,
}
"""Tiny images and one fine-tune epoch: the orchestration at full count, not the model, is measured."""
GATE = {"gate.sensitivity_tolerance": 0.15}
"""As the distributed test: the rehearsal proves the path, not the model (the gate is tested on its own)."""
BOUNDS = {"growth_per_4x": 1.25, "peak_rss_mb": 2048.0, "xcom_bytes": 64 * 1024, "overhead_share": 0.10}
INCOMING_FULL = 512
"""New studies scored at full size (scaled with the fraction, at least 16)."""


# -- the tree ----------------------------------------------------------------------------------------------------
def chosen(patient: str, fraction: Fraction) -> bool:
    """Whether a patient is in the ``fraction`` subset: a fixed hash of the id, so a smaller subset is nested in a
    larger one and every image of a patient goes with it (the splits stay patient-wise)."""
    return fraction >= 1 or Fraction(zlib.crc32(patient.encode()), 2**32) < fraction


def tiny_png(name: str, unhealthy: bool, size: int) -> bytes:
    """A deterministic ``size`` px grey PNG for ``name``: a smooth field plus noise; a finding adds a bright patch."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(zlib.crc32(name.encode()))
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 90 + 60 * yy + rng.normal(0, 12, (size, size))
    if unhealthy:
        cy, cx = rng.uniform(0.3, 0.7, 2)
        image += 70 * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01))
    out = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(
        out, format="PNG", compress_level=1
    )
    return out.getvalue()


def archive_sizes(total: int) -> list[int]:
    """``total`` names over 12 archives in NIH's proportions (the last takes the rounding)."""
    full = sum(NIH_ARCHIVE_SIZES)
    sizes = [round(total * n / full) for n in NIH_ARCHIVE_SIZES[:-1]]
    return [*sizes, total - sum(sizes)]


def build_tree(meta: Path, out: Path, fraction: Fraction, image_size: int) -> dict[str, Any]:
    """The NIH-shaped source for ``fraction`` under ``out/source`` and new studies under ``out/incoming``."""
    source, incoming = out / "source", out / "incoming"
    source.mkdir(parents=True)
    incoming.mkdir()
    raw = (meta / METADATA).read_bytes()
    newline = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
    lines = [line for line in raw.split(newline) if line]
    header = next(csv.reader([lines[0].decode()]))
    name_at, labels_at, patient_at = (
        header.index(c) for c in ("Image Index", "Finding Labels", "Patient ID")
    )
    kept, rows = [lines[0]], []
    for line in lines[1:]:
        row = next(csv.reader([line.decode()]))
        if chosen(row[patient_at], fraction):
            kept.append(line)
            rows.append((row[name_at], row[labels_at] != "No Finding", row[patient_at]))
    (source / METADATA).write_bytes(newline.join(kept) + newline)
    wanted = {name for name, _, _ in rows}
    for list_name in LISTS:
        listed = (meta / list_name).read_text().split()
        (source / list_name).write_text("".join(f"{n}\n" for n in listed if n in wanted))
    rows.sort()
    start = 0
    for number, size in enumerate(archive_sizes(len(rows)), start=1):
        with tarfile.open(source / f"images_{number:03d}.tar.gz", "w:gz", compresslevel=1) as tar:
            for name, unhealthy, _ in rows[start : start + size]:
                data = tiny_png(name, unhealthy, image_size)
                member = tarfile.TarInfo(f"images/{name}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        start += size
    # New studies: names no archive holds, a healthy and unhealthy mix.
    n_new = max(16, round(INCOMING_FULL * float(min(fraction, 1))))
    for i in range(n_new):
        name = f"{90000 + i:08d}_000.png"
        (incoming / name).write_bytes(tiny_png(name, i % 3 != 0, image_size))
    test = len((source / "test_list.txt").read_text().split())
    return {
        "fraction": str(fraction),
        "images": len(rows),
        "patients": len({p for _, _, p in rows}),
        "test_images": test,
        "incoming": n_new,
        "archive_bytes": sum(p.stat().st_size for p in source.glob("images_*.tar.gz")),
    }


# -- one rehearsal -----------------------------------------------------------------------------------------------
def rehearse(
    fraction: Fraction, meta: Path, image_size: int, root: Path, gpu_workers: int = 1
) -> dict[str, Any]:
    """Build the tree, start a cluster (``gpu_workers`` on the gpu queue, one feature group each), run ingest ->
    training -> scoring, and measure it."""
    from support.cluster import Cluster

    started = time.monotonic()
    tree = build_tree(meta, root / "data", fraction, image_size)
    tree["build_s"] = round(time.monotonic() - started, 1)
    logger.info("fraction %s: %s", fraction, tree)
    timeout = 900 + 3 * tree["images"] / 10  # generous: a hang is reported, not waited on forever
    cluster = Cluster(root / "cluster", retries=0, heartbeat_timeout=120, gpu_workers=gpu_workers)
    with cluster:
        cluster.upload_tree(root / "data" / "source", "source")
        cluster.upload_tree(root / "data" / "incoming", "incoming")
        for key, value in {
            "xray_images": cluster.uri("incoming"),
            "xray_worklists": cluster.uri("worklists"),
            "xray_overrides": json.dumps({**OVERRIDES, **GATE}),
            # The tiny PNGs are 32 px where the metadata's originals are ~2,500 (the reference profile's sizes):
            # check_drift rightly calls that drift (psi:original_size); here it announces instead of failing.
            "xray_drift_action": "asset",
        }.items():
            cluster.api_json("POST", "/api/v2/variables", {"key": key, "value": value}, expect=(201,))
        cluster.wait_for_dags(DAGS)
        for dag_id in DAGS:
            cluster.unpause(dag_id)
        runs: dict[str, dict[str, Any]] = {}
        run_id = cluster.trigger(
            "xray_ingest", {"source": cluster.uri("source"), "workspace": cluster.uri("workspace")}
        )
        runs["xray_ingest"] = cluster.wait_run("xray_ingest", run_id, timeout) | {"dag_run_id": run_id}
        for dag_id in DAGS[1:]:
            if runs[list(runs)[-1]]["state"] != "success":
                break
            run_id = cluster.wait_new_run(dag_id, [], 600)
            runs[dag_id] = cluster.wait_run(dag_id, run_id, timeout) | {"dag_run_id": run_id}
        result = measure(cluster, runs)
    result["tree"] = tree
    result["gpu_workers"] = gpu_workers
    result["total_s"] = round(time.monotonic() - started, 1)
    return result


def measure(cluster: Any, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per stage: wall, summed duration, CPU, peak RSS, largest XCom; per run: metadata sizes and overhead."""
    xcoms, usage = {}, {}
    for dag, task, index, key, text in cluster.query(
        "SELECT dag_id, task_id, map_index, key, value::text FROM xcom WHERE key IN ('return_value', 'xray_stages')"
    ):
        if text is not None:
            (xcoms if key == "return_value" else usage)[(dag, task, int(index))] = json.loads(text)
    stages: dict[str, dict[str, Any]] = {}
    busy: list[tuple[float, float]] = []
    tasks: list[tuple[float, float, str]] = []
    failed = []
    for dag_id, run in runs.items():
        for ti in cluster.task_instances(dag_id, run["dag_run_id"]):
            if ti["state"] not in ("success", "skipped"):
                failed.append(f"{dag_id}.{ti['task_id']}[{ti['map_index']}]: {ti['state']}")
            if not ti.get("start_date") or not ti.get("end_date"):
                continue
            begin, end = _seconds(ti["start_date"]), _seconds(ti["end_date"])
            tasks.append((begin, end, f"{dag_id}.{ti['task_id']}"))
            xcom = xcoms.get((dag_id, ti["task_id"], int(ti["map_index"])))
            # Every stage process the task ran (dags/xray_common.run records them under XCom key xray_stages).
            ran = _stages_of(usage.get((dag_id, ti["task_id"], int(ti["map_index"]))))
            stage = stages.setdefault(
                f"{dag_id}.{ti['task_id']}",
                {"tasks": 0, "begin": begin, "end": end, "task_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0,
                 "stage_s": 0.0, "xcom_bytes": 0},
            )  # fmt: skip
            stage["tasks"] += 1
            stage["begin"], stage["end"] = min(stage["begin"], begin), max(stage["end"], end)
            stage["task_s"] += end - begin
            stage["xcom_bytes"] = max(stage["xcom_bytes"], len(json.dumps(xcom)) if xcom is not None else 0)
            for one in ran:
                elapsed = one.get("elapsed_s") or 0.0
                stage["stage_s"] += elapsed
                stage["cpu_s"] += one.get("cpu_s") or 0.0
                stage["peak_rss_mb"] = max(stage["peak_rss_mb"], one.get("peak_rss_mb") or 0.0)
                busy.append((one["ended_at"] - elapsed, one["ended_at"]))
    first = min(s["begin"] for s in stages.values())
    last = max(s["end"] for s in stages.values())
    for stage in stages.values():
        stage["wall_s"] = round(stage.pop("end") - stage.pop("begin"), 2)
        stage.update({k: round(stage[k], 2) for k in ("task_s", "cpu_s", "stage_s")})
    in_stages = _union(busy)
    in_tasks = _union([(begin, end) for begin, end, _ in tasks])
    return {
        "states": {dag_id: run["state"] for dag_id, run in runs.items()},
        "failed_tasks": failed,
        "stages": stages,
        "end_to_end_s": round(last - first, 1),
        "in_stages_s": round(in_stages, 1),
        "overhead_share": round(1 - in_stages / (last - first), 4) if last > first else None,
        # The overhead in two parts: no task instance running (the scheduler and the executor between tasks), and
        # a task running but no stage process (task start-up, the tasks that run no stage process); the largest
        # gaps name the task that started after them.
        "between_tasks_s": round(last - first - in_tasks, 1),
        "in_tasks_not_stages_s": round(in_tasks - in_stages, 1),
        "largest_gaps": _gaps(tasks)[:8],
        # Every task instance as (start, end, name), in seconds from the first start: where the gaps fall.
        "timeline": [(round(b - first, 2), round(e - first, 2), name) for b, e, name in sorted(tasks)],
        "largest_xcom_bytes": max(s["xcom_bytes"] for s in stages.values()),
        "workspace": workspace_sizes(cluster),
    }


def workspace_sizes(cluster: Any) -> dict[str, Any]:
    """Sizes of what the workspace holds besides shards and features: commit markers, manifest, the rest."""
    paginator = cluster.s3().get_paginator("list_objects_v2")
    sizes: dict[str, list[int]] = {"markers": [], "shards": [], "features": [], "metadata": []}
    largest_metadata: dict[str, int] = {}
    for page in paginator.paginate(Bucket=cluster.bucket, Prefix="workspace/"):
        for obj in page.get("Contents", []):
            key, size = obj["Key"].removeprefix("workspace/"), obj["Size"]
            if key.startswith("shards/_manifests/"):
                sizes["markers"].append(size)
            elif key.endswith(".tfrecord"):
                sizes["shards"].append(size)
            elif key.startswith("features/"):
                sizes["features"].append(size)
            elif not key.startswith("runs/"):
                sizes["metadata"].append(size)
                largest_metadata[key] = size
    out = {
        kind: {"files": len(v), "bytes": sum(v), "largest": max(v, default=0)} for kind, v in sizes.items()
    }
    out["metadata_files"] = dict(sorted(largest_metadata.items(), key=lambda kv: -kv[1])[:5])
    return out


def _stages_of(value: Any) -> list[dict[str, Any]]:
    """The stage records of XCom ``xray_stages`` (Airflow's serde may wrap a list as ``{"__data__": ...}``)."""
    if isinstance(value, dict):
        value = value.get("__data__", [])
    return [one for one in value or [] if isinstance(one, dict) and "ended_at" in one]


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def _gaps(tasks: list[tuple[float, float, str]]) -> list[dict[str, Any]]:
    """The stretches in which no task instance ran, largest first, each with the task that ended it."""
    gaps, reach = [], None
    for begin, end, name in sorted(tasks):
        if reach is not None and begin > reach:
            gaps.append({"s": round(begin - reach, 2), "before": name})
        reach = end if reach is None else max(reach, end)
    return sorted(gaps, key=lambda g: -g["s"])


def _union(intervals: list[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for begin, end in sorted(intervals):
        if end > reach:
            total += end - max(begin, reach)
            reach = end
    return total


# -- the report --------------------------------------------------------------------------------------------------
def growth(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For consecutive fractions 4x apart: per stage, ``(wall(4f) / wall(f)) / 4`` and the same for CPU."""
    rows = []
    for small, large in itertools.pairwise(results):
        work = large["tree"]["images"] / small["tree"]["images"]
        for name, stage in large["stages"].items():
            before = small["stages"].get(name)
            if not before:
                continue
            row = {"from": small["tree"]["fraction"], "to": large["tree"]["fraction"], "stage": name}
            for key in ("wall_s", "cpu_s"):
                if before[key] > 0.5:  # below half a second the ratio says more about noise than growth
                    row[key.removesuffix("_s")] = round(stage[key] / before[key] / work, 3)
            rows.append(row)
    return rows


def features_ratio(one: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """The features stage's wall time with one gpu worker over that with more, on the same tree."""
    a, b = one["stages"]["xray_train.features"], more["stages"]["xray_train.features"]
    return {
        "fraction": one["tree"]["fraction"],
        "gpu_workers": [one["gpu_workers"], more["gpu_workers"]],
        "wall_s": [a["wall_s"], b["wall_s"]],
        "cpu_s": [a["cpu_s"], b["cpu_s"]],
        "groups": [a["tasks"], b["tasks"]],
        "speedup": round(a["wall_s"] / b["wall_s"], 3) if b["wall_s"] else None,
    }


def verdicts(results: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    largest = results[-1]
    over = [r for r in rows if max(r.get("wall", 0), r.get("cpu", 0)) > BOUNDS["growth_per_4x"]]
    return {
        "all_runs_succeeded": all(
            all(s == "success" for s in r["states"].values()) and len(r["states"]) == 3 for r in results
        ),
        "growth_over_bound": over,
        "peak_rss_mb": max(s["peak_rss_mb"] for s in largest["stages"].values()),
        "largest_xcom_bytes": max(r["largest_xcom_bytes"] for r in results),
        "overhead_share": largest["overhead_share"],
        "bounds": BOUNDS,
    }


def table(results: list[dict[str, Any]]) -> str:
    names = sorted({n for r in results for n in r["stages"]}, key=lambda n: (DAGS.index(n.split(".")[0]), n))
    head = "stage".ljust(34) + "".join(f"{r['tree']['fraction']:>26}" for r in results)
    lines = [head, " " * 34 + "   wall s  cpu s  RSS MB  XCom B" * len(results)]
    for name in names:
        cells = []
        for r in results:
            s = r["stages"].get(name)
            cells.append(
                f"{s['wall_s']:>9.1f}{s['cpu_s']:>7.1f}{s['peak_rss_mb']:>8.0f}{s['xcom_bytes']:>8}"
                if s
                else " " * 32
            )
        lines.append(name[:34].ljust(34) + "".join(cells))
    lines.append(
        "end to end / overhead".ljust(34)
        + "".join(f"{r['end_to_end_s']:>17.1f} {100 * (r['overhead_share'] or 0):>7.1f}%" for r in results)
    )
    lines.append(
        "overhead: between tasks / in tasks".ljust(34)
        + "".join(f"{r['between_tasks_s']:>17.1f} {r['in_tasks_not_stages_s']:>7.1f}s" for r in results)
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fractions", default="1/16,1/4,1")
    parser.add_argument("--meta", default=str(REPO.parent / "shared" / "nih" / "meta"))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--out", default=str(REPO / "test-artifacts" / "scale.json"))
    parser.add_argument("--keep", help="keep the trees and cluster logs under this folder")
    parser.add_argument(
        "--gpu-workers",
        type=int,
        default=0,
        help="also run the largest fraction with this many gpu-queue workers (one feature group each) and "
        "report the features stage's wall-time ratio against one worker",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    meta = Path(args.meta)
    if not (meta / METADATA).is_file():
        print(
            f"error: {meta / METADATA}: not found; --meta must name the NIH metadata folder", file=sys.stderr
        )
        return 2
    fractions = [Fraction(f) for f in args.fractions.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="xray-scale-") as tmp:
        for fraction in fractions:
            root = Path(args.keep or tmp) / str(fraction).replace("/", "-of-")
            results.append(rehearse(fraction, meta, args.image_size, root))
            print(json.dumps({"fraction": str(fraction), **results[-1]["tree"], "states": results[-1]["states"],
                              "end_to_end_s": results[-1]["end_to_end_s"]}), flush=True)  # fmt: skip
        extra = None
        if args.gpu_workers > 1:
            root = Path(args.keep or tmp) / f"{fractions[-1]}-gpu{args.gpu_workers}".replace("/", "-of-")
            extra = rehearse(fractions[-1], meta, args.image_size, root, args.gpu_workers)
    rows = growth(results)
    report = {"results": results, "growth_per_4x": rows, "verdicts": verdicts(results, rows)}
    if extra is not None:
        report["more_gpu_workers"] = extra
        report["features_ratio"] = features_ratio(results[-1], extra)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(table(results))
    for row in rows:
        print(
            f"growth {row['from']} -> {row['to']}  {row['stage']:<34} wall {row.get('wall', '-')}  cpu {row.get('cpu', '-')}"
        )
    print(json.dumps(report["verdicts"], indent=2))
    if "features_ratio" in report:
        print("features with more gpu workers:", json.dumps(report["features_ratio"]))
    print(f"written: {args.out}")
    return 0 if report["verdicts"]["all_runs_succeeded"] else 1


if __name__ == "__main__":
    sys.exit(main())
