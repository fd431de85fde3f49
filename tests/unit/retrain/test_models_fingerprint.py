"""The Models page says why a version exists: its fingerprint, short, and what changed since the one before."""

from __future__ import annotations

import sys

from support import REPO

sys.path.insert(0, str(REPO / "plugins"))
import xray_models_page


def fp(digest: str, **parts) -> dict:
    base = {
        "schema": 1,
        "digest": digest * 64,
        "manifest_sha256": "m" * 64,
        "shards_sha256": "s" * 64,
        "shards": 2,
        "config_sha256": "c" * 64,
        "code": "0.1.0+abc",
        "weights": "random:seed=0",
        "retrain": None,
    }
    return {**base, **parts}


def row(version: str, fingerprint: dict | None, complete: bool = True) -> dict:
    return {
        "version": version,
        "complete": complete,
        "champion": False,
        "summary": {},
        "decision": "approved" if complete else None,
        "reasons": [],
        "fingerprint": fingerprint,
    }


def cell(html: str, version: str) -> str:
    return html.split(f"<tr><td>{version}</td>", 1)[1].split("</tr>", 1)[0]


def test_each_version_shows_its_short_fingerprint_and_what_changed():
    versions = [
        row("000001", None),
        row("000002", fp("a")),
        row("000003", fp("b", shards_sha256="t" * 64)),
        row("000004", None, complete=False),
        row("000005", fp("c", shards_sha256="t" * 64, config_sha256="d" * 64, code="0.1.0+def")),
        row(
            "000006",
            fp(
                "c",
                shards_sha256="t" * 64,
                config_sha256="d" * 64,
                code="0.1.0+def",
                retrain={"by": "ana", "reason": "driver <b>update</b>", "version": "000005"},
            ),
        ),
    ]
    html = xray_models_page.versions_table({"versions": versions})
    assert "<th>fingerprint</th>" in html
    assert "–" in cell(html, "000001")
    assert f'<code title="{"a" * 64}">{"a" * 12}</code>' in cell(html, "000002")
    assert "previous unknown" in cell(html, "000002")
    assert "data changed" in cell(html, "000003")
    assert "config, code changed" in cell(html, "000005")  # the incomplete 000004 is not compared with
    assert "nothing changed; retrained: driver &lt;b&gt;update&lt;/b&gt;" in cell(html, "000006")
    first = xray_models_page.versions_table({"versions": [row("000001", fp("a"))]})
    assert "first version" in cell(first, "000001")
