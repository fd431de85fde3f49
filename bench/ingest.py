"""Ingest speed and memory on real NIH PNGs, against bounds measured in the same run.

    .venv/bin/python bench/ingest.py [--images ../shared/nih/images] [--size 512]

Prints, each as a ratio against its bound:
  * archive -> shard images/s per core (one process: images / its CPU seconds) vs Pillow's decode-only rate on
    the same PNG bytes in memory (the floor of the work: every image must be decoded once). Target >= 0.8.
  * two archives in two processes vs the same two one after the other (wall clock). Target >= 1.8x.
  * peak RSS of one ingest process on a small archive and on a 4x larger one. Target: flat, < 600 MB.
Archives are built like NIH's (tar + gzip at the default level 6) from the real PNGs in a temporary folder.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "nih" / "images"


def child(archive: str, workspace: str, size: int) -> None:
    """Runs in a fresh process: ingest one archive, report wall, CPU and peak RSS as JSON."""
    from xray_tasks.config import IngestConfig
    from xray_tasks.data.ingest import ingest_archive

    cfg = IngestConfig(image_size=size)
    wall, cpu = time.perf_counter(), time.process_time()
    result = ingest_archive(archive, workspace, cfg)
    out = {
        "images": result["members"]["sharded"],
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "maxrss_mb": _peak_rss_mb(),
    }
    print(json.dumps(out))


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would carry the parent's peak across fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def spawn(archive: Path, workspace: Path, size: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", str(archive), str(workspace), str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )


def collect(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"ingest child failed with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def decode_rate(blobs: list[bytes], rounds: int = 2) -> float:
    """Pillow decode-only images/s on one core (best of ``rounds``)."""
    from PIL import Image

    best = 0.0
    for _ in range(rounds):
        start = time.process_time()
        for blob in blobs:
            with Image.open(io.BytesIO(blob)) as img:
                img.load()
        best = max(best, len(blobs) / (time.process_time() - start))
    return best


def build(
    tmp: Path, names: list[str], images: Path, meta: Path, label: str, count: int, offset: int = 0
) -> Path:
    """One NIH-style archive of ``count`` real PNGs plus a workspace holding the manifest for them."""
    from xray_tasks.config import IngestConfig
    from xray_tasks.data.manifest import run_manifest
    from xray_tasks.data.synth import pack_real

    src = tmp / f"src-{label}"
    chosen = names[offset : offset + count]
    staging = tmp / f"png-{label}"
    staging.mkdir()
    for name in chosen:
        (staging / name).symlink_to(images / name)
    pack_real(staging, meta, src, archives=1)
    run_manifest(str(src), str(tmp / f"ws-{label}"), IngestConfig())
    return src / "images_001.tar.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--meta", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--child", nargs=3, metavar=("ARCHIVE", "WORKSPACE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    meta = args.meta or args.images.parent / "meta"
    names = sorted(p.name for p in args.images.glob("*.png"))
    if len(names) < 40:
        raise SystemExit(f"{args.images}: need real PNGs (found {len(names)})")
    quarter = len(names) // 4
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"building archives from {len(names)} real PNGs in {tmp} ...", flush=True)
        small = build(tmp, names, args.images, meta, "small", quarter)
        large = build(tmp, names, args.images, meta, "large", 4 * quarter)
        p1 = build(tmp, names, args.images, meta, "p1", 4 * quarter)
        p2 = build(tmp, names, args.images, meta, "p2", 4 * quarter)

        blobs = [(args.images / n).read_bytes() for n in names[: 4 * quarter]]
        floor_before = decode_rate(blobs)
        one = collect(spawn(large, tmp / "ws-large", args.size))
        floor_after = decode_rate(blobs)
        floor = max(floor_before, floor_after)
        per_core = one["images"] / one["cpu_s"]

        start = time.perf_counter()
        collect(spawn(p1, tmp / "ws-p1", args.size))
        collect(spawn(p2, tmp / "ws-p2", args.size))
        sequential = time.perf_counter() - start
        for label in ("p1", "p2"):
            for path in (tmp / f"ws-{label}" / "shards").glob("*"):
                if path.name != "_staging":
                    subprocess.run(["rm", "-rf", str(path)], check=True)
        start = time.perf_counter()
        procs = [spawn(p1, tmp / "ws-p1", args.size), spawn(p2, tmp / "ws-p2", args.size)]
        [collect(p) for p in procs]
        parallel = time.perf_counter() - start

        rss_small = collect(spawn(small, tmp / "ws-small", args.size))["maxrss_mb"]
        rss_large = one["maxrss_mb"]

    cores = os.cpu_count()
    load = os.getloadavg()[0]
    print(
        f"\nreal NIH PNGs, stored {args.size}x{args.size} raw, {cores} cores, load average {load:.2f} at the end"
        " (other work on the machine lowers the parallel speed-up)"
    )
    print(
        f"Pillow decode-only           {floor:8.1f} images/s/core   (bound; {floor_before:.1f} before, {floor_after:.1f} after)"
    )
    print(
        f"archive -> shards            {per_core:8.1f} images/s/core   ({one['images']} images, {one['wall_s']:.2f} s wall, "
        f"{one['cpu_s']:.2f} s CPU)"
    )
    print(
        f"  ratio to decode-only       {per_core / floor:8.2f}   target >= 0.80  {'PASS' if per_core / floor >= 0.8 else 'FAIL'}"
    )
    print(f"two archives, sequential     {sequential:8.2f} s")
    print(f"two archives, two processes  {parallel:8.2f} s")
    print(
        f"  speed-up                   {sequential / parallel:8.2f}x  target >= 1.80  "
        f"{'PASS' if sequential / parallel >= 1.8 else 'FAIL'}"
    )
    print(f"peak RSS, {quarter:4d}-image archive  {rss_small:8.1f} MB")
    print(f"peak RSS, {4 * quarter:4d}-image archive  {rss_large:8.1f} MB")
    flat = rss_large / rss_small
    print(
        f"  ratio large/small          {flat:8.2f}   target: flat (<= 1.25) and < 600 MB  "
        f"{'PASS' if flat <= 1.25 and rss_large < 600 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
