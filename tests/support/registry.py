"""Test helpers for the registry: tiny but real evaluated run directories, images, a TCP proxy to cut S3 off.

A run directory here is what the evaluate stage writes (docs/CONTRACTS.md): a real Keras model with the contract's
interface, predictions crafted to the AUROC the test chooses (so gate outcomes are controlled), and the metrics.json
evaluation computes from them, since publish recomputes every judged number.  ``metrics_json`` is a free-standing,
fabricated metrics.json for the gate's pure unit tests.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pandas as pd
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


def crafted_probabilities(labels, auroc: float) -> np.ndarray:
    """P(unhealthy) per study whose AUROC against ``labels`` is ``auroc`` (to 1 / (positives x negatives)).

    Healthy studies sit evenly in (0.05, 0.95); each unhealthy one sits just above as many healthy ones as its
    share of the pairs needs, spread so that the operating point still clears healthy studies.
    """
    y = np.asarray(labels).astype(int)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    target = round(auroc * pos * neg)
    mean = target / pos
    counts = np.round(np.linspace(max(0.0, 2 * mean - neg), min(float(neg), 2 * mean), pos)).astype(int)
    counts = np.clip(counts, 0, neg)
    step = 1 if counts.sum() < target else -1
    i = 0
    while counts.sum() != target:
        j = i % pos if step > 0 else pos - 1 - i % pos
        if 0 <= counts[j] + step <= neg:
            counts[j] += step
        i += 1
    healthy = 0.05 + 0.9 * (np.arange(neg) + 0.5) / neg
    above = np.where(counts > 0, healthy[np.maximum(counts - 1, 0)] + 0.45 / neg, 0.025)
    probs = np.empty(len(y), dtype=np.float64)
    probs[y == 0], probs[y == 1] = healthy, np.sort(above)
    return probs.astype(np.float32)


def split_frame(names, labels, patients, auroc: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_index": list(names),
            "patient_id": np.asarray(patients, dtype=np.int64),
            "probability": crafted_probabilities(labels, auroc),
            "label": np.asarray(labels, dtype=np.int8),
        }
    )


def write_manifest_only(
    workspace: Path, frames: dict[str, pd.DataFrame], relabel: tuple[str, ...] = ()
) -> str:
    """A workspace holding only ``manifest/manifest.parquet`` for the studies of ``frames`` (what publish checks
    labels against); ``relabel`` flips the label of the named studies."""
    from xray_tasks.config import PATHOLOGIES
    from xray_tasks.data.manifest import write_manifest

    rows = []
    for split, frame in frames.items():
        for name, label, patient in zip(
            frame["image_index"], frame["label"], frame["patient_id"], strict=True
        ):
            label = int(label) ^ (name in relabel)
            rows.append(
                {
                    "image_index": name,
                    "patient_id": int(patient),
                    "follow_up": 0,
                    "age": 50.0,
                    "sex": "F",
                    "view": "PA",
                    "finding_labels": "Effusion" if label else "No Finding",
                    **{p: int(label and p == "Effusion") for p in PATHOLOGIES},
                    "label": label,
                    "split": split,
                }
            )
    write_manifest(pd.DataFrame(rows), {"counts": {}, "excluded": {"rows": []}}, str(workspace))
    return str(workspace)


def default_split(split: str, n: int = 100) -> tuple[list[str], list[int], list[int]]:
    """Names, labels (alternating) and patient ids (two studies each) of a synthetic split."""
    offset = {"val": 10_000, "test": 20_000}[split]
    names = [f"{offset + i // 2:08d}_{i % 2:03d}.png" for i in range(n)]
    return names, [(i // 2) % 2 for i in range(n)], [offset + i // 2 for i in range(n)]


def write_run(
    path: Path,
    *,
    seed: int = 0,
    auroc: float = 0.8,
    workspace: str | None = None,
    test_indices: list[str] | None = None,
    relabel: tuple[str, ...] = (),
    pathologies: bool = False,
    input_size: int = INPUT_SIZE,
    stored_size: int = STORED_SIZE,
    bootstrap: int = 200,
    baseline: bool = True,
    predictions: dict[str, pd.DataFrame] | None = None,
) -> Path:
    """An evaluated run directory at ``path`` with a real tiny model, predictions whose test and val AUROC is
    ``auroc``, and the metrics.json ``evaluate.score`` computes from them (consistent, as the gate demands).

    Labels come from ``workspace``'s manifest (its val split and its test split, or ``test_indices`` of it);
    without one, a manifest-only workspace beside the run holds synthetic splits (``relabel`` flips those
    studies' labels in that manifest only, as a relabelled dataset would).  ``baseline``: also the metadata
    baseline's test predictions (a constant score: AUROC 0.5), as evaluate copies them into a run, so the
    ``full`` profile's baseline floor sees one.  ``predictions``: the val and test frames to use as they are
    (``image_index, patient_id, probability, label``) instead of crafted ones; their manifest is written beside
    unless ``workspace`` (whose labels they must carry) is given.
    """
    from xray_tasks.config import EvalConfig
    from xray_tasks.contracts import DataInfo, ModelInfo
    from xray_tasks.data.manifest import manifest_sha256, read_manifest
    from xray_tasks.evaluation import evaluate

    path.mkdir(parents=True, exist_ok=True)
    tiny_model(seed, input_size, pathologies).save(path / "model.keras")
    frames = {}
    if predictions is not None:
        frames = {split: predictions[split].reset_index(drop=True) for split in ("val", "test")}
        if workspace is None:
            workspace = write_manifest_only(path.with_name(path.name + "-workspace"), frames)
    elif workspace is None:
        for split in ("val", "test"):
            names, labels, patients = default_split(split)
            frames[split] = split_frame(names, labels, patients, auroc)
        workspace = write_manifest_only(path.with_name(path.name + "-workspace"), frames, relabel)
        truth = read_manifest(workspace).set_index("image_index")
        for split, frame in frames.items():  # predictions carry the (possibly relabelled) manifest's labels
            frame["label"] = truth.loc[frame["image_index"], "label"].to_numpy().astype(np.int8)
            frames[split] = split_frame(frame["image_index"], frame["label"], frame["patient_id"], auroc)
    else:
        table = read_manifest(workspace)
        for split in ("val", "test"):
            part = table[table["split"] == split]
            if split == "test" and test_indices is not None:
                part = part.set_index("image_index").loc[test_indices].reset_index()
            frames[split] = split_frame(part["image_index"], part["label"], part["patient_id"], auroc)
    (path / "predictions").mkdir(exist_ok=True)
    for split, frame in frames.items():
        frame.to_parquet(path / "predictions" / f"{split}.parquet", index=False)
    cfg = PipelineConfig()
    cfg = dataclasses.replace(cfg, evaluate=EvalConfig(bootstrap=bootstrap))
    scores = evaluate.score(frames["val"], frames["test"], cfg.evaluate)
    doc = Metrics(
        model=ModelInfo(
            base="tiny",
            weights="none",
            input_size=input_size,
            stored_image_size=stored_size,
            input_name="image",
            output="triage",
            outputs=("pathologies", "triage") if pathologies else ("triage",),
        ),
        data=DataInfo(
            workspace=workspace,
            manifest_sha256=manifest_sha256(workspace),
            test_digest=evaluate.digest(frames["test"]),
            val_digest=evaluate.digest(frames["val"]),
            counts=None,
            test_split_digest=evaluate.split_digest(frames["test"]),
            val_split_digest=evaluate.split_digest(frames["val"]),
        ),
        operating_point=scores.operating_point,
        test=scores.test,
        val=scores.val,
    )
    (path / "metrics.json").write_text(json.dumps(doc.to_dict(), indent=2))
    (path / "config.json").write_text(json.dumps(to_dict(cfg)))
    (path / "model_card.md").write_text(f"# Tiny test model (seed {seed})\n")
    (path / "plots").mkdir(exist_ok=True)
    for name in ("roc", "pr"):
        (path / "plots" / f"{name}.png").write_bytes(png(np.full((8, 8), 40 * seed % 256, dtype=np.uint8)))
    if baseline:  # the metadata baseline as evaluate copies it in; here one that knows nothing (AUROC 0.5)
        frames["test"].assign(probability=0.5).to_parquet(
            path / "predictions" / "baseline-test.parquet", index=False
        )
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
