"""xray_tasks.settings: one order for every setting, with fake lookups; the model-name rule shared with the registry."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest

from xray_tasks.registry import layout
from xray_tasks.settings import MODEL_NAME_PATTERN, NAMES, Sources, default, resolve

SOURCES = ("param", "variable", "config", "env")


def _sources(on: dict[str, bool], calls: list[str] | None = None, home: str = "/af") -> tuple[Sources, dict]:
    """Sources where each source that is ``on`` holds ``from-<source>`` for ``registry``; the rest hold nothing."""

    def lookup(source: str, key: str):
        if calls is not None:
            calls.append(source)
        wanted = {"variable": "xray_registry", "config": "registry"}[source]
        return f"from-{source}" if on[source] and key == wanted else None

    environ = {"AIRFLOW_HOME": home, **({"XRAY_REGISTRY": "from-env"} if on["env"] else {})}
    params = {"registry": "from-param"} if on["param"] else {"registry": ""}
    return Sources(
        variable=lambda k: lookup("variable", k), config=lambda k: lookup("config", k), environ=environ
    ), params


@pytest.mark.parametrize(
    "mix",
    list(itertools.product([False, True], repeat=4)),
    ids=lambda mix: "+".join(s for s, on in zip(SOURCES, mix) if on) or "none",
)
def test_the_first_source_that_is_set_wins(mix):
    on = dict(zip(SOURCES, mix))
    sources, params = _sources(on)
    winner = next((s for s in SOURCES if on[s]), None)
    assert resolve("registry", sources, params) == (f"from-{winner}" if winner else "/af/xray/registry")


def test_empty_values_count_as_not_set():
    sources = Sources(
        variable=lambda key: "",
        config=lambda name: None,
        environ={"XRAY_WORKSPACE": "", "AIRFLOW_HOME": "/h"},
    )
    assert resolve("workspace", sources, {"workspace": ""}) == "/h/xray/workspace"
    assert resolve("workspace", sources, {"workspace": None}) == "/h/xray/workspace"


def test_a_set_param_costs_no_lookup():
    calls: list[str] = []
    sources, params = _sources(dict.fromkeys(SOURCES, True), calls)
    assert resolve("registry", sources, params) == "from-param"
    assert calls == ["config"]  # the deployment's allow-list for locations (local config, no round trip)
    assert resolve("registry", sources) == "from-variable"
    assert calls == ["config", "variable"]


def test_values_are_returned_as_text():
    assert resolve("model_name", Sources(variable=lambda key: 7, environ={})) == "7"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("workspace", "/h/xray/workspace"),
        ("registry", "/h/xray/registry"),
        ("images", "/h/xray/incoming"),
        ("worklists", "/h/xray/worklists"),
        ("model_name", "xray-triage"),
        ("profile", "full"),
        ("s3_conn_id", "xray_s3"),
        ("overrides", "{}"),
        ("source", ""),
    ],
)
def test_defaults_sit_under_airflow_home(name, expected):
    assert default(name, {"AIRFLOW_HOME": "/h"}) == expected
    assert resolve(name, Sources(environ={"AIRFLOW_HOME": "/h"})) == expected


def test_without_airflow_home_the_defaults_sit_under_its_own_default(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    assert default("registry", {}) == "/home/someone/airflow/xray/registry"


def test_every_name_reads_its_own_variable_config_and_env():
    for name in NAMES:
        assert resolve(name, Sources(variable={f"xray_{name}": "v"}.get, environ={})) == "v"
        assert resolve(name, Sources(config={name: "c"}.get, environ={})) == "c"
        assert resolve(name, Sources(environ={f"XRAY_{name.upper()}": "e"})) == "e"


@pytest.mark.parametrize("call", [lambda: resolve("registy", Sources()), lambda: default("registy", {})])
def test_an_unknown_name_is_refused_with_the_known_ones(call):
    with pytest.raises(ValueError, match=r"unknown setting 'registy'; known: source, workspace, registry"):
        call()


def test_the_module_imports_no_airflow_and_nothing_heavy():
    code = (
        "import sys, xray_tasks.settings; "
        "print(sorted(m for m in ('airflow', 'numpy', 'pandas', 'tensorflow', 'boto3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


# The DAG param's side of the same rule is checked against the parsed DAG in tests/test_dags.py.
def test_the_registry_uses_the_model_name_pattern_itself():
    assert layout._NAME.pattern is MODEL_NAME_PATTERN


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a" * 64, True),
        ("a" * 65, False),
        ("x", True),
        ("xray-triage.v2_b", True),
        ("", False),
        ("-x", False),
        ("Xray", False),
        ("a/b", False),
        ("a" * 63 + "\n", False),
    ],
)
def test_model_names_of_up_to_64_characters_are_accepted(name, ok):
    assert bool(re.fullmatch(MODEL_NAME_PATTERN, name)) is ok
    if ok:
        assert layout.check_name(name) == name
    else:
        with pytest.raises(ValueError, match="model name must be 1-64 characters"):
            layout.check_name(name)
