"""The model registry on object storage: immutable versions, a gated champion, verified loading.

Same code for ``s3://bucket/prefix`` and local roots (``xray_tasks.storage``).  Layout and guarantees are in
``layout`` and ``publish``; the functions below are the public API (the CLI, the DAGs and the Airflow "Models"
page use only these).  Nothing here imports TensorFlow until a model is exported, loaded or re-scored.
"""

from xray_tasks.registry.catalog import (
    champion_version,
    list_models,
    list_versions,
    read_artifact,
    read_decisions,
    version_details,
)
from xray_tasks.registry.consumer import PublishedModel, load
from xray_tasks.registry.gate import ChampionScore, GateResult
from xray_tasks.registry.layout import ChampionConflict, IntegrityError, RegistryError
from xray_tasks.registry.promotion import promote, reject
from xray_tasks.registry.publish import publish

__all__ = [
    "ChampionConflict",
    "ChampionScore",
    "GateResult",
    "IntegrityError",
    "PublishedModel",
    "RegistryError",
    "champion_version",
    "list_models",
    "list_versions",
    "load",
    "promote",
    "publish",
    "read_artifact",
    "read_decisions",
    "reject",
    "version_details",
]
