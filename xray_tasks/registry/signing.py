"""Ed25519 signatures over version manifests: who published a version, checkable without trusting the bucket.

A publisher holding a private key writes ``<version>/SIGNATURE.json`` (the key's id, the manifest's sha256 and the
signature over the manifest's exact bytes) *before* ``MANIFEST.json``, so a complete version is a signed one.  The
manifest lists every file's sha256, so a valid signature covers every byte of the version.  Consumers are given
trusted public keys (several at once, for rotation); a key's id is the first 16 hex digits of the sha256 of its
raw 32-byte public key.

Where keys come from (key material is never logged, and messages name keys by id or by file only):

- signing: ``XRAY_SIGNING_KEY_FILE`` (a PEM file, e.g. a mounted secret) or ``XRAY_SIGNING_KEY`` (the PEM text,
  e.g. filled from an Airflow connection by the DAG);
- verifying: ``XRAY_TRUSTED_KEYS``, comma- or semicolon-separated, each a path to a PEM public key or the PEM text.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from xray_tasks import storage
from xray_tasks.errors import BadInput
from xray_tasks.registry.layout import SIGNATURE, IntegrityError

logger = logging.getLogger(__name__)

SIGNING_KEY_FILE_ENV = "XRAY_SIGNING_KEY_FILE"
SIGNING_KEY_ENV = "XRAY_SIGNING_KEY"
TRUSTED_KEYS_ENV = "XRAY_TRUSTED_KEYS"
ALGORITHM = "ed25519"
SIGNATURE_SCHEMA = 1
PRIVATE_NAME = "signing.key"
PUBLIC_NAME = "signing.pub"
_PEM = "-----BEGIN"
_warned_unsigned = False


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    key_id: str

    def __repr__(self) -> str:  # never show key material, even in a traceback's locals
        return f"SigningKey(key_id={self.key_id!r})"

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


def generate(out_dir: str | os.PathLike) -> dict[str, str]:
    """Write a new private key (``signing.key``, mode 0600) and its public key (``signing.pub``) into ``out_dir``.

    Raises:
        BadInput: a key file already exists there (keys are never overwritten).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise BadInput(f"{path} exists; refusing to overwrite a key (choose another --out)")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(private_path, 0o600)
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    kid = key_id(private.public_key())
    logger.info("wrote signing key %s: %s (private, 0600) and %s (public)", kid, private_path, public_path)
    return {"key_id": kid, "private_key": str(private_path), "public_key": str(public_path)}


def _private_from_pem(pem: bytes, origin: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"{origin}: not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"{origin}: not an Ed25519 private key")
    return SigningKey(key, key_id(key.public_key()))


def signing_key_from_env(environ: dict[str, str] | None = None) -> SigningKey | None:
    """The publisher's key from ``XRAY_SIGNING_KEY_FILE`` or ``XRAY_SIGNING_KEY``; ``None`` when neither is set."""
    env = os.environ if environ is None else environ
    path = env.get(SIGNING_KEY_FILE_ENV, "").strip()
    if path:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise BadInput(
                f"{SIGNING_KEY_FILE_ENV}={path}: cannot read the key file ({exc.strerror})"
            ) from None
        return _private_from_pem(pem, f"{SIGNING_KEY_FILE_ENV} ({path})")
    text = env.get(SIGNING_KEY_ENV, "")
    if text.strip():
        return _private_from_pem(text.replace("\\n", "\n").encode(), SIGNING_KEY_ENV)
    return None


def _public_from_pem(pem: bytes, origin: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"{origin}: not a PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"{origin}: not an Ed25519 public key")
    return key


def parse_trusted(spec: str) -> dict[str, Ed25519PublicKey]:
    """Public keys by id from a comma/semicolon-separated list of PEM files or PEM texts."""
    keys: dict[str, Ed25519PublicKey] = {}
    text = spec.replace("\\n", "\n")
    # PEM texts hold no commas or semicolons; split on them, then read each item as PEM text or as a path.
    for number, item in enumerate(i.strip() for i in re.split(r"[;,]", text)):
        if not item:
            continue
        if _PEM in item:
            key = _public_from_pem(item.encode(), f"{TRUSTED_KEYS_ENV} item {number + 1}")
        else:
            try:
                pem = Path(item).read_bytes()
            except OSError as exc:
                raise BadInput(f"trusted key {item}: cannot read it ({exc.strerror})") from None
            key = _public_from_pem(pem, f"trusted key {item}")
        keys[key_id(key)] = key
    return keys


def trusted_keys(spec: str | None = None) -> dict[str, Ed25519PublicKey]:
    """Trusted keys from ``spec`` or ``XRAY_TRUSTED_KEYS``; with a signing key configured, its public key too."""
    keys = parse_trusted(os.environ.get(TRUSTED_KEYS_ENV, "") if spec is None else spec)
    own = signing_key_from_env()
    if own is not None:
        keys.setdefault(own.key_id, own.public)
    return keys


def sign(key: SigningKey, manifest_raw: bytes) -> dict[str, Any]:
    """The ``SIGNATURE.json`` document for a manifest's exact bytes."""
    return {
        "schema": SIGNATURE_SCHEMA,
        "algorithm": ALGORITHM,
        "key_id": key.key_id,
        "manifest_sha256": hashlib.sha256(manifest_raw).hexdigest(),
        "signature": base64.b64encode(key.private.sign(manifest_raw)).decode("ascii"),
    }


def read_signature(version_uri: str) -> dict[str, Any] | None:
    """A version's parsed ``SIGNATURE.json``, or ``None`` when it has none (an unsigned version)."""
    uri = storage.join(version_uri, SIGNATURE)
    try:
        data = storage.read_json(uri)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise IntegrityError(f"{uri}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("signature"), str):
        raise IntegrityError(f"{uri}: not a signature document")
    return data


def check(
    version_uri: str, manifest_raw: bytes, keys: dict[str, Ed25519PublicKey], signature: Any = ...
) -> dict[str, Any]:
    """The signature status of a version: ``{signed, key_id, verified, reason}`` (never raises on a bad one)."""
    sig = read_signature(version_uri) if signature is ... else signature
    if sig is None:
        return {"signed": False, "key_id": None, "verified": False, "reason": "unsigned (no SIGNATURE.json)"}
    kid = sig.get("key_id")
    status = {"signed": True, "key_id": kid, "verified": False, "reason": None}
    if sig.get("algorithm") != ALGORITHM:
        return {**status, "reason": f"unsupported signature algorithm {sig.get('algorithm')!r}"}
    if kid not in keys:
        reason = "no trusted keys configured" if not keys else f"signed by an unknown key {kid}"
        return {**status, "reason": reason}
    if sig.get("manifest_sha256") != hashlib.sha256(manifest_raw).hexdigest():
        return {**status, "reason": f"bad signature: it names another manifest than this one (key {kid})"}
    try:
        keys[kid].verify(base64.b64decode(sig["signature"], validate=True), manifest_raw)
    except (InvalidSignature, ValueError):
        return {**status, "reason": f"bad signature: the manifest does not verify with key {kid}"}
    return {**status, "verified": True}


def require(version_uri: str, manifest_raw: bytes, keys: dict[str, Ed25519PublicKey]) -> str | None:
    """Refuse a version not validly signed by a trusted key when keys are configured; returns the key id.

    Without keys, says once per process that signatures are not checked, and returns the version's key id if any.

    Raises:
        IntegrityError: unsigned, signed by an unknown key, or a bad signature (the message says which).
    """
    global _warned_unsigned
    if not keys:
        if not _warned_unsigned:
            logger.warning(
                "no trusted signing keys configured (%s): versions are not checked for a publisher's "
                "signature, only for checksums",
                TRUSTED_KEYS_ENV,
            )
            _warned_unsigned = True
        sig = read_signature(version_uri)
        return sig.get("key_id") if sig else None
    status = check(version_uri, manifest_raw, keys)
    if not status["verified"]:
        raise IntegrityError(f"{version_uri}: refusing it: {status['reason']} (trusted: {sorted(keys)})")
    return status["key_id"]
