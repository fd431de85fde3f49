"""Runs that reproduce: two training runs with one fingerprint, under the determinism switch (on in the demo
profile), give bit-identical predictions on the CPU, hence the same threshold and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from support.models import cli, make_workspace, set_args

pytestmark = pytest.mark.slow


# One code version for both runs, whatever is committed meanwhile (the fingerprint counts the git commit).
CODE = {"XRAY_CODE_VERSION": "determinism-test"}


def train_and_evaluate(ws: str, run_id: str, *extra: str) -> Path:
    sets = [*set_args(finetune__epochs=1, head__epochs=15), *extra]
    cli("train", "--profile", "demo", "--workspace", ws, "--run-id", run_id, *sets, env=CODE)
    cli("finetune", "--workspace", ws, "--run-id", run_id, env=CODE)
    cli("evaluate", "--workspace", ws, "--run-id", run_id, env=CODE)
    return Path(ws) / "runs" / run_id


def test_two_runs_with_one_fingerprint_predict_bit_for_bit_the_same(tmp_path):
    ws = make_workspace(tmp_path, patients=80, signal=0.6, shard_mb=0.05)
    cli("features", "--profile", "demo", "--workspace", ws, *set_args())
    a, b = (train_and_evaluate(ws, run) for run in ("first", "second"))

    fa, fb = (json.loads((run / "fingerprint.json").read_text()) for run in (a, b))
    assert fa == fb and len(fa["digest"]) == 64
    ma, mb = (json.loads((run / "metrics.json").read_text()) for run in (a, b))
    assert ma["fingerprint"]["digest"] == fa["digest"]
    for split in ("val", "test"):
        pa, pb = (pd.read_parquet(run / "predictions" / f"{split}.parquet") for run in (a, b))
        assert list(pa["image_index"]) == list(pb["image_index"])
        assert pa["probability"].to_numpy().tobytes() == pb["probability"].to_numpy().tobytes(), split
    assert ma["operating_point"]["threshold"] == mb["operating_point"]["threshold"]
    assert ma["test"] == mb["test"] and ma["val"] == mb["val"]
    # Both runs trained: the histories are equal too, epoch by epoch (wall-clock seconds aside).
    ha, hb = (json.loads((run / "head" / "history.json").read_text())["history"] for run in (a, b))
    ha.pop("seconds", None), hb.pop("seconds", None)
    assert ha == hb and len(ha["loss"]) > 1
