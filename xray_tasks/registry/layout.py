"""Where things live under a registry root, the registry's errors, and its one fault-injection hook.

```
<root>/<model>/versions/<NNNNNN>/CLAIM.json        first object, created only if absent: owns the version id
<root>/<model>/versions/<NNNNNN>/...                 model.keras, serving/<N>/ (TF Serving), metrics.json, ...
<root>/<model>/versions/<NNNNNN>/SIGNATURE.json    Ed25519 signature of the manifest's bytes (when a key is set)
<root>/<model>/versions/<NNNNNN>/MANIFEST.json     written last, after every file was read back and verified
<root>/<model>/versions/<NNNNNN>/decisions/*.json  append-only log: every gate decision about this version
<root>/<model>/champion                             JSON pointer, swapped only with compare-and-swap
<root>/<model>/monitoring/<NNNNNN>/drift/*.json     drift report of each scoring run by that version
<root>/<model>/monitoring/<NNNNNN>/outcomes/*.json  outcomes recorded for studies it scored
```
"""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import UTC, datetime

from xray_tasks import errors, storage
from xray_tasks.errors import BadInput, XrayError
from xray_tasks.settings import MODEL_NAME_PATTERN

VERSIONS = "versions"
CLAIM = "CLAIM.json"
MANIFEST = "MANIFEST.json"
SIGNATURE = "SIGNATURE.json"
DECISIONS = "decisions"
CHAMPION = "champion"
SERVING = "serving"
MONITORING = "monitoring"
MONITOR_KINDS = ("drift", "outcomes")
VERSION_DIGITS = 6
MANIFEST_SCHEMA = 1

_NAME = re.compile(MODEL_NAME_PATTERN)
PAUSE_ENV = "XRAY_REGISTRY_TEST_PAUSE"


class RegistryError(XrayError, RuntimeError):
    """The registry cannot do what was asked; the message says which model/version and why."""


class IntegrityError(errors.IntegrityError, RegistryError):
    """A version is incomplete or one of its files does not match its manifest: it must not be used."""


class ChampionConflict(errors.Conflict, RegistryError):
    """Another publish moved the champion pointer between this publish's gate decision and its swap."""


def check_name(model_name: str) -> str:
    if not isinstance(model_name, str) or not _NAME.fullmatch(model_name):
        raise BadInput(
            f"model name must be 1-64 characters of a-z, 0-9, '.', '_', '-' starting with a letter or digit, "
            f"got {model_name!r}"
        )
    return model_name


def format_version(number: int) -> str:
    if not isinstance(number, int) or number < 1 or number >= 10**VERSION_DIGITS:
        raise BadInput(f"version number must be an int in [1, {10**VERSION_DIGITS - 1}], got {number!r}")
    return f"{number:0{VERSION_DIGITS}d}"


def parse_version(version: str | int) -> str:
    """``7``, ``"7"`` or ``"000007"`` -> ``"000007"``."""
    text = str(version).strip()
    if not text.isdigit():
        raise BadInput(f"version must be a positive integer like 7 or '000007', got {version!r}")
    return format_version(int(text))


def model_uri(root: str, model_name: str) -> str:
    return storage.join(root, check_name(model_name))


def versions_uri(root: str, model_name: str) -> str:
    return storage.join(model_uri(root, model_name), VERSIONS)


def version_uri(root: str, model_name: str, version: str) -> str:
    return storage.join(versions_uri(root, model_name), parse_version(version))


def champion_uri(root: str, model_name: str) -> str:
    return storage.join(model_uri(root, model_name), CHAMPION)


def monitoring_uri(root: str, model_name: str, version: str, kind: str) -> str:
    """Where a version's drift reports or outcomes accumulate (outside the version: it stays immutable)."""
    if kind not in MONITOR_KINDS:
        raise BadInput(f"monitoring kind must be one of {list(MONITOR_KINDS)}, got {kind!r}")
    return storage.join(model_uri(root, model_name), MONITORING, parse_version(version), kind)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return uuid.uuid4().hex


def pause(point: str) -> None:
    """Sleep at a named point when ``XRAY_REGISTRY_TEST_PAUSE`` (e.g. ``after_upload=0.5``) asks for it.

    Only the fault-injection tests set it, to SIGKILL or cut the network in a known phase; unset, it does nothing.
    """
    spec = os.environ.get(PAUSE_ENV, "")
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        if name.strip() == point and seconds:
            time.sleep(float(seconds))
