"""How many images one CPU core's worth of the input pipeline delivers, against the raw record read of the same shards.

    .venv/bin/python bench/input_pipeline.py [--images ../shared/nih/images] [--size 512] [--batch 32]
                                             [--passes 8] [--reps 3]

Packs the real NIH PNGs into an archive, ingests them as raw shards at ``--size`` px (the ``full`` profile's
format), then reads the shards ``--passes`` times over through three pipelines, each measured in CPU seconds of
the whole process (all threads) per image, the median of ``--reps``:

- ``raw read``: the TFRecord files interleaved and batched, nothing parsed: the bound, what reading alone costs;
- ``features``: ``dataset.make_dataset(channels=1)``, as the features, fine-tuning and evaluation stages read:
  records batched, then one ``parse_example`` and one ``decode_raw`` per batch; resizing and grey -> RGB run in the
  model's function on its device (``training.devices.replicated``, ``training.networks.fed_stored_pixels``);
- ``grey->RGB on the CPU``: the same pipeline expanding grey to RGB in tf.data (``channels=3``), as every stage
  read before.

Prints images per CPU-second for each, the ratio of each to the raw read, and the features pipeline against the
target of 2,500 images per CPU-second.  CPU time, not wall time: a neighbour's load disturbs it far less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET = 2500.0


def build_shards(images: Path, meta: Path, root: Path, size: int) -> str:
    """The real PNGs packed into one NIH-style archive and ingested as raw shards at ``size`` px."""
    from xray_tasks.cli import run
    from xray_tasks.data.synth import pack_real

    pack_real(images, meta, root / "src", archives=1)
    workspace, sets = str(root / "ws"), ["--set", f"ingest.image_size={size}", "--set", "ingest.encoding=raw"]
    if run(["manifest", "--source", str(root / "src"), "--workspace", workspace, *sets]) != 0:
        raise SystemExit("manifest failed")
    if run(["ingest-archive", str(root / "src" / "images_001.tar.gz"), "--workspace", workspace, *sets]) != 0:
        raise SystemExit("ingest-archive failed")
    return workspace


def cpu_per_image(make, passes: int) -> float:
    """CPU seconds per image over ``passes`` reads of the dataset ``make()`` returns (after one warm-up batch)."""
    ds = make().repeat(passes)
    it = iter(ds)
    next(it)
    start, count = time.process_time(), 0
    for batch in it:
        count += int(batch["image"].shape[0]) if isinstance(batch, dict) else int(batch.shape[0])
    return (time.process_time() - start) / max(count, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default=str(REPO.parent / "shared" / "nih" / "images"))
    parser.add_argument("--meta", default=str(REPO.parent / "shared" / "nih" / "meta"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from xray_tasks.data import dataset, shards

    with tempfile.TemporaryDirectory(prefix="xray-bench-input-") as tmp:
        workspace = build_shards(Path(args.images), Path(args.meta), Path(tmp), args.size)
        uris = [u for split in ("train", "val", "test") for u in shards.committed_shards(workspace, split)]
        fmt = shards.shard_format(workspace)

        def raw_read():
            files = tf.data.Dataset.from_tensor_slices(uris)
            records = files.interleave(
                lambda f: tf.data.TFRecordDataset(f, buffer_size=8 * 1024 * 1024),
                cycle_length=min(4, len(uris)),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            return records.batch(args.batch).prefetch(tf.data.AUTOTUNE)

        def pipeline(channels):
            return lambda: dataset.make_dataset(
                uris,
                encoding=fmt.encoding,
                image_size=fmt.image_size,
                batch_size=args.batch,
                channels=channels,
                cycle_length=min(4, len(uris)),
            )

        sides = {"raw read": raw_read, "features": pipeline(1), "grey->RGB on the CPU": pipeline(3)}
        runs: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.reps):  # interleaved, so that a change of load hits every side alike
            for name, make in sides.items():
                runs[name].append(cpu_per_image(make, args.passes))
    per_s = {name: 1.0 / statistics.median(values) for name, values in runs.items()}
    bound = per_s["raw read"]
    for name, rate in per_s.items():
        print(f"{name:<22} {rate:>9.0f} images per CPU-second   ({rate / bound:.2f} of the raw read)")
    verdict = "meets" if per_s["features"] >= TARGET else "misses"
    print(
        f"features pipeline: {per_s['features']:.0f} images per CPU-second at {args.size} px, {verdict} the target {TARGET:.0f}"
    )
    print(
        json.dumps(
            {
                "size": args.size,
                "images_per_cpu_s": {k: round(v, 1) for k, v in per_s.items()},
                "ratio_to_raw_read": {k: round(v / bound, 3) for k, v in per_s.items()},
                "target": TARGET,
                "meets_target": per_s["features"] >= TARGET,
            }
        )
    )


if __name__ == "__main__":
    main()
