"""Loading a published model: every checksum verified before Keras sees a byte, Keras in safe mode.

The champion pointer records the sha256 of the manifest it promoted, so loading the champion also detects a
manifest edited together with a file.  Checksums prove integrity, not authorship: whoever may write the bucket
could rewrite a pointer too.  With trusted keys configured (``XRAY_TRUSTED_KEYS``, see ``signing``), a version
is loaded only if its manifest carries a valid Ed25519 signature by one of them: unsigned versions, unknown keys
and bad signatures (a manifest rewritten with its files) are refused, each named.  Without keys a warning says,
once, that signatures are not checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xray_tasks import storage
from xray_tasks.contracts import Metrics
from xray_tasks.registry import inference, integrity, pointers, signing
from xray_tasks.registry.gate import validate_metrics
from xray_tasks.registry.layout import IntegrityError, RegistryError, model_uri, parse_version, version_uri
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)

MODEL_FILE = RunDir.MODEL
METRICS_FILE = RunDir.METRICS
_NEEDED = (MODEL_FILE, METRICS_FILE)


@dataclass(frozen=True)
class PublishedModel:
    """A verified, loaded version: the Keras model, its operating threshold and its metadata."""

    model_name: str
    version: str
    uri: str
    champion: bool
    model: Any
    threshold: float
    metrics: Metrics
    manifest: dict[str, Any]

    @property
    def stored_image_size(self) -> int:
        return self.metrics.model.stored_image_size

    @property
    def input_size(self) -> int:
        return self.metrics.model.input_size

    def probabilities(self, blobs: Sequence[bytes]) -> np.ndarray:
        """P(unhealthy) for image files' bytes, preprocessed as in training."""
        batch = inference.prepare_images(blobs, self.stored_image_size, self.input_size)
        return inference.triage_probabilities(self.model, batch)

    def score(
        self, uris: Sequence[str | tuple[str, str | None]], batch_size: int = 32, observe=None
    ) -> list[dict[str, Any]]:
        """Rows ``image, probability, decision, error`` for image files (local paths or s3:// URIs), one per input
        in input order; ``observe`` as for ``inference.score_uris``."""
        rows = inference.score_uris(
            self.model,
            list(uris),
            stored_size=self.stored_image_size,
            input_size=self.input_size,
            threshold=self.threshold,
            batch_size=batch_size,
            observe=observe,
        )
        for row in rows:
            row.update(model_version=self.version, threshold=self.threshold)
        return rows


def resolve(root: str, model_name: str, version: str | int | None) -> tuple[str, dict[str, Any] | None]:
    """The version to load (the champion when ``version`` is None) and the champion pointer, if any."""
    pointer, _ = pointers.read_champion(root, model_name)
    if version is None:
        if pointer is None:
            raise RegistryError(f"{model_uri(root, model_name)}: no champion yet; publish a model first")
        return parse_version(pointer["version"]), pointer
    return parse_version(version), pointer


def fetch_verified(
    root: str,
    model_name: str,
    version: str,
    dest: Path,
    manifest_sha256: str | None = None,
    trusted_keys: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Verify every file of a version against its manifest and download the ones needed to load it into ``dest``.

    Raises:
        IntegrityError: incomplete version, manifest not the one the pointer promoted, any file differing, or
            (with trusted keys) an unsigned version, an unknown key or a bad signature.
    """
    uri = version_uri(root, model_name, version)
    manifest, raw = integrity.read_manifest(uri)
    signing.require(uri, raw, signing.trusted_keys() if trusted_keys is None else trusted_keys)
    if manifest_sha256 is not None and hashlib.sha256(raw).hexdigest() != manifest_sha256:
        raise IntegrityError(
            f"{uri}: MANIFEST.json is not the manifest the champion pointer promoted; refusing it"
        )
    files = manifest["files"]
    missing = [rel for rel in _NEEDED if rel not in files]
    if missing:
        raise IntegrityError(f"{uri}: the manifest lists no {missing}")
    for rel in _NEEDED:
        try:
            storage.get_file(storage.join(uri, rel), dest / rel)
        except FileNotFoundError:
            raise IntegrityError(f"{uri}: {rel} is missing; the version is incomplete") from None
    integrity.verify_local(dest, {rel: files[rel] for rel in _NEEDED}, uri)
    integrity.verify_remote(uri, {rel: d for rel, d in files.items() if rel not in _NEEDED})
    return manifest


def load(
    root: str,
    model_name: str = "xray-triage",
    version: str | int | None = None,
    trusted_keys: dict[str, Any] | None = None,
) -> PublishedModel:
    """Load the champion (or ``version``) after verifying every file's checksum and, with trusted keys
    (default ``signing.trusted_keys()``), its signature.

    Raises:
        RegistryError: no champion / no such version.
        IntegrityError: a tampered or incomplete version (nothing of it is loaded).
    """
    import keras

    version, pointer = resolve(root, model_name, version)
    is_champion = pointer is not None and pointer["version"] == version
    with tempfile.TemporaryDirectory(prefix="xray-registry-") as tmp:
        dest = Path(tmp)
        manifest = fetch_verified(
            root,
            model_name,
            version,
            dest,
            pointer.get("manifest_sha256") if is_champion else None,
            trusted_keys,
        )
        metrics = validate_metrics(
            json.loads((dest / METRICS_FILE).read_bytes()), f"{version}/{METRICS_FILE}"
        )
        # safe_mode refuses lambda layers and other deserialised code; compile=False: no optimizer state needed.
        model = keras.saving.load_model(dest / MODEL_FILE, compile=False, safe_mode=True)
    logger.info(
        "loaded %s version %s%s (threshold %.4f)",
        model_name,
        version,
        " (champion)" if is_champion else "",
        metrics.operating_point.threshold,
    )
    return PublishedModel(
        model_name=model_name,
        version=version,
        uri=version_uri(root, model_name, version),
        champion=is_champion,
        model=model,
        threshold=metrics.operating_point.threshold,
        metrics=metrics,
        manifest=manifest,
    )
