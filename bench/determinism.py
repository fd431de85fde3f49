"""What the determinism switch costs: the demo model's train -> fine-tune -> evaluate on one synthetic workspace,
with ``repro.deterministic`` off and on, each twice, in child processes (as the DAG runs them).

    .venv/bin/python bench/determinism.py [--patients 120] [--finetune-epochs 1] [--head-epochs 30]

Prints seconds per configuration (best of the repeats), the ratio on/off, and whether each configuration's
two runs predicted bit for bit the same.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
# The synthetic studies are 64 px: under ingest's radiograph floor (256 px) every one would be quarantined.
os.environ.setdefault("XRAY_INGEST_MIN_SIDE", "16")


def run_once(ws: str, run_id: str, sets: list[str]) -> tuple[float, bytes]:
    from support.models import cli

    started = time.perf_counter()
    cli("train", "--profile", "demo", "--workspace", ws, "--run-id", run_id, *sets)
    cli("finetune", "--workspace", ws, "--run-id", run_id)
    cli("evaluate", "--workspace", ws, "--run-id", run_id)
    seconds = time.perf_counter() - started
    import pandas as pd

    probs = pd.read_parquet(Path(ws) / "runs" / run_id / "predictions" / "test.parquet")["probability"]
    return seconds, probs.to_numpy().tobytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--head-epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from support.models import cli, make_workspace, set_args

    with tempfile.TemporaryDirectory(prefix="xray-bench-det-") as tmp:
        ws = make_workspace(Path(tmp), patients=args.patients, signal=0.6, shard_mb=0.05)
        cli("features", "--profile", "demo", "--workspace", ws, *set_args())
        results = {}
        for switch in ("false", "true"):
            sets = set_args(
                head__epochs=args.head_epochs,
                finetune__epochs=args.finetune_epochs,
                repro__deterministic=switch,
            )
            runs = [run_once(ws, f"det-{switch}-{i}", sets) for i in range(args.repeats)]
            results[switch] = (min(s for s, _ in runs), len({p for _, p in runs}) == 1)
            print(
                f"deterministic={switch}: {[round(s, 1) for s, _ in runs]} s; identical runs: {results[switch][1]}"
            )
        off, on = results["false"][0], results["true"][0]
        print(
            f"train+finetune+evaluate, best of {args.repeats}: off {off:.1f} s, on {on:.1f} s, ratio on/off {on / off:.2f}"
        )


if __name__ == "__main__":
    main()
