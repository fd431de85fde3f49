"""Subcommands of the data side: synth, pack, manifest, ingest-archive, ingest, validate, list-archives."""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import ProcessPoolExecutor, as_completed

from xray_tasks import storage
from xray_tasks.cli.common import add_config_args, load_config
from xray_tasks.contracts import ArchiveSummary, ValidationSummary
from xray_tasks.data.ingest import ingest_archive, list_archives
from xray_tasks.data.manifest import format_counts, read_manifest, run_manifest
from xray_tasks.data.synth import INJECTIONS, NEW_SCANNER, REALISTIC, RECOVERABLE, generate, pack_real
from xray_tasks.data.synth_images import Look
from xray_tasks.data.validate import validate
from xray_tasks.errors import BadInput, MissingInput, StageError, XrayError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic NIH-shaped dataset (archives, metadata, lists)")
    p.add_argument("out")
    p.add_argument("--patients", type=int, default=60)
    p.add_argument("--archives", type=int, default=2)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--csv-style", choices=["2017", "2020", "both"], default="2017")
    p.add_argument("--no-lists", action="store_true", help="omit train_val_list.txt / test_list.txt")
    p.add_argument("--signal", type=float, help="strength of the unhealthy visual signal (default 1.0)")
    p.add_argument(
        "--subtle", type=float, help="share of unhealthy studies whose finding does not show (default 0)"
    )
    p.add_argument(
        "--realistic",
        action="store_true",
        help=f"the demo's calibration {REALISTIC} (a test AUROC of about 0.85-0.93, not 1.0)",
    )
    p.add_argument(
        "--scanner",
        choices=["default", "new"],
        default="default",
        help="'new': a brighter scanner with less contrast (a shifted batch for the drift check)",
    )
    p.add_argument(
        "--inject", default="", help=f"comma list of {list(INJECTIONS)}, or 'all' (recoverable ones)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synth)

    p = sub.add_parser(
        "pack", help="build NIH-style archives from a folder of real PNGs (+ cut-down metadata)"
    )
    p.add_argument("images_dir")
    p.add_argument("meta_dir")
    p.add_argument("out")
    p.add_argument("--archives", type=int, default=2)
    p.add_argument("--limit", type=int)
    p.add_argument("--metadata", default="Data_Entry_2017_v2020.csv")
    p.set_defaults(func=lambda a: pack_real(a.images_dir, a.meta_dir, a.out, a.archives, a.limit, a.metadata))

    p = sub.add_parser(
        "manifest", help="metadata + split lists -> manifest.parquet (counts per split and class)"
    )
    add_config_args(p, "source", "workspace")
    p.add_argument(
        "--metadata", help="metadata file name in the source (default: the 2020 release, else 2017)"
    )
    p.set_defaults(func=_manifest)

    p = sub.add_parser("ingest-archive", help="one images_NNN.tar.gz -> committed TFRecord shards")
    p.add_argument("archive", help="archive URI (local path or s3://)")
    add_config_args(p, "workspace")
    p.set_defaults(func=_ingest_archive)

    p = sub.add_parser("ingest", help="manifest, every archive (in parallel), validate: the whole data stage")
    add_config_args(p, "source", "workspace")
    p.add_argument("--metadata")
    p.add_argument("--jobs", type=int, default=2, help="archives processed at once (one process each)")
    p.set_defaults(func=_ingest)

    p = sub.add_parser("validate", help="check committed shards against the manifest")
    add_config_args(p, "workspace")
    p.set_defaults(func=lambda a: validate(load_config(a).workspace))

    p = sub.add_parser("peek", help="read one split's committed shards through the tf.data pipeline")
    add_config_args(p, "workspace")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=_peek)

    p = sub.add_parser("list-archives", help="the images_*.tar.gz archives at a source")
    p.add_argument("source")
    p.set_defaults(func=lambda a: {"archives": list_archives(a.source)})


def _synth(args: argparse.Namespace) -> dict:
    inject = tuple(RECOVERABLE) if args.inject == "all" else tuple(i for i in args.inject.split(",") if i)
    preset = REALISTIC if args.realistic else {"signal": 1.0, "subtle": 0.0}
    signal = preset["signal"] if args.signal is None else args.signal
    subtle = preset["subtle"] if args.subtle is None else args.subtle
    if not 0.0 <= subtle <= 1.0:
        raise BadInput(f"--subtle must be a share in [0, 1], got {subtle}")
    scanner = NEW_SCANNER if args.scanner == "new" else Look()
    return generate(
        args.out,
        patients=args.patients,
        archives=args.archives,
        image_size=args.image_size,
        csv_style=args.csv_style,
        lists=not args.no_lists,
        inject=inject,
        signal=signal,
        seed=args.seed,
        look=Look(subtle=subtle, contrast=scanner.contrast, brightness=scanner.brightness),
    )


def _manifest(args: argparse.Namespace) -> dict:
    cfg = load_config(args)
    _require(cfg.source, "--source")
    summary = run_manifest(cfg.source, cfg.workspace, cfg.ingest, args.metadata)
    print(format_counts(summary.to_dict()["counts"]))
    return summary


def _ingest_archive(args: argparse.Namespace) -> ArchiveSummary:
    cfg = load_config(args)
    return ingest_archive(args.archive, cfg.workspace, cfg.ingest)


def _one_archive(archive: str, workspace: str, ingest_cfg) -> ArchiveSummary:
    return ingest_archive(archive, workspace, ingest_cfg)


def _ingest(args: argparse.Namespace) -> ValidationSummary:
    cfg = load_config(args)
    _require(cfg.source, "--source")
    run_manifest(cfg.source, cfg.workspace, cfg.ingest, args.metadata)
    archives = list_archives(cfg.source)
    if not archives:
        raise MissingInput(f"{cfg.source}: no images_*.tar.gz archives")
    read_manifest(cfg.workspace)  # fail here, once, if the manifest is unreadable
    results, failures = [], []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(_one_archive, a, cfg.workspace, cfg.ingest): a for a in archives}
        for future in as_completed(futures):
            try:
                results.append(future.result())
            except (XrayError, OSError) as exc:
                logger.error("%s failed: %s", storage.basename(futures[future]), exc)
                failures.append({"archive": storage.basename(futures[future]), "error": str(exc)})
    summary = validate(cfg.workspace)
    if failures:
        raise StageError(f"{len(failures)} archive(s) failed, the others are committed: {failures}")
    return summary


def _peek(args: argparse.Namespace) -> dict:
    from xray_tasks.data.dataset import split_dataset

    cfg = load_config(args)
    images, labels, names, shape = 0, 0, [], None
    for batch in split_dataset(cfg.workspace, args.split, batch_size=args.batch_size, channels=1):
        images += int(batch["image"].shape[0])
        labels += int(batch["label"].numpy().sum())
        names.extend(n.decode() for n in batch["image_index"].numpy()[: max(0, 5 - len(names))])
        shape = list(batch["image"].shape[1:])
    return {"split": args.split, "images": images, "unhealthy": labels, "image_shape": shape, "first": names}


def _require(value: str, flag: str) -> None:
    if not value:
        raise SystemExit(f"{flag} is required")
