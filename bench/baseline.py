"""The metadata baseline on the full NIH metadata, against a bound measured in the same run.

    .venv/bin/python bench/baseline.py [--meta /work/shared/nih/meta] [--workspace DIR] [--repeat 3]

Builds the manifest of the complete metadata (112,120 rows, official lists) in a temporary workspace unless one is
given, then times ``run_baseline`` (fit on train, threshold on val, test metrics with 1000 patient resamples,
predictions and metrics.json written) with ``force`` so it refits every time.  The bound is the unavoidable part:
reading the manifest back (``read_manifest``) and writing the two prediction tables, timed in the same process.
Prints seconds, the ratio of the stage to the bound, and the figures the stage reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meta", default="/work/shared/nih/meta")
    parser.add_argument("--workspace", help="a workspace that already holds the manifest")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from xray_tasks.config import IngestConfig, profile
    from xray_tasks.data.manifest import read_manifest, run_manifest
    from xray_tasks.evaluation import baseline, evaluate

    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        ws = args.workspace or f"{tmp}/ws"
        if not args.workspace:
            started = time.perf_counter()
            run_manifest(args.meta, ws, IngestConfig())
            print(f"manifest of {args.meta}: {time.perf_counter() - started:.1f} s (not part of the stage)")
        cfg = profile("full", workspace=ws)
        stage, fits, bounds = [], [], []
        summary = None
        for _ in range(args.repeat):
            started = time.perf_counter()
            summary = baseline.run_baseline(ws, cfg, force=True)
            stage.append(time.perf_counter() - started)
            fits.append(summary.fit_seconds)
            started = time.perf_counter()
            table = read_manifest(ws)
            for split in ("val", "test"):
                part = table[table["split"] == split][["image_index", "patient_id", "label"]]
                evaluate.write_parquet(part.assign(probability=0.5), f"{tmp}/bound-{split}.parquet")
            bounds.append(time.perf_counter() - started)
        rows = len(read_manifest(ws))
        s, b = statistics.median(stage), statistics.median(bounds)
        print(f"rows {rows}; train {summary.train_n}")
        print(f"stage {s:.2f} s (median of {args.repeat}), fit {statistics.median(fits):.3f} s")
        print(f"bound (read manifest + write predictions) {b:.2f} s; ratio stage / bound {s / b:.1f}")
        at = summary.test_at_operating_point
        print(
            json.dumps(
                {
                    "test_auroc": round(summary.test_auroc, 4),
                    "test_auroc_ci": [round(v, 4) for v in summary.test_auroc_ci or ()],
                    "threshold": round(summary.operating_point.threshold, 4),
                    "sensitivity": round(at.recall, 4),
                    "healthy_cleared": round(at.healthy_cleared, 4),
                    "coefficients": {k: round(v, 4) for k, v in summary.coefficients.items()},
                }
            )
        )


if __name__ == "__main__":
    main()
