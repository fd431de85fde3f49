"""Run one coverage-guided fuzz target (atheris / libFuzzer) for a bounded time, or write the seed corpus.

    .venv/bin/python fuzz/run.py run TARGET [--seconds 10] [--work DIR]   # fuzz; new inputs go to DIR only
    .venv/bin/python fuzz/run.py merge TARGET --work DIR                 # add DIR's new coverage to the corpus
    .venv/bin/python fuzz/run.py seed                                    # (re)write the hand-made seeds

``run`` reads the committed corpus ``fuzz/corpus/TARGET`` (never writes it), keeps what it finds under ``--work``
(a temporary folder by default) with any crash input (``crash-*``), and prints libFuzzer's statistics; its exit
status is libFuzzer's (0: no crash).  Targets and what each may raise: ``fuzz/targets.py``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
MAX_LEN = {"archive": 65536, "image": 32768, "metadata": 16384, "manifest": 4096, "pointer": 1024}


def run(target: str, seconds: int, work: Path, runs: int | None, extra: list[str]) -> None:
    import atheris  # the fuzzer only: nothing else needs it

    sys.path.insert(0, str(HERE))
    with atheris.instrument_imports(include=list(_instrumented(target))):
        targets = importlib.import_module("targets")
    one = targets.TARGETS[target]
    work.mkdir(parents=True, exist_ok=True)
    args = [
        sys.argv[0],
        str(work),
        str(CORPUS / target),
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN[target]}",
        "-rss_limit_mb=2048",
        "-timeout=20",
        "-print_final_stats=1",
        f"-artifact_prefix={work}/",
        *([f"-runs={runs}"] if runs else []),
        *extra,
    ]
    atheris.Setup(args, one)
    atheris.Fuzz()


def merge(target: str, work: Path) -> int:
    """Copy the inputs a run kept (named by their sha1, as libFuzzer names them) into the committed corpus.

    Every kept input added coverage when it was found, so this is the corpus libFuzzer itself grew; crash inputs
    are left out (they belong in a regression test).  Returns how many files were added.
    """
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    added = 0
    for path in sorted(work.iterdir()):
        kept = path.is_file() and not path.name.startswith(("crash-", "timeout-", "oom-", "leak-"))
        if kept and not (folder / path.name).exists():
            (folder / path.name).write_bytes(path.read_bytes())
            added += 1
    print(f"{target}: {added} input(s) added to {folder}")
    return added


def _instrumented(target: str) -> tuple[str, ...]:
    # the list lives beside the targets; read it without importing them (that would import before instrumenting)
    text = (HERE / "targets.py").read_text()
    table = text[text.index("INSTRUMENT = {") + len("INSTRUMENT = ") : text.index('"""Modules whose')]
    return ast.literal_eval(table)[target]


def seed() -> None:
    """Small valid and near-valid inputs, one file each, so every target starts past the easy checks."""
    import gzip
    import io
    import json
    import tarfile

    import numpy as np

    from xray_tasks.data.synth import Study, write_metadata
    from xray_tasks.data.synth_images import png_bytes

    pixels = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 251).astype(np.uint8)
    pngs = {mode: png_bytes(pixels, mode) for mode in ("L", "LA", "RGB", "RGBA", "I;16")}
    seeds: dict[str, dict[str, bytes]] = {name: {} for name in MAX_LEN}
    for mode, data in pngs.items():
        seeds["image"][f"png-{mode.replace(';', '')}"] = data
    seeds["image"]["png-truncated"] = pngs["L"][:60]

    def tar(members, fmt=tarfile.GNU_FORMAT) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 1_500_000_000
                t.addfile(info, io.BytesIO(data))
        return out.getvalue()

    plain = tar([("images/00000001_000.png", pngs["L"]), ("images/notes.txt", b"x")])
    seeds["archive"]["tar-gz"] = gzip.compress(plain, mtime=0)
    seeds["archive"]["tar-plain"] = plain
    seeds["archive"]["tar-gnu-longname"] = gzip.compress(
        tar([("images/" + "n" * 300 + ".png", b"abc")]), mtime=0
    )
    seeds["archive"]["tar-pax"] = tar([("images/" + "p" * 300 + ".png", b"abc")], tarfile.PAX_FORMAT)

    studies = [
        Study("00000001_000.png", 1, 0, 58, "M", "PA", ("Cardiomegaly",)),
        Study("00000001_001.png", 1, 1, 58, "M", "PA", ("Cardiomegaly", "Emphysema")),
        Study("00000002_000.png", 2, 0, 81, "F", "AP", ()),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for style in ("2017", "2020"):
            seeds["metadata"][f"csv-{style}"] = write_metadata(Path(tmp), studies, style).read_bytes()
    files = {"model.keras": {"sha256": "0" * 64, "bytes": 10}}
    seeds["manifest"]["manifest-v1"] = json.dumps({"schema": 1, "files": files, "version": "000001"}).encode()
    seeds["pointer"]["champion"] = json.dumps({"version": "000001", "publish_id": "p", "at": "2026"}).encode()
    for target, items in seeds.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in items.items():
            (folder / f"seed-{name}").write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run")
    one.add_argument("target", choices=sorted(MAX_LEN))
    one.add_argument("--seconds", type=int, default=10)
    one.add_argument("--runs", type=int, help="stop after this many inputs instead")
    one.add_argument(
        "--work", type=Path, help="where new inputs and crashes go (default: a temporary folder)"
    )
    into = sub.add_parser("merge")
    into.add_argument("target", choices=sorted(MAX_LEN))
    into.add_argument("--work", type=Path, required=True)
    sub.add_parser("seed")
    args, extra = parser.parse_known_args()
    if args.command == "seed":
        seed()
    elif args.command == "merge":
        merge(args.target, args.work)
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix=f"xray-fuzz-{args.target}-"))
        run(args.target, args.seconds, work, args.runs, extra)


if __name__ == "__main__":
    main()
