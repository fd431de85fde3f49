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
.rejected_by_reviewer, .approval_timed_out, .worse { color: #9b2c2c; } .rolled_back, .candidate { color: #2b6cb0; }
.approved, .better, .signed { color: #22543d; } .unsigned { color: #975a16; } .pending { color: #2b6cb0; }
"""


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _decision(row: dict[str, Any]) -> str:
    decision = row.get("decision") or ("incomplete" if not row.get("complete") else "–")
    reasons = "; ".join(row.get("reasons") or [])
    title = f' title="{escape(reasons)}"' if reasons else ""
    return f'<span class="{escape(decision)}"{title}>{escape(DECISION_LABELS.get(decision, decision))}</span>'


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
        "<tr><th>version</th><th></th><th>latest decision</th><th>test AUROC</th><th>sensitivity</th>"
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


DECISION_LABELS = {
    "approved": "approved",
    "forced": "forced",
    "rejected": "rejected by the gate",
    "candidate": "staged as candidate",
    "rejected_by_reviewer": "rejected by reviewer",
    "approval_timed_out": "approval timed out",
    "rolled_back": "rolled back to this version",
    "conflict": "conflict",
}
"""How each decision of a version's log reads on the page."""


def _who_and_why(d: dict[str, Any]) -> tuple[str, str]:
    forced = d.get("forced") or {}
    who = d.get("actor") or forced.get("by") or ""
    why = [str(x) for x in (d.get("comment"), forced.get("reason")) if x]
    why += [str(r) for r in d.get("reasons") or []]
    if d.get("changed_keys"):
        why.append("gate keys changed: " + ", ".join(str(k) for k in d["changed_keys"]))
    if d.get("champion_before") and d.get("decision") in ("approved", "forced", "rolled_back"):
        why.append(f"champion before: {d['champion_before']}")
    return str(who), "; ".join(dict.fromkeys(why))


LADDER_NAMES = {
    "always_unhealthy": "always unhealthy",
    "metadata_baseline": "metadata baseline",
    "model": "this model",
}


def _ladder_table(metrics: dict[str, Any]) -> str:
    """The ladder on the version's test split: always-unhealthy, the metadata baseline, the model, and the
    model's paired margin over the baseline (nothing for versions evaluated before the ladder existed)."""
    from xray_tasks.contracts import ContractError, Metrics

    try:
        ladder = Metrics.from_dict(metrics, where="metrics.json").ladder
    except ContractError:
        return ""  # _metrics_table already says why
    if ladder is None:
        return "<p class=muted>no ladder: evaluated before the metadata baseline existed</p>"
    rows = []
    for r in ladder.rungs:
        ci = r.auroc_ci or (None, None)
        op = r.at_operating_point
        rows.append(
            f"<tr><td>{escape(LADDER_NAMES.get(r.name, r.name))}</td>"
            f"<td class=num>{_num(r.auroc)} [{_num(ci[0])}, {_num(ci[-1])}]</td>"
            f"<td class=num>{_num(op.recall)}</td><td class=num>{_num(op.healthy_cleared)}</td>"
            f"<td class=num>{_num(op.f_beta)}</td></tr>"
        )
    versus = ladder.model_vs_baseline
    margin = ""
    if versus is not None:
        ci = versus.delta_ci or (None, None)
        margin = (
            f"<p>margin over the metadata baseline: {_num(versus.delta, 4)} "
            f"[{_num(ci[0], 4)}, {_num(ci[-1], 4)}] (paired, {versus.n} test studies)</p>"
        )
    head = (
        "<tr><th>ladder (test)</th><th>AUROC [95% CI]</th><th>sensitivity</th><th>healthy cleared</th>"
        "<th>F-beta</th></tr>"
    )
    return f"<table class=ladder>{head}{''.join(rows)}</table>{margin}"


def _decisions_list(decisions: list[dict[str, Any]]) -> str:
    """The version's decision log, oldest first: when, what, who, why."""
    rows = []
    for d in decisions:
        decision = str(d.get("decision"))
        who, why = _who_and_why(d)
        rows.append(
            f"<tr class=decision><td class=muted>{escape(str(d.get('decided_at', '')))}</td>"
            f'<td><span class="{escape(decision)}">{escape(DECISION_LABELS.get(decision, decision))}</span></td>'
            f"<td>{escape(who) or '–'}</td><td>{escape(why) or '–'}</td></tr>"
        )
    if not rows:
        return "<p class=muted>no decision recorded</p>"
    head = "<tr><th>when</th><th>decision</th><th>who</th><th>why</th></tr>"
    return f"<table class=decisions>{head}{''.join(rows)}</table>"


def signature_status(signature: dict[str, Any] | None) -> str:
    """Signed and verified, signed by an unknown key or badly, unsigned, or not checked (no keys configured)."""
    if not signature:
        return "<p class=muted>signature: not reported</p>"
    key = escape(str(signature.get("key_id") or "–"))
    reason = escape(str(signature.get("reason") or ""))
    if not signature.get("signed"):
        return f"<p class=unsigned>signature: <b>unsigned</b>{' – ' + reason if reason else ''}</p>"
    if signature.get("verified"):
        return f"<p class=signed>signature: <b>verified</b>, key <code>{key}</code></p>"
    if signature.get("verified") is None or "no trusted keys" in str(signature.get("reason") or ""):
        return f"<p class=unsigned>signature: signed by key <code>{key}</code>, not checked – {reason}</p>"
    return f"<p class=rejected>signature: <b>invalid</b>, key <code>{key}</code> – {reason}</p>"


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
        f"{signature_status(details.get('signature'))}"
        f"{_metrics_table(details.get('metrics', {}))}{_ladder_table(details.get('metrics', {}))}"
        f"{_decisions_list(details.get('decisions', []))}"
        f"<div class=plots>{plots}</div></details>"
    )


def pending_section(model: dict[str, Any]) -> str:
    """Candidates staged and waiting for a reviewer, each with a link to its approval in Airflow."""
    items = []
    for version, link in (model.get("approvals") or {}).items():
        where = (
            f'<a target=_top href="../{escape(link, quote=True)}">approve or reject in Airflow</a>'
            if link
            else '<a target=_top href="../required_actions?response_received=false">Airflow\'s required actions</a>'
        )
        items.append(
            f"<li class=pending>candidate <b>{escape(str(version))}</b> awaits sign-off: {where}</li>"
        )
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _challenger(model: dict[str, Any]) -> dict[str, Any] | None:
    """The version that would replace the champion: the pending candidate, else the newest non-champion."""
    details = [d for d in model.get("details", []) if not d.get("champion")]
    pending = [d for d in details if d.get("version") in (model.get("approvals") or {})]
    return (pending or details or [None])[0]


def champion_vs_challenger(model: dict[str, Any]) -> str:
    """Champion and challenger side by side, with deltas and whether they were measured on the same split."""
    from xray_tasks.contracts import ContractError, Metrics
    from xray_tasks.evaluation.compare import compare, same_split

    champion = next((d for d in model.get("details", []) if d.get("champion")), None)
    challenger = _challenger(model)
    if champion is None or challenger is None:
        return ""
    try:
        mine = Metrics.from_dict(challenger.get("metrics", {}), where="challenger metrics.json")
        theirs = Metrics.from_dict(champion.get("metrics", {}), where="champion metrics.json")
    except ContractError as exc:
        return f"<p class=rejected>{escape(str(exc))}</p>"
    scored = {}
    for d in reversed(challenger.get("decisions") or []):
        if (d.get("gate") or {}).get("context"):
            scored = d["gate"]["context"].get("champion") or {}
            break
    rescored = scored.get("version") == champion.get("version") and scored.get("auroc") is not None
    rows = compare(mine, theirs, scored.get("auroc") if rescored else None)
    if same_split(mine, theirs):
        note = "both measured on the same test split"
    elif rescored:
        note = "AUROC: the champion re-scored on the challenger's test split; the other rows: each on its own split"
    else:
        note = "<b>different test splits</b>: compare with care"
    cells = []
    for r in rows:
        delta = r.delta
        good = None if delta is None or not r.higher_is_better else delta >= 0
        cls = "" if good is None else (" class=better" if good else " class=worse")
        cells.append(
            f"<tr><th>{escape(r.name)}</th><td class=num>{_num(r.champion)}</td><td class=num>{_num(r.candidate)}</td>"
            f"<td class=num><span{cls}>{'–' if delta is None else f'{delta:+.3f}'}</span></td></tr>"
        )
    head = (
        f"<tr><th></th><th>champion {escape(str(champion['version']))}</th>"
        f"<th>challenger {escape(str(challenger['version']))}</th><th>delta</th></tr>"
    )
    return (
        f"<h3>Champion against challenger</h3><p class=muted>{note}</p>"
        f"<table class=side-by-side>{head}{''.join(cells)}</table>"
    )


def page(registry: str, models: list[dict[str, Any]]) -> str:
    """The whole page: per model, the versions table, the champion in the field (drift, outcomes) and one section
    per complete version."""
    from xray_monitoring_page import monitoring_section

    body = [f"<h1>Models</h1><p class=muted>registry <code>{escape(registry)}</code></p>"]
    if not models:
        body.append("<p>No model has been published yet: run the training DAG.</p>")
    for model in models:
        champion = model.get("champion")
        body.append(
            f"<h2>{escape(model['name'])}</h2><p>champion: "
            f"<span class=champion>{escape(str(champion)) if champion else 'none yet'}</span></p>"
        )
        body.append(pending_section(model))
        body.append(versions_table(model))
        body.append(champion_vs_challenger(model))
        body.append(monitoring_section(model.get("monitoring") or {}))
        body.extend(version_section(model["name"], d) for d in model.get("details", []))
        body.extend(f"<p class=rejected>{escape(p)}</p>" for p in model.get("problems", []))
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>Models</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>"
    )
