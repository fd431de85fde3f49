"""The Models page's monitoring section: per champion, drift over its scoring runs and the outcomes achieved.

``monitoring_of`` reads a version's drift reports and outcomes (``xray_tasks.registry.monitoring.history``);
``monitoring_section`` renders them as pure HTML: a small inline SVG time series of the drift statistics against
their limit, the last runs in a table, and each recorded outcome beside what the version's evaluation promised.
No extra route: the plot is part of the page.
"""

from __future__ import annotations

from html import escape
from typing import Any

SERIES = (
    ("psi:score", "#1f77b4"),
    ("psi:mean_intensity", "#d62728"),
    ("psi:std_intensity", "#ff7f0e"),
    ("ks:score", "#2ca02c"),
    ("flagged_share", "#9467bd"),
)
"""The statistics the time series draws, each as a share of its limit (1 = at the limit)."""
ROWS = 8


def monitoring_of(root: str, model_name: str, version: str | None) -> dict[str, Any]:
    """``{"version", "drift": [report dicts], "outcomes": [outcome dicts]}`` of one version (empty lists when
    nothing was recorded)."""
    if not version:
        return {"version": None, "drift": [], "outcomes": []}
    from xray_tasks.registry import monitoring

    return {
        "version": version,
        "drift": [d.to_dict() for d in monitoring.history(root, model_name, version, "drift")],
        "outcomes": [d.to_dict() for d in monitoring.history(root, model_name, version, "outcomes")],
    }


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ratios(report: dict[str, Any]) -> dict[str, float]:
    return {
        c["statistic"]: c["value"] / c["limit"]
        for c in report.get("checks", [])
        if c.get("limit") and c.get("value") is not None
    }


def drift_plot(reports: list[dict[str, Any]], width: int = 560, height: int = 180) -> str:
    """An inline SVG: each statistic / its limit over the scoring runs (log-like scale capped at 4x)."""
    judged = [r for r in reports if r.get("checks")]
    if not judged:
        return "<p class=muted>no scoring run judged yet</p>"
    left, right, top, bottom = 40, 150, 10, 24
    inner_w, inner_h = width - left - right, height - top - bottom
    cap = 4.0

    def x(i: int) -> float:
        return left + (inner_w * i / max(1, len(judged) - 1) if len(judged) > 1 else inner_w / 2)

    def y(ratio: float) -> float:
        return top + inner_h * (1 - min(ratio, cap) / cap)

    parts = [
        (
            f'<svg class=drift width="{width}" height="{height}" role="img" '
            f'aria-label="drift statistics over {len(judged)} scoring runs">'
        ),
        f'<rect x="{left}" y="{top}" width="{inner_w}" height="{inner_h}" fill="#fafafa" stroke="#ccc"/>',
        (
            f'<line x1="{left}" x2="{left + inner_w}" y1="{y(1):.1f}" y2="{y(1):.1f}" stroke="#000" '
            'stroke-dasharray="4 3"/>'
        ),
        f'<text x="{left - 4}" y="{y(1) + 4:.1f}" font-size="10" text-anchor="end">limit</text>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">&ge;{cap:g}x</text>',
    ]
    for i, report in enumerate(judged):
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 8}" font-size="9" text-anchor="middle">'
            f"{escape(str(report.get('created_at', ''))[5:16])}</text>"
        )
    for k, (name, color) in enumerate(SERIES):
        points = [(x(i), y(_ratios(r)[name])) for i, r in enumerate(judged) if name in _ratios(r)]
        if not points:
            continue
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>' for px, py in points)
        ly = top + 12 + 14 * k
        parts.append(
            f'<line x1="{left + inner_w + 10}" x2="{left + inner_w + 24}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{color}" stroke-width="2"/><text x="{left + inner_w + 28}" y="{ly}" font-size="10">'
            f"{escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _drift_table(reports: list[dict[str, Any]]) -> str:
    rows = []
    for report in reversed(reports[-ROWS:]):
        worst = max(_ratios(report).items(), key=lambda kv: kv[1], default=None)
        status = str(report.get("status", ""))
        rows.append(
            f"<tr class={'rejected' if status == 'drift' else 'ok'}><td>{escape(str(report.get('created_at')))}</td>"
            f"<td>{escape(status)}</td><td>{report.get('n')}</td>"
            f"<td>{escape(worst[0]) + ' ' + _num(worst[1], 2) + 'x' if worst else '–'}</td>"
            f"<td>{escape(str(report.get('message', '')))}</td></tr>"
        )
    return (
        "<table><tr><th>scored at</th><th>status</th><th>images</th><th>closest to its limit</th>"
        f"<th>message</th></tr>{''.join(rows)}</table>"
    )


def _outcomes_table(outcomes: list[dict[str, Any]]) -> str:
    if not outcomes:
        return "<p class=muted>no outcomes recorded yet (<code>xray-tasks outcomes</code>)</p>"
    rows = []
    for o in reversed(outcomes[-ROWS:]):
        ci = o.get("sensitivity_ci")
        interval = f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else ""
        rows.append(
            f"<tr class={'rejected' if o.get('below_target') else 'ok'}>"
            f"<td>{escape(str(o.get('created_at')))}</td><td>{o.get('n')} ({o.get('positives')} unhealthy)</td>"
            f"<td>{_num(o.get('sensitivity'))}{interval}</td><td>{_num(o.get('promised_sensitivity'))}</td>"
            f"<td>{_num(o.get('healthy_cleared'))}</td><td>{_num(o.get('promised_healthy_cleared'))}</td>"
            f"<td>{'BELOW TARGET' if o.get('below_target') else 'within target'}</td></tr>"
        )
    return (
        "<table><tr><th>recorded at</th><th>studies</th><th>sensitivity achieved [95%]</th><th>promised</th>"
        f"<th>healthy cleared</th><th>promised</th><th>verdict</th></tr>{''.join(rows)}</table>"
    )


def monitoring_section(data: dict[str, Any]) -> str:
    """The champion in the field: drift time series and table, outcomes beside the promised figures."""
    version = data.get("version")
    if not version:
        return ""
    reports = data.get("drift", [])
    return (
        f"<section class=monitoring><h3>In the field: version {escape(str(version))}</h3>"
        f"<h4>Drift over {len(reports)} scoring run(s) (each statistic as a share of its limit)</h4>"
        f"{drift_plot(reports)}{_drift_table(reports) if reports else ''}"
        f"<h4>Outcomes: achieved vs promised</h4>{_outcomes_table(data.get('outcomes', []))}</section>"
    )
