"""Ingest speed and memory on real NIH PNGs, against bounds measured in the same run.

    .venv/bin/python bench/ingest.py [--images ../shared/nih/images] [--size 512] [--rounds 2]

Prints, each as a ratio against its bound:
  * per core (CPU seconds, one thread), as a ratio to Pillow's decode-only rate on the same PNG bytes in memory
    (the bound: every image must be decoded once): each decoder candidate alone (Pillow, imagecodecs' libpng,
    OpenCV; one that is not installed is named and skipped), ``images.prepare`` per decoder, the pieces of the
    path around the decode (structure check, resize + encode), gunzip of the archive by zlib and by ISA-L (isal),
    and archive -> shards (one process: images / its CPU seconds) with today's choice and with Pillow + zlib.
    Target for archive -> shards: >= 1.0.
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


def child(archive: str, workspace: str, size: int, decoder: str = "", gunzip: str = "") -> None:
    """Runs in a fresh process: ingest one archive, report wall, CPU and peak RSS as JSON.

    ``decoder`` / ``gunzip``: override the library's choice (its module defaults) for this process; empty: keep it.
    """
    from xray_tasks.config import IngestConfig
    from xray_tasks.data import archives, images
    from xray_tasks.data.ingest import ingest_archive

    if decoder:
        images.DEFAULT_DECODER = decoder
    if gunzip:
        archives.DEFAULT_GUNZIP = gunzip
    cfg = IngestConfig(image_size=size)
    wall, cpu = time.perf_counter(), time.process_time()
    result = ingest_archive(archive, workspace, cfg)
    out = {
        "images": result.members.sharded,
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


def spawn(archive: Path, workspace: Path, size: int, decoder: str = "", gunzip: str = "") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", str(archive), str(workspace), str(size), decoder, gunzip],
        stdout=subprocess.PIPE,
        text=True,
    )


def collect(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"ingest child failed with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def per_core(fn, items: list, rounds: int = 2) -> float:
    """``fn`` applied to every item: items per CPU second on this one thread (best of ``rounds``)."""
    best = 0.0
    for _ in range(rounds):
        start = time.process_time()
        for item in items:
            fn(item)
        best = max(best, len(items) / (time.process_time() - start))
    return best


def pillow_decode(blob: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        img.load()


def decoders() -> tuple[dict, dict]:
    """The decode-step candidates that import here (name -> decode function), and why the others do not."""
    found, missing = {"Pillow": pillow_decode}, {}
    try:
        import imagecodecs

        found[f"imagecodecs {imagecodecs.__version__} (libpng)"] = imagecodecs.png_decode
    except ImportError as exc:
        missing["imagecodecs"] = str(exc)
    try:
        import cv2
        import numpy as np

        cv2.setNumThreads(1)
        found[f"OpenCV {cv2.__version__}"] = lambda blob: cv2.imdecode(
            np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED
        )
    except ImportError as exc:
        missing["OpenCV"] = f"{exc} (opencv-python-headless is not a project dependency)"
    try:
        from pywuffs import ImageDecoderType, PixelFormat
        from pywuffs.aux import ImageDecoder, ImageDecoderConfig

        config = ImageDecoderConfig()
        config.enabled_decoders = [ImageDecoderType.PNG]
        config.pixel_format = PixelFormat.Y  # 8-bit grey out, as ingest stores it
        wuffs = ImageDecoder(config)
        found["Wuffs (pywuffs), to grey"] = wuffs.decode
    except ImportError as exc:
        missing["Wuffs"] = f"{exc} (pywuffs ships as source only; not a project dependency)"
    return found, missing


def gunzip_rate(archive: bytes, images: int, opener, rounds: int = 2) -> float:
    """Images per CPU second of inflating ``archive`` (read 1 MiB at a time, as the tar reader does)."""

    def inflate(_: object) -> None:
        with opener(io.BytesIO(archive)) as fh:
            while fh.read(1 << 20):
                pass

    return per_core(inflate, [None], rounds) * images


def path_pieces(blobs: list[bytes], size: int, rounds: int) -> dict[str, float]:
    """Images per CPU second of the pieces of ``images.prepare`` around the decode."""
    from xray_tasks.data import images

    gray = [images.decode_gray8(b, 40_000_000, decoder="pillow") for b in blobs]
    return {
        "structure check (chunk walk + CRCs)": per_core(images._check_structure, blobs, rounds),
        f"resize to {size} + raw encode": per_core(
            lambda g: images.encode(images.resize_square(g, size), "raw"), gray, rounds
        ),
    }


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


def fresh_workspace(tmp: Path, archive: Path, label: str) -> Path:
    """Another workspace with the manifest for ``archive``'s source, for one more ingest of the same archive."""
    from xray_tasks.config import IngestConfig
    from xray_tasks.data.manifest import run_manifest

    ws = tmp / f"ws-{label}"
    run_manifest(str(archive.parent), str(ws), IngestConfig())
    return ws


def ingest_per_core(tmp: Path, archive: Path, size: int, rounds: int, configs: dict) -> dict[str, dict]:
    """Archive -> shards in a child process per (config, round), alternating configs; the best round of each."""
    best: dict[str, dict] = {}
    for attempt in range(rounds):
        for label, (decoder, gunzip) in configs.items():
            ws = fresh_workspace(tmp, archive, f"{label.split()[0]}-{attempt}")
            run = collect(spawn(archive, ws, size, decoder, gunzip))
            run["per_core"] = run["images"] / run["cpu_s"]
            if label not in best or run["per_core"] > best[label]["per_core"]:
                best[label] = run
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--meta", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--rounds", type=int, default=2, help="best of this many runs for every per-core rate"
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.child[3], args.child[4])
        return
    import gzip

    from xray_tasks.data import archives, images

    meta = args.meta or args.images.parent / "meta"
    names = sorted(p.name for p in args.images.glob("*.png"))
    if len(names) < 40:
        raise SystemExit(f"{args.images}: need real PNGs (found {len(names)})")
    quarter = len(names) // 4
    rounds = args.rounds
    found, missing = decoders()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"building archives from {len(names)} real PNGs in {tmp} ...", flush=True)
        small = build(tmp, names, args.images, meta, "small", quarter)
        large = build(tmp, names, args.images, meta, "large", 4 * quarter)
        p1 = build(tmp, names, args.images, meta, "p1", 4 * quarter)
        p2 = build(tmp, names, args.images, meta, "p2", 4 * quarter)

        blobs = [(args.images / n).read_bytes() for n in names[: 4 * quarter]]
        print("measuring per core ...", flush=True)
        floor_before = per_core(pillow_decode, blobs, rounds)
        decode = {name: per_core(fn, blobs, rounds) for name, fn in found.items()}
        prepare = {
            decoder: per_core(lambda b, d=decoder: images.prepare(b, args.size, decoder=d), blobs, rounds)
            for decoder in images.DECODERS
            if decoder == "pillow" or images._png_decode is not None
        }
        pieces = path_pieces(blobs, args.size, rounds)
        packed = large.read_bytes()
        gunzip = {"zlib (gzip.GzipFile)": gunzip_rate(packed, len(blobs), lambda f: gzip.GzipFile(fileobj=f))}
        if archives._IGzipFile is not None:
            gunzip["isal (igzip.IGzipFile)"] = gunzip_rate(
                packed, len(blobs), lambda f: archives._IGzipFile(fileobj=f)
            )
        chosen = f"{images.DEFAULT_DECODER} + {archives.DEFAULT_GUNZIP} (the default)"
        configs = {chosen: ("", ""), "pillow + zlib (before)": ("pillow", "zlib")}
        whole = ingest_per_core(tmp, large, args.size, rounds, configs)
        floor_after = per_core(pillow_decode, blobs, rounds)
        floor = max(floor_before, floor_after)
        one = whole[chosen]

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
        f"\nreal NIH PNGs ({len(blobs)}), stored {args.size}x{args.size} raw, {cores} cores, load average "
        f"{load:.2f} at the end (other work on the machine lowers the parallel speed-up); per core = images per "
        f"CPU second on one thread, best of {rounds}; ratio = to Pillow's decode-only rate"
    )

    def row(label: str, rate: float, note: str = "") -> None:
        print(f"  {label:40s} {rate:8.1f} images/s/core  {rate / floor:7.2f}x  {note}".rstrip())

    print(
        f"Pillow decode-only (the bound)             {floor:8.1f} images/s/core     1.00x  "
        f"({floor_before:.1f} before, {floor_after:.1f} after)"
    )
    print("decode step, alone:")
    for name, rate in decode.items():
        row(name, rate)
    for name, why in missing.items():
        print(f"  {name:40s} skipped: not installed ({why})")
    print("images.prepare (structure check, decode, grey, resize, encode), per decoder:")
    for decoder, rate in prepare.items():
        row(decoder + (" (the default)" if decoder == images.DEFAULT_DECODER else ""), rate)
    print("around the decode:")
    for name, rate in pieces.items():
        row(name, rate)
    print(f"gunzip of the {len(blobs)}-image archive ({len(packed) / 1e6:.0f} MB):")
    for name, rate in gunzip.items():
        row(name, rate, f"{1000 / rate:.2f} ms/image")
    if archives._IGzipFile is None:
        print("  isal                                     skipped: not installed")
    print("archive -> shards, one process:")
    for label, run in whole.items():
        row(
            label,
            run["per_core"],
            f"({run['images']} images, {run['wall_s']:.2f} s wall, {run['cpu_s']:.2f} s CPU)",
        )
    ratio = one["per_core"] / floor
    print(f"  ratio to decode-only       {ratio:8.2f}   target >= 1.00  {'PASS' if ratio >= 1.0 else 'FAIL'}")
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
