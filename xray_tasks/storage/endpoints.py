"""Where the S3 API lives: the one place that reads, normalises and hands on an endpoint override.

boto3 reads ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; tensorflow-io reads ``S3_ENDPOINT`` and
``S3_VERIFY_SSL``.  The storage backend, tensorflow-io's environment and the environment built from a connection's
fields (``xray_tasks.runner.connection_env``) all go through :func:`normalize_endpoint` and :func:`endpoint_from`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT")
"""Where an endpoint override is looked for, first match wins."""


def normalize_endpoint(endpoint: str) -> str:
    """``host:port`` -> ``http://host:port``; a URL with a scheme is returned unchanged.

    tensorflow-io tries TLS when the scheme is missing, and boto3 refuses a bare host, so every endpoint gets one.
    """
    endpoint = str(endpoint)
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def endpoint_from(env: Mapping[str, str] | None = None) -> str | None:
    """The normalised endpoint override in ``env`` (default: this process's environment), or ``None``."""
    env = os.environ if env is None else env
    for name in ENDPOINT_VARIABLES:
        if env.get(name):
            return normalize_endpoint(env[name])
    return None


def tfio_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` with tensorflow-io's ``S3_ENDPOINT``/``S3_VERIFY_SSL`` derived from the endpoint override.

    Values already set are kept; instance-metadata lookups are turned off (they stall for seconds off EC2).
    """
    env = dict(os.environ if env is None else env)
    endpoint = endpoint_from(env)
    if endpoint:
        env.setdefault("S3_ENDPOINT", endpoint)
        env.setdefault("S3_VERIFY_SSL", "0" if endpoint.startswith("http://") else "1")
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    return env
