"""Runs that reproduce: two training runs with one fingerprint, under the determinism switch (on in the demo
profile), give bit-identical predictions on the CPU, hence the same threshold and metrics."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from support.models import cli, make_workspace, set_args

from xray_tasks import storage

pytestmark = pytest.mark.slow


# One code version for both runs, whatever is committed meanwhile (the fingerprint counts the git commit).
CODE = {"XRAY_CODE_VERSION": "determinism-test"}


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def workspace(request, tmp_path) -> str:
    """An ingested synthetic workspace in a local folder, or copied as it is into a bucket of the suite's S3
    server (the stages then read shards and write runs there)."""
    ws = make_workspace(tmp_path, patients=80, signal=0.6, shard_mb=0.05)
    if request.param == "local":
        return ws
    remote = storage.join(request.getfixturevalue("s3_bucket"), "ws")
    for path in sorted(Path(ws).rglob("*")):
        if path.is_file():
            storage.put_file(path, storage.join(remote, path.relative_to(ws).as_posix()))
    return remote


def train_and_evaluate(ws: str, run_id: str, *extra: str) -> str:
    sets = [*set_args(finetune__epochs=1, head__epochs=15), *extra]
    cli("train", "--profile", "demo", "--workspace", ws, "--run-id", run_id, *sets, env=CODE)
    cli("finetune", "--workspace", ws, "--run-id", run_id, env=CODE)
    cli("evaluate", "--workspace", ws, "--run-id", run_id, env=CODE)
    return storage.join(ws, "runs", run_id)


def _json(run: str, name: str) -> dict:
    return storage.read_json(storage.join(run, name))


def _predictions(run: str, split: str) -> pd.DataFrame:
    return pd.read_parquet(
        io.BytesIO(storage.read_bytes(storage.join(run, "predictions", f"{split}.parquet")))
    )


def test_two_runs_with_one_fingerprint_predict_bit_for_bit_the_same(workspace):
    ws = workspace
    cli("features", "--profile", "demo", "--workspace", ws, *set_args())
    a, b = (train_and_evaluate(ws, run) for run in ("first", "second"))

    fa, fb = (_json(run, "fingerprint.json") for run in (a, b))
    assert fa == fb and len(fa["digest"]) == 64
    ma, mb = (_json(run, "metrics.json") for run in (a, b))
    assert ma["fingerprint"]["digest"] == fa["digest"]
    for split in ("val", "test"):
        pa, pb = (_predictions(run, split) for run in (a, b))
        assert list(pa["image_index"]) == list(pb["image_index"])
        assert pa["probability"].to_numpy().tobytes() == pb["probability"].to_numpy().tobytes(), split
    assert ma["operating_point"]["threshold"] == mb["operating_point"]["threshold"]
    assert ma["test"] == mb["test"] and ma["val"] == mb["val"]
    # Both runs trained: the histories are equal too, epoch by epoch (wall-clock seconds aside).
    ha, hb = (_json(run, "head/history.json")["history"] for run in (a, b))
    ha.pop("seconds", None), hb.pop("seconds", None)
    assert ha == hb and len(ha["loss"]) > 1
