"""Where the deployment's locations and connection come from: one order for the DAGs and the Models page alike.

A setting ``<name>`` is the first non-empty value of

1. the DAG param ``<name>`` (DAG runs only: the Models page has no run),
2. the Airflow Variable ``xray_<name>``,
3. the Airflow config option ``[xray] <name>`` (``AIRFLOW__XRAY__<NAME>`` in the environment),
4. the environment variable ``XRAY_<NAME>``,
5. the default below (locations under ``$AIRFLOW_HOME/xray/``).

The run conf is untrusted: a param for the connection id or a location must be inside the deployment's
allow-list (settings ``allowed_conn_ids`` and ``allowed_locations``, which no param can set), else
:class:`NotAllowed` names the allowed values.  The defaults keep a fresh install working: connection ``xray_s3``
only, any location (``*``); a deployment narrows them, e.g. ``AIRFLOW__XRAY__ALLOWED_LOCATIONS=s3://xray/``.

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

from xray_tasks.errors import BadInput

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
    "feature_groups",
    "allowed_conn_ids",
    "allowed_locations",
)
"""Every setting there is; anything else is a typo and refused."""

LOCATIONS = ("source", "workspace", "registry", "images", "worklists")
"""Settings that name a place in storage: a run conf may only point inside ``allowed_locations``."""
ALLOW_LISTS = {"s3_conn_id": "allowed_conn_ids", **dict.fromkeys(LOCATIONS, "allowed_locations")}
"""Which allow-list guards a param; the allow-lists themselves come from the deployment only, never a param."""


class NotAllowed(BadInput):
    """A run conf names a connection or a location outside the deployment's allow-list."""


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
        "feature_groups": environ.get("XRAY_GPU_SLOTS") or "1",  # one group of shards per gpu pool slot
        "allowed_conn_ids": "xray_s3",
        "allowed_locations": "*",
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
    if params and name not in ALLOW_LISTS and name.startswith("allowed_") and _set(params.get(name)):
        raise NotAllowed(f"{name} is set by the deployment only, not by a run conf")
    if params and name in ALLOW_LISTS and _set(params.get(name)):
        check_allowed(name, str(params[name]), sources)
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
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
"""A location with a scheme (``s3://...``); anything else is a local path."""
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


def parse_parallelism(value: str | None, where: str = "[xray] ingest_parallelism") -> int | None:
    """How many archives one ingest run shards at once: empty or ``workers`` -> ``None`` (no cap of the DAG's own:
    the workers' slots, ``[celery] worker_concurrency`` times the workers, are the limit), else a positive integer.

    Raises:
        ValueError: anything else, naming ``where`` and the value.
    """
    text = (value or "").strip().lower()
    if text in ("", "workers"):
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{where}: {value!r} is neither 'workers' nor a positive number of archives at once")
    return int(text)


def allow_list(name: str, sources: Sources) -> tuple[str, ...]:
    """The deployment's ``allowed_conn_ids`` or ``allowed_locations``, comma- or space-separated: from the Airflow
    config ``[xray]`` section or ``XRAY_ALLOWED_...``, else the default; never a param or a Variable."""
    # Airflow config or the environment only: no Variable (editable from the UI, and a round trip per lookup).
    raw = sources.config(name)
    if not _set(raw):
        raw = sources.environ.get(f"XRAY_{name.upper()}")
    if not _set(raw):
        raw = default(name, sources.environ)
    return tuple(item for item in str(raw).replace(",", " ").split() if item)


def _inside(value: str, prefix: str) -> bool:
    if prefix == "*":
        return True
    value, prefix = value.rstrip("/"), prefix.rstrip("/")
    return value == prefix or value.startswith(prefix + "/")


def check_allowed(name: str, value: str, sources: Sources) -> str:
    """``value`` for the setting ``name`` if the deployment allows it in a run conf.

    Connection ids must be listed exactly.  A location must equal or lie under one of the allowed prefixes (whole
    path segments: ``s3://xray`` allows ``s3://xray/a``, not ``s3://xray-other``); with a restricted list it may hold
    no ``..`` segment, and local paths are compared after normalisation.

    Raises:
        NotAllowed: naming the setting, the value and the allowed values.
    """
    list_name = ALLOW_LISTS[_check(name)]
    allowed = allow_list(list_name, sources)
    if name == "s3_conn_id":
        ok = value in allowed
    elif "*" in allowed:
        ok = True
    else:
        segments = value.split("://", 1)[-1].split("/")
        local = _URI_SCHEME.match(value) is None
        candidate = os.path.normpath(value) if local else value
        ok = ".." not in segments and any(_inside(candidate, prefix) for prefix in allowed)
    if not ok:
        shown = ", ".join(repr(a) for a in allowed) or "(none)"
        raise NotAllowed(
            f"run conf {name}={value!r} is not allowed by this deployment; allowed {list_name}: {shown} "
            f"(set by Airflow config [xray] {list_name}, AIRFLOW__XRAY__{list_name.upper()}, or "
            f"XRAY_{list_name.upper()})"
        )
    return value


def check_run_conf(params: Mapping[str, Any] | None, sources: Sources) -> None:
    """Every guarded param of a run conf against the deployment's allow-lists, before any work.

    Raises:
        NotAllowed: the first param outside its allow-list, or a param that tries to set an allow-list.
    """
    given = [name for name in NAMES if _set((params or {}).get(name))]
    for name in sorted(given, key=lambda n: n not in ALLOW_LISTS.values()):  # allow-list params first
        resolve(name, sources, params)
