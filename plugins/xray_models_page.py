"""HTML of the "Models" page: pure functions of what the registry API returns (no Airflow, no I/O).

Every value that came from storage is escaped; links and image sources are relative, so the page works under
any base URL the api-server is served at (and inside the UI's iframe).
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2rem; color: #1a202c; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border-bottom: 1px solid #e2e8f0; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f7fafc; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.champion { font-weight: 600; color: #22543d; } .rejected, .conflict { color: #9b2c2c; }
.forced { color: #975a16; } .muted { color: #718096; } .plots img { width: 320px; margin: .3rem; }
details { margin: .4rem 0; } code { background: #edf2f7; padding: 0 .2rem; }
"""


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _decision(row: dict[str, Any]) -> str:
    decision = row.get("decision") or ("incomplete" if not row.get("complete") else "–")
    reasons = "; ".join(row.get("reasons") or [])
    title = f' title="{escape(reasons)}"' if reasons else ""
    return f'<span class="{escape(decision)}"{title}>{escape(decision)}</span>'


def _fingerprint(row: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """The version's fingerprint, short, and what changed since the previous complete version."""
    from xray_tasks.training.fingerprint import changes

    fp = row.get("fingerprint")
    if not fp:
        return '<span class="muted">–</span>'
    changed = changes(None if previous is None else (previous.get("fingerprint") or {}), fp)
    label = {"first": "first version", "unknown": "previous unknown"}.get(changed[0] if changed else "", "")
    label = label or (f"{', '.join(changed)} changed" if changed else "nothing changed")
    retrain = fp.get("retrain") or {}
    if retrain:
        label += f"; retrained: {retrain.get('reason', '')}"
    return (
        f'<code title="{escape(str(fp.get("digest")))}">{escape(str(fp.get("digest", ""))[:12])}</code> '
        + (f'<span class="muted">{escape(label)}</span>')
    )


def versions_table(model: dict[str, Any]) -> str:
    """One row per version: metrics from its manifest summary, the latest gate decision, the champion mark, the
    fingerprint with what changed since the version before."""
    rows = []
    previous_of: dict[str, dict[str, Any] | None] = {}
    before = None
    for row in model["versions"]:
        if row.get("complete"):
            previous_of[row["version"]] = before
            before = row
    for row in reversed(model["versions"]):
        summary = row.get("summary") or {}
        star = '<span class="champion">champion</span>' if row.get("champion") else ""
        rows.append(
            f"<tr><td>{escape(str(row['version']))}</td><td>{star}</td><td>{_decision(row)}</td>"
            f"<td class=num>{_num(summary.get('test_auroc'))}</td><td class=num>{_num(summary.get('sensitivity'))}</td>"
            f"<td class=num>{_num(summary.get('healthy_cleared'))}</td><td class=num>{_num(summary.get('threshold'))}</td>"
            f"<td>{escape(str(summary.get('base') or '–'))}</td>"
            f"<td>{_fingerprint(row, previous_of.get(row['version']))}</td>"
            f"<td class=muted>{escape(str(row.get('created_at') or row.get('problem') or ''))}</td></tr>"
        )
    head = (
        "<tr><th>version</th><th></th><th>gate</th><th>test AUROC</th><th>sensitivity</th>"
        "<th>healthy cleared</th><th>threshold</th><th>base</th><th>fingerprint</th><th>created</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _metrics_table(metrics: dict[str, Any]) -> str:
    from xray_tasks.contracts import ContractError, Metrics

    try:
        m = Metrics.from_dict(metrics, where="metrics.json")
    except ContractError as exc:
        return f"<p class=rejected>{escape(str(exc))}</p>"
    test, at_op, bench = m.test, m.test.at_operating_point, m.test.benchmark_always_unhealthy
    ci = test.auroc_ci or (None, None)
    rows = [
        ("test images (unhealthy)", f"{test.n} ({test.positives})"),
        ("AUROC [95% CI]", f"{_num(test.auroc)} [{_num(ci[0])}, {_num(ci[1])}]"),
        ("AUPRC", _num(test.auprc)),
        ("threshold (chosen on val)", _num(m.operating_point.threshold)),
        ("target sensitivity", _num(m.operating_point.target_sensitivity)),
        ("sensitivity / specificity", f"{_num(at_op.recall)} / {_num(at_op.specificity)}"),
        ("healthy studies cleared", _num(at_op.healthy_cleared)),
        (f"F{at_op.beta:g} (model / always-unhealthy)", f"{_num(at_op.f_beta)} / {_num(bench.f_beta)}"),
    ]
    return (
        "<table>"
        + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _decisions_list(decisions: list[dict[str, Any]]) -> str:
    items = []
    for d in decisions:
        forced = d.get("forced") or {}
        extra = f" by {escape(str(forced.get('by')))}: {escape(str(forced.get('reason')))}" if forced else ""
        reasons = "; ".join(d.get("reasons") or [])
        items.append(
            f"<li>{escape(str(d.get('decided_at', '')))} <b>{escape(str(d.get('decision')))}</b>{extra}"
            f"{' – ' + escape(reasons) if reasons else ''}</li>"
        )
    return f"<ul>{''.join(items)}</ul>" if items else "<p class=muted>no decision recorded</p>"


def version_section(model_name: str, details: dict[str, Any]) -> str:
    """Metrics, decision log and plots of one complete version (plots are fetched from the ``plot`` route)."""
    version = str(details["version"])
    plots = "".join(
        f'<img alt="{escape(name)}" src="plot/{quote(model_name)}/{quote(version)}/{quote(name)}">'
        for name in sorted(details.get("plots", {}))
        if name.endswith(".png")
    )
    champion = " (champion)" if details.get("champion") else ""
    return (
        f"<details{' open' if details.get('champion') else ''}><summary>version {escape(version)}{champion}"
        f" – <code>{escape(str(details.get('uri', '')))}</code></summary>"
        f"{_metrics_table(details.get('metrics', {}))}{_decisions_list(details.get('decisions', []))}"
        f"<div class=plots>{plots}</div></details>"
    )


def page(registry: str, models: list[dict[str, Any]]) -> str:
    """The whole page: per model, the versions table and one section per complete version."""
    body = [f"<h1>Models</h1><p class=muted>registry <code>{escape(registry)}</code></p>"]
    if not models:
        body.append("<p>No model has been published yet: run the training DAG.</p>")
    for model in models:
        champion = model.get("champion")
        body.append(
            f"<h2>{escape(model['name'])}</h2><p>champion: "
            f"<span class=champion>{escape(str(champion)) if champion else 'none yet'}</span></p>"
        )
        body.append(versions_table(model))
        body.extend(version_section(model["name"], d) for d in model.get("details", []))
        body.extend(f"<p class=rejected>{escape(p)}</p>" for p in model.get("problems", []))
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>Models</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>"
    )
