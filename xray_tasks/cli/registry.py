"""Subcommands of the registry: publish, models list|show, predict, score."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from typing import Any

from xray_tasks import storage
from xray_tasks.cli import governance
from xray_tasks.cli.common import IncompleteResult, add_config_args, load_config
from xray_tasks.errors import BadInput, MissingInput

logger = logging.getLogger(__name__)

FORMATS = ("table", "csv", "json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish", help="gate an evaluated run against the champion and publish it as a version"
    )
    add_config_args(p, "registry", "workspace")
    p.add_argument("--run-dir", required=True, help="evaluated run directory (local path or s3://)")
    p.add_argument("--model-name", help="registry model name (default: the config's model_name)")
    p.add_argument(
        "--force", action="store_true", help="promote even if the gate rejects it (needs --reason)"
    )
    p.add_argument("--reason", default="", help="why a publish is forced (recorded with the decision)")
    p.add_argument("--actor", help="who forces it (default: $XRAY_ACTOR or the login name)")
    p.add_argument(
        "--deployment-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the deployment's own policy (e.g. gate.min_auroc=0.7 from an admin-only Variable): "
        "unlike --set gate.*, it does not make the publish a forced one (repeatable)",
    )
    p.add_argument(
        "--stage",
        action="store_true",
        help="upload a gated version as a candidate awaiting sign-off (`models promote`); the champion stays",
    )
    p.set_defaults(func=_publish)

    models = sub.add_parser("models", help="list, show, promote, reject and clean up versions")
    msub = models.add_subparsers(
        dest="models_command", required=True, metavar="{list,show,promote,reject,gc}"
    )
    p = msub.add_parser("list", help="models under a registry, or the versions of one model (--model-name)")
    _registry_args(p, model_name=None)
    p.set_defaults(func=_models_list)
    p = msub.add_parser("show", help="one version (default: the champion): metrics, decisions, files")
    _registry_args(p)
    p.add_argument("--version", help="version id, e.g. 7 or 000007 (default: the champion)")
    p.set_defaults(func=_models_show)
    governance.register_models(msub, _registry_args)
    governance.register_keys(sub)

    p = sub.add_parser(
        "predict", help="P(unhealthy) and the triage decision per image, with a published model"
    )
    _registry_args(p)
    p.add_argument("--version", help="version id (default: the champion)")
    p.add_argument("images", nargs="+", help="PNG files, folders or s3:// prefixes")
    p.add_argument(
        "--allow-errors",
        action="store_true",
        help="exit 0 even when some inputs could not be scored (they are still listed, with the reason)",
    )
    p.set_defaults(func=_predict)

    p = sub.add_parser("score", help="score a folder/prefix of images into a worklist ordered by risk")
    _registry_args(p, formats=False)
    p.add_argument("--version", help="version id (default: the champion)")
    p.add_argument("--images", required=True, help="folder or s3:// prefix of PNG files")
    p.add_argument("--out", required=True, help="worklist file: .csv or .parquet (local path or s3://)")
    p.add_argument("--batch-size", type=int, default=32)
    add_config_args(p)  # the drift limits: --set drift.psi_limit=0.3, --config deployment.json
    p.set_defaults(func=_score)

    p = sub.add_parser(
        "outcomes",
        help="sensitivity and healthy cleared the model achieved on scored studies whose findings came back",
    )
    _registry_args(p, formats=False)
    p.add_argument("--worklist", required=True, help="a worklist `score` wrote (.csv or .parquet)")
    p.add_argument("--labels", required=True, help="CSV with columns image,label (1/unhealthy, 0/healthy)")
    p.add_argument("--version", help="version that scored it (default: the worklist's model_version)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the interval (0: none)")
    add_config_args(p)  # the tolerance: gate.sensitivity_tolerance
    p.set_defaults(func=_outcomes)


def _registry_args(
    p: argparse.ArgumentParser, formats: bool = True, model_name: str | None = "xray-triage"
) -> None:
    p.add_argument("--registry", required=True, help="registry root (local path or s3://)")
    p.add_argument(
        "--model-name",
        default=model_name,
        help=f"model name in the registry (default: {model_name or 'all models'})",
    )
    if formats:
        p.add_argument(
            "--format", choices=FORMATS, default="table", help="how rows are printed (default: table)"
        )


def _publish(args: argparse.Namespace) -> dict:
    from xray_tasks.registry import publish

    # The deployment's policy: the profile, --config and --deployment-set; a --set gate.* on this run changes it,
    # which makes the publish a forced one.
    cfg = load_config(argparse.Namespace(**{**vars(args), "set": [*args.deployment_set, *args.set]}))
    run_sets = [a for a in args.set if not a.strip().startswith("gate.")]
    deployment = load_config(argparse.Namespace(**{**vars(args), "set": [*args.deployment_set, *run_sets]}))
    return publish(
        args.run_dir,
        cfg.registry,
        model_name=args.model_name or cfg.model_name,
        policy=cfg.gate,
        force=args.force,
        reason=args.reason,
        actor=args.actor,
        workspace=args.workspace,
        stage=args.stage,
        deployment_policy=deployment.gate,
    )


def _models_list(args: argparse.Namespace) -> dict:
    from xray_tasks import registry

    if args.model_name is None:
        models = registry.list_models(args.registry)
        if args.format != "json":
            _print_rows(
                [{"model": m, "champion": registry.champion_version(args.registry, m)} for m in models],
                args.format,
            )
        return {"registry": args.registry, "models": models}
    rows = registry.list_versions(args.registry, args.model_name)
    if args.format != "json":
        _print_rows(
            [
                {
                    "version": r["version"],
                    "complete": r["complete"],
                    "champion": r["champion"],
                    "decision": r["decision"],
                    "test_auroc": (r["summary"] or {}).get("test_auroc"),
                    "created_at": r["created_at"],
                }
                for r in rows
            ],
            args.format,
        )
    return {"registry": args.registry, "model_name": args.model_name, "versions": rows}


def _models_show(args: argparse.Namespace) -> dict:
    from xray_tasks import registry
    from xray_tasks.contracts import Metrics

    details = registry.version_details(args.registry, args.model_name, args.version)
    if args.format != "json":
        metrics = Metrics.from_dict(details["metrics"], where=f"version {details['version']} metrics.json")
        at_op = metrics.test.at_operating_point
        _print_rows(
            [
                {
                    "field": "version",
                    "value": details["version"] + (" (champion)" if details["champion"] else ""),
                },
                {"field": "test AUROC", "value": metrics.test.auroc},
                {"field": "threshold", "value": metrics.operating_point.threshold},
                {"field": "sensitivity", "value": at_op.recall},
                {"field": "healthy cleared", "value": at_op.healthy_cleared},
                *(
                    {
                        "field": f"decision {d['decided_at']}",
                        "value": f"{d['decision']}: {'; '.join(d['reasons'])}",
                    }
                    for d in details["decisions"]
                ),
                {"field": "serving base path", "value": details["serving_base_path"]},
            ],
            args.format,
        )
    return details


def _predict(args: argparse.Namespace) -> dict:
    from xray_tasks import registry
    from xray_tasks.registry import inference

    inputs = inference.expand_inputs(args.images)
    published = registry.load(args.registry, args.model_name, args.version)
    rows = published.score(inputs)
    summary = _counts(rows, published)
    if args.format == "json":
        summary = {**summary, "predictions": rows}
    else:
        _print_rows(
            [{k: r[k] for k in ("image", "probability", "decision", "error")} for r in rows], args.format
        )
    if summary["errors"] and not args.allow_errors:
        raise IncompleteResult(
            f"{summary['errors']} of {summary['images']} inputs could not be scored (listed with the reason); "
            f"--allow-errors to accept that",
            summary,
        )
    return summary


def _score(args: argparse.Namespace) -> dict:
    import pandas as pd

    from xray_tasks import registry
    from xray_tasks.registry import inference

    if not args.out.endswith((".csv", ".parquet")):
        raise BadInput(f"--out must end in .csv or .parquet, got {args.out!r}")
    inputs = inference.expand_inputs([args.images])
    if len(inputs) == 1 and inputs[0][0] == args.images and inputs[0][1]:
        raise MissingInput(f"{args.images}: {inputs[0][1]}")
    from xray_tasks.registry import monitoring

    cfg = load_config(args)
    published = registry.load(args.registry, args.model_name, args.version)
    rows, report, timing = monitoring.score_with_drift(
        published, inputs, args.out, cfg.drift, args.batch_size
    )
    table = pd.DataFrame(
        rows, columns=["image", "probability", "decision", "error", "model_version", "threshold"]
    )
    # Highest risk first; unreadable images last, still listed so nobody assumes they were cleared.
    table = table.sort_values("probability", ascending=False, na_position="last", kind="mergesort")
    table.insert(0, "rank", range(1, len(table) + 1))
    if args.out.endswith(".csv"):
        storage.write_text(args.out, table.to_csv(index=False))
    else:
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        storage.write_bytes(args.out, buffer.getvalue())
    written = monitoring.write_report(report, monitoring.reference_of(published))
    monitoring.record(args.registry, report)
    return {
        **_counts(rows, published),
        "worklist": args.out,
        **written,
        "drift_status": report.status,
        "drift_message": report.message,
        "scoring_s": round(timing["scoring_s"], 3),
        "monitor_s": round(timing["monitor_s"], 3),
    }


def _outcomes(args: argparse.Namespace) -> dict:
    from xray_tasks import registry
    from xray_tasks.contracts import Metrics
    from xray_tasks.errors import StageError
    from xray_tasks.evaluation import outcomes
    from xray_tasks.registry import monitoring

    cfg = load_config(args)
    version = args.version
    if version is None:
        seen = outcomes.read_worklist(args.worklist).get("model_version")
        versions = sorted({str(v) for v in seen.dropna()}) if seen is not None else []
        if len(versions) > 1:
            raise BadInput(f"{args.worklist}: scored by several versions {versions}; give --version")
        version = versions[0] if versions else None
    details = registry.version_details(args.registry, args.model_name, version)
    doc = Metrics.from_dict(details["metrics"], where=f"version {details['version']} metrics.json")
    result = outcomes.outcome(
        args.worklist,
        args.labels,
        doc,
        model_name=args.model_name,
        version=details["version"],
        tolerance=cfg.gate.sensitivity_tolerance,
        bootstrap=args.bootstrap,
    )
    stored = monitoring.record(args.registry, result)
    logger.info("outcomes: %s (kept in %s)", result.message, stored)
    if result.below_target:
        raise StageError(f"{result.message} (kept in {stored})")
    return {**result.to_dict(), "stored": stored}


def _counts(rows: list[dict[str, Any]], published: Any) -> dict[str, Any]:
    from xray_tasks.registry.inference import CLEARED, NEEDS_REVIEW

    return {
        "model_name": published.model_name,
        "version": published.version,
        "threshold": published.threshold,
        "images": len(rows),
        NEEDS_REVIEW: sum(r["decision"] == NEEDS_REVIEW for r in rows),
        CLEARED: sum(r["decision"] == CLEARED for r in rows),
        "errors": sum(r["error"] is not None for r in rows),
    }


def _print_rows(rows: list[dict[str, Any]], fmt: str) -> None:
    """Rows as CSV or an aligned text table on stdout (the JSON summary still follows as the last line)."""
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    cells = [[_cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return value if isinstance(value, str) else json.dumps(value)
