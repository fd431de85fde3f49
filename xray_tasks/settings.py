"""Where the deployment's locations and connection come from: one order for the DAGs and the Models page alike.

A setting ``<name>`` is the first non-empty value of

1. the DAG param ``<name>`` (DAG runs only: the Models page has no run),
2. the Airflow Variable ``xray_<name>``,
3. the Airflow config option ``[xray] <name>`` (``AIRFLOW__XRAY__<NAME>`` in the environment),
4. the environment variable ``XRAY_<NAME>``,
5. the default below (locations under ``$AIRFLOW_HOME/xray/``).

This module never imports Airflow: callers pass their own Variable and config lookups in :class:`Sources`
(the DAGs read through the Task SDK, the api-server through the metadata database), so both sides share the
names, the defaults and the order, and only the way a Variable is fetched differs.  It also holds the model-name
rule, which the DAG param and the registry both use; importing it costs nothing at DAG-parse time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
"""A model name: 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit."""

NAMES = (
    "source",
    "workspace",
    "registry",
    "model_name",
    "images",
    "worklists",
    "profile",
    "s3_conn_id",
    "overrides",
    "drift_action",
    "alert",
)
"""Every setting there is; anything else is a typo and refused."""

Lookup = Callable[[str], Any]
"""Returns the value stored under a key, or ``None`` when there is none."""


def _nothing(_key: str) -> None:
    return None


@dataclass(frozen=True)
class Sources:
    """The lookups a caller brings: each returns ``None`` (or ``""``) for a key that is not set."""

    variable: Lookup = _nothing  # Airflow Variable by its key, ``xray_<name>``
    config: Lookup = _nothing  # Airflow config option ``[xray] <name>`` by ``<name>``
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)  # process environment


def _check(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown setting {name!r}; known: {', '.join(NAMES)}")
    return name


def default(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The value ``name`` has when nothing sets it; locations sit under ``$AIRFLOW_HOME/xray``.

    Raises:
        ValueError: ``name`` is not one of :data:`NAMES`.
    """
    environ = os.environ if environ is None else environ
    home = environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return {
        "workspace": os.path.join(home, "xray", "workspace"),
        "registry": os.path.join(home, "xray", "registry"),
        "model_name": "xray-triage",
        "images": os.path.join(home, "xray", "incoming"),
        "worklists": os.path.join(home, "xray", "worklists"),
        "profile": "full",
        "s3_conn_id": "xray_s3",
        "overrides": "{}",
        "drift_action": "fail",  # past a drift limit: fail check_drift, or "asset": emit xray_drift instead
        "alert": "",  # who a failed check tells: "smtp:<address>[,<address>...]"; empty: the task log only
    }.get(_check(name), "")


def _set(value: Any) -> bool:
    return value is not None and value != ""


def resolve(name: str, sources: Sources, params: Mapping[str, Any] | None = None) -> str:
    """The setting ``name``: param, Variable ``xray_<name>``, config ``[xray] <name>``, env ``XRAY_<NAME>``, default.

    Args:
        name: one of :data:`NAMES`.
        sources: the caller's Variable and config lookups and its environment.
        params: the DAG run's params, if any; an empty param means "not given".

    Raises:
        ValueError: ``name`` is not one of :data:`NAMES`.
    """
    _check(name)
    order = (
        ((params or {}).get, name),
        (sources.variable, f"xray_{name}"),
        (sources.config, name),
        (sources.environ.get, f"XRAY_{name.upper()}"),
    )
    # In order and lazily: a param that is set must not cost a Variable lookup (a database or API round trip).
    for lookup, key in order:
        value = lookup(key)
        if _set(value):
            return str(value)
    return default(name, sources.environ)


SCHEDULE_PRESETS = (
    "@once",
    "@continuous",
    "@hourly",
    "@daily",
    "@midnight",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
    "@annually",
)
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")


def parse_schedule(value: str | None, where: str = "[xray] ingest_schedule") -> str | None:
    """A DAG schedule from deployment text: empty or ``none`` -> ``None`` (manual runs only), an Airflow preset
    (``@daily``...) or a 5-field cron expression (``*/15 * * * *``) -> itself.

    Raises:
        ValueError: anything else, naming ``where`` and the value.
    """
    text = (value or "").strip()
    if text.lower() in ("", "none", "null"):
        return None
    if text.startswith("@"):
        if text not in SCHEDULE_PRESETS:
            raise ValueError(
                f"{where}: unknown preset {text!r}; allowed: {', '.join(SCHEDULE_PRESETS)} or none"
            )
        return text
    fields = text.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(
            f"{where}: {text!r} is neither none, a preset ({', '.join(SCHEDULE_PRESETS[:4])}...) nor a 5-field "
            "cron expression such as '0 2 * * *'"
        )
    return " ".join(fields)
