"""Test helpers for the registry: tiny but real evaluated run directories, images, a TCP proxy to cut S3 off.

A run directory here is what the evaluate stage writes (docs/CONTRACTS.md): a real Keras model with the contract's
interface and a schema-1 metrics.json whose headline numbers the test chooses, so gate outcomes are controlled.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from xray_tasks.config import PipelineConfig, to_dict
from xray_tasks.contracts import Metrics

INPUT_SIZE = 32
STORED_SIZE = 48


def tiny_model(seed: int = 0, input_size: int = INPUT_SIZE, pathologies: bool = False):
    """Input "image" float32 [None, S, S, 3] in 0..255 -> output "triage" softmax [None, 2]; weights from ``seed``.

    With ``pathologies`` the outputs are a dict with a second, 14-way sigmoid head, as the model stage builds them.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((input_size, input_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax", name="triage")(x)
    if not pathologies:
        return keras.Model(inp, out)
    extra = keras.layers.Dense(14, activation="sigmoid", name="pathologies")(x)
    return keras.Model(inp, {"triage": out, "pathologies": extra})


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def xray_pngs(n: int, seed: int = 0, size: int = 64) -> list[bytes]:
    """``n`` grey PNGs with different content (so predictions differ between images)."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        base = rng.integers(0, 256, (size, size), dtype=np.uint8)
        base[: size // 2] = np.clip(base[: size // 2].astype(int) * (i + 1) // (n + 1), 0, 255).astype(
            np.uint8
        )
        images.append(png(base))
    return images


def metrics_doc(**kwargs) -> Metrics:
    """``metrics_json`` read as the contract (what the gate and the consumer take)."""
    return Metrics.from_dict(metrics_json(**kwargs), where="test metrics.json")


def metrics_json(
    *,
    auroc: float = 0.8,
    ci: tuple[float, float] | None = (0.72, 0.88),
    recall: float = 0.95,
    target: float = 0.95,
    healthy_cleared: float = 0.3,
    threshold: float = 0.45,
    test_digest: str = "digest-a",
    workspace: str | None = None,
    test_n: int = 4,
    input_size: int = INPUT_SIZE,
    stored_size: int = STORED_SIZE,
) -> dict:
    at = {
        "tn": 3,
        "fp": 7,
        "fn": 1,
        "tp": 19,
        "f3": 0.9,
        "accuracy": 0.73,
        "precision": 0.73,
        "recall": recall,
        "specificity": healthy_cleared,
    }
    return {
        "schema": 1,
        "model": {
            "base": "tiny",
            "weights": "none",
            "input_size": input_size,
            "stored_image_size": stored_size,
            "input_name": "image",
            "output": "triage",
        },
        "data": {
            "workspace": workspace,
            "manifest_sha256": "m" * 64,
            "test_digest": test_digest,
            "val_digest": "v" * 64,
            "counts": {},
        },
        "operating_point": {"threshold": threshold, "target_sensitivity": target, "chosen_on": "val"},
        "test": {
            "n": test_n,
            "positives": 2,
            "at_0.5": at,
            "at_operating_point": {**at, "healthy_cleared": healthy_cleared},
            "auroc": auroc,
            "auroc_ci": list(ci) if ci else None,
            "auprc": 0.8,
            "sensitivity_ci": [0.9, 1.0],
            "benchmark_always_unhealthy": {
                **at,
                "tn": 0,
                "fp": 10,
                "recall": 1.0,
                "specificity": 0.0,
                "f3": 0.88,
            },
            "per_pathology_auroc": None,
        },
        "val": {"n": 4, "positives": 2, "auroc": auroc, "at_operating_point": at},
    }


def write_run(
    path: Path,
    *,
    seed: int = 0,
    test_indices: list[str] | None = None,
    pathologies: bool = False,
    baseline: bool = True,
    **metrics,
) -> Path:
    """An evaluated run directory at ``path`` with a real tiny model; ``metrics`` go to ``metrics_json``.

    ``baseline``: also the metadata baseline's test predictions (a constant score: AUROC 0.5), as evaluate
    copies them into a run, so the ``full`` profile's baseline floor sees one.
    """
    import pandas as pd

    path.mkdir(parents=True, exist_ok=True)
    tiny_model(seed, metrics.get("input_size", INPUT_SIZE), pathologies).save(path / "model.keras")
    (path / "metrics.json").write_text(json.dumps(metrics_json(**metrics), indent=2))
    (path / "config.json").write_text(json.dumps(to_dict(PipelineConfig())))
    (path / "model_card.md").write_text(f"# Tiny test model (seed {seed})\n")
    (path / "plots").mkdir(exist_ok=True)
    for name in ("roc", "pr"):
        (path / "plots" / f"{name}.png").write_bytes(png(np.full((8, 8), 40 * seed % 256, dtype=np.uint8)))
    indices = test_indices or [f"0000000{i}_000.png" for i in range(4)]
    (path / "predictions").mkdir(exist_ok=True)
    for split in ("val", "test"):
        pd.DataFrame(
            {
                "image_index": indices,
                "patient_id": range(len(indices)),
                "probability": np.linspace(0.1, 0.9, len(indices)),
                "label": [i % 2 for i in range(len(indices))],
            }
        ).to_parquet(path / "predictions" / f"{split}.parquet", index=False)
    if baseline:  # the metadata baseline as evaluate copies it in; here one that knows nothing (AUROC 0.5)
        test = pd.read_parquet(path / "predictions" / "test.parquet")
        test.assign(probability=0.5).to_parquet(path / "predictions" / "baseline-test.parquet", index=False)
    (path / "head").mkdir(exist_ok=True)
    (path / "head" / "history.json").write_text("{}")  # not published: training leftovers stay in the run
    return path


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target port; ``cut()`` drops the listener and every open connection, as an
    S3 outage would, and ``restore()`` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    restore = start

    def cut(self) -> None:
        with self._lock:
            if self._listener:
                try:
                    self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def make_workspace(tmp: Path, patients: int = 30, stored_size: int = STORED_SIZE) -> tuple[Path, Path]:
    """A synthetic NIH tree and its ingested workspace (shards stored at ``stored_size``), via the CLI."""
    import subprocess
    import sys

    source, workspace = tmp / "source", tmp / "workspace"
    cli = [sys.executable, "-m", "xray_tasks.cli"]
    subprocess.run(
        [*cli, "synth", str(source), "--patients", str(patients), "--archives", "1", "--image-size", "64"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *cli,
            "ingest",
            "--profile",
            "demo",
            "--source",
            str(source),
            "--workspace",
            str(workspace),
            "--set",
            f"ingest.image_size={stored_size}",
        ],
        check=True,
        capture_output=True,
    )
    return source, workspace
