"""Publishing and loading a full-size model (the report's ResNet50 + head), against bounds measured in the same run.

    .venv/bin/python bench/registry.py [--input-size 224] [--backends local,s3]

For each backend (a local folder; a moto S3 server on loopback, started here) prints:
  * publish wall time vs the unavoidable work on the same files (export the SavedModel, ``storage.put_file`` every
    file once): the ratio is the price of staging, hashing, read-back verification and the manifest, decision and
    pointer writes;
  * load wall time vs a plain download of model.keras + ``keras.saving.load_model`` without any checking: the
    ratio is the price of verifying every file's sha256 first;
  * bytes and files published.
moto is slow on ranged reads of big objects (docs: ENV-NOTES), so the S3 numbers are an upper bound for real S3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the run-directory helper and the moto server of the tests


def build_run(path: Path, input_size: int) -> None:
    from registry_support import write_run

    from xray_tasks.config import HeadConfig
    from xray_tasks.training import networks

    write_run(
        path, input_size=input_size
    )  # metrics, plots, predictions, card; the tiny model is replaced below
    base = networks.build_base("resnet50", input_size, None)
    head = networks.build_head(networks.base_spec("resnet50").feature_dim, HeadConfig())
    networks.assemble(base, head).save(path / "model.keras")


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_backend(root: str, run: Path) -> dict:
    import keras

    from xray_tasks import storage
    from xray_tasks.registry import load, publish

    def plain_publish() -> None:
        """The unavoidable work: export the SavedModel, upload every file once; no staging, hashing or checks."""
        with tempfile.TemporaryDirectory() as tmp:
            keras.saving.load_model(run / "model.keras", compile=False).export(
                f"{tmp}/serving/1", verbose=False
            )
            files = [(p, p.relative_to(run).as_posix()) for p in sorted(run.rglob("*")) if p.is_file()]
            files += [(p, p.relative_to(tmp).as_posix()) for p in sorted(Path(tmp).rglob("*")) if p.is_file()]
            for path, rel in files:
                if not rel.startswith("head/"):
                    storage.put_file(path, storage.join(root, "plain", rel))

    _, plain_up = timed(plain_publish)
    summary, publish_s = timed(lambda: publish(str(run), storage.join(root, "registry")))

    def plain_load():
        with tempfile.TemporaryDirectory() as tmp:
            storage.get_file(storage.join(root, "plain", "model.keras"), Path(tmp) / "m.keras")
            return keras.saving.load_model(Path(tmp) / "m.keras", compile=False)

    _, plain_down = timed(plain_load)
    published, load_s = timed(lambda: load(storage.join(root, "registry")))
    manifest = published.manifest["files"]
    return {
        "backend": "s3" if storage.is_s3(root) else "local",
        "published_mb": round(sum(f["size"] for f in manifest.values()) / 2**20, 1),
        "files": len(manifest),
        "model_keras_mb": round(manifest["model.keras"]["size"] / 2**20, 1),
        "serving_mb": round(
            sum(f["size"] for r, f in manifest.items() if r.startswith("serving/")) / 2**20, 1
        ),
        "publish_s": round(publish_s, 2),
        "plain_export_and_upload_s": round(plain_up, 2),
        "publish_vs_plain": round(publish_s / plain_up, 2),
        "load_s": round(load_s, 2),
        "plain_download_and_load_s": round(plain_down, 2),
        "load_vs_plain": round(load_s / plain_down, 2),
        "decision": summary["decision"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--backends", default="local,s3")
    args = parser.parse_args()
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        run = Path(tmp) / "run"
        build_run(run, args.input_size)
        server = None
        try:
            for backend in backends:
                if backend == "s3":
                    from conftest import S3Server, free_port

                    server = S3Server(free_port())
                    server.start()
                    os.environ.update(server.env())
                    from xray_tasks.storage import s3_client

                    s3_client().create_bucket(Bucket="bench")
                    root = "s3://bench"
                else:
                    root = str(Path(tmp) / "local")
                print(json.dumps(bench_backend(root, run)), flush=True)
        finally:
            if server:
                server.stop()


if __name__ == "__main__":
    main()
