"""The Models page's monitoring section (plugins/xray_monitoring_page.py): drift time series, outcomes beside the
promised figures, read back from what `score` and `outcomes` keep per version."""

from __future__ import annotations

import re
import sys

from support import REPO

sys.path.insert(0, str(REPO / "plugins"))
import xray_models_page
import xray_monitoring_page


def report(when: str, status: str, psi_mean: float, n: int = 120) -> dict:
    return {
        "created_at": when,
        "status": status,
        "n": n,
        "message": f"{status} <b>in</b> batch",
        "checks": [
            {"statistic": "psi:mean_intensity", "value": psi_mean, "limit": 0.25, "drifted": psi_mean > 0.25},
            {"statistic": "ks:score", "value": 0.1, "limit": 0.25, "drifted": False},
        ],
    }


OUTCOME = {
    "created_at": "2026-12-01T10:00:00Z",
    "n": 100,
    "positives": 40,
    "sensitivity": 0.9,
    "sensitivity_ci": [0.8, 0.97],
    "promised_sensitivity": 0.95,
    "healthy_cleared": 0.4,
    "promised_healthy_cleared": 0.45,
    "below_target": True,
}


def test_section_draws_each_run_and_marks_drift_and_outcomes():
    data = {
        "version": "000002",
        "drift": [
            report("2026-12-01T08:00:00Z", "ok", 0.05),
            report("2026-12-01T09:00:00Z", "drift", 2.5),
            {
                "created_at": "2026-12-01T09:30:00Z",
                "status": "too_small",
                "n": 5,
                "checks": [],
                "message": "small",
            },
        ],
        "outcomes": [OUTCOME],
    }
    html = xray_monitoring_page.monitoring_section(data)
    assert "In the field: version 000002" in html and "Drift over 3 scoring run(s)" in html
    svg = re.search(r"<svg.*?</svg>", html).group(0)
    # two judged runs -> two points on each drawn statistic; the too-small batch is in the table, not the plot
    assert svg.count("<circle") == 4 and "psi:mean_intensity" in svg and "limit" in svg
    assert "too_small" in html and "&lt;b&gt;in&lt;/b&gt;" in html and "<b>in</b>" not in html
    assert "psi:mean_intensity 10.00x" in html  # the drifted run's closest-to-limit statistic
    assert "0.900 [0.800, 0.970]" in html and "BELOW TARGET" in html and "0.950" in html


def test_nothing_recorded_yet_and_no_champion():
    html = xray_monitoring_page.monitoring_section({"version": "000001", "drift": [], "outcomes": []})
    assert "no scoring run judged yet" in html and "no outcomes recorded yet" in html
    assert xray_monitoring_page.monitoring_section({"version": None}) == ""
    assert xray_monitoring_page.monitoring_of("/nowhere", "m", None)["drift"] == []


def test_the_models_page_includes_the_section():
    model = {
        "name": "xray-triage",
        "champion": "000002",
        "versions": [],
        "details": [],
        "problems": [],
        "monitoring": {
            "version": "000002",
            "drift": [report("2026-12-01T08:00:00Z", "ok", 0.05)],
            "outcomes": [],
        },
    }
    html = xray_models_page.page("/reg", [model])
    assert "In the field: version 000002" in html and "<svg" in html
