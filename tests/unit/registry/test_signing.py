"""Signed versions, on a local root and on the S3 API server: publish signs the manifest, the pointer names the
manifest's sha256 and the key id, and a consumer with trusted keys refuses unsigned, unknown-key and forged
versions, naming each; without keys it says once that signatures are not checked."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from support.registry import write_run

from xray_tasks import storage
from xray_tasks.registry import (
    IntegrityError,
    integrity,
    load,
    promote,
    publish,
    signing,
    version_details,
)
from xray_tasks.registry.layout import champion_uri, version_uri

NAME = "xray-triage"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs, A and B, as ``{name: generate() result}``."""
    root = tmp_path_factory.mktemp("keys")
    return {name: signing.generate(root / name) for name in ("a", "b")}


@pytest.fixture(autouse=True)
def no_key_env(monkeypatch):
    for var in (signing.SIGNING_KEY_ENV, signing.SIGNING_KEY_FILE_ENV, signing.TRUSTED_KEYS_ENV):
        monkeypatch.delenv(var, raising=False)


def publish_signed(monkeypatch, run, registry, key: dict | None, **kwargs):
    """Publish as a worker holding ``key`` (None: no key), then drop the key from the environment."""
    if key:
        monkeypatch.setenv(signing.SIGNING_KEY_FILE_ENV, key["private_key"])
    summary = publish(str(run), registry, **kwargs)
    monkeypatch.delenv(signing.SIGNING_KEY_FILE_ENV, raising=False)
    return summary


def trust(*pairs: dict) -> dict:
    return signing.parse_trusted(",".join(p["public_key"] for p in pairs))


def test_keys_generate_writes_a_private_key_only_its_owner_reads(keys):
    private = Path(keys["a"]["private_key"])
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert keys["a"]["key_id"] != keys["b"]["key_id"] and len(keys["a"]["key_id"]) == 16
    assert list(trust(keys["a"])) == [keys["a"]["key_id"]]
    with pytest.raises(ValueError, match="refusing to overwrite"):
        signing.generate(private.parent)


def test_publish_signs_and_the_pointer_names_manifest_and_key(registry, tmp_path, keys, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    summary = publish_signed(monkeypatch, write_run(tmp_path / "a"), registry, keys["a"])
    assert summary.key_id == keys["a"]["key_id"]
    vuri = version_uri(registry, NAME, summary.version)
    manifest_raw = storage.read_bytes(storage.join(vuri, "MANIFEST.json"))
    pointer = json.loads(storage.read_bytes(champion_uri(registry, NAME)))
    assert pointer["manifest_sha256"] == integrity.digest_bytes(manifest_raw)["sha256"]
    assert pointer["key_id"] == keys["a"]["key_id"]
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, keys["a"]["public_key"])
    assert load(registry).version == summary.version
    status = version_details(registry, NAME)["signature"]
    assert status == {"signed": True, "key_id": keys["a"]["key_id"], "verified": True, "reason": None}
    pem = Path(keys["a"]["private_key"]).read_text()
    assert "PRIVATE KEY" not in caplog.text and pem.splitlines()[1] not in caplog.text


def test_a_consumer_with_keys_refuses_unsigned_unknown_key_and_forged_versions(
    registry, tmp_path, keys, monkeypatch
):
    publish_signed(monkeypatch, write_run(tmp_path / "a", seed=1, auroc=0.8), registry, keys["a"])  # 000001
    publish_signed(
        monkeypatch, write_run(tmp_path / "b", seed=2, auroc=0.82), registry, None
    )  # 000002 unsigned
    publish_signed(monkeypatch, write_run(tmp_path / "c", seed=3, auroc=0.84), registry, keys["b"])  # 000003
    only_a = trust(keys["a"])
    assert load(registry, version=1, trusted_keys=only_a).version == "000001"
    with pytest.raises(IntegrityError, match=r"unsigned \(no SIGNATURE.json\)"):
        load(registry, version=2, trusted_keys=only_a)
    with pytest.raises(IntegrityError, match=f"signed by an unknown key {keys['b']['key_id']}"):
        load(registry, version=3, trusted_keys=only_a)
    # Rotation: trusting both keys accepts both signers.
    assert load(registry, version=3, trusted_keys=trust(keys["a"], keys["b"])).version == "000003"

    # A forger with bucket write access rewrites a file, the manifest listing it and the champion pointer.
    vuri = version_uri(registry, NAME, "000001")
    card = storage.join(vuri, "model_card.md")
    storage.write_bytes(card, b"# forged card\n")
    manifest = json.loads(storage.read_bytes(storage.join(vuri, "MANIFEST.json")))
    manifest["files"]["model_card.md"] = integrity.digest_bytes(b"# forged card\n")
    raw = integrity.encode(manifest)
    storage.write_bytes(storage.join(vuri, "MANIFEST.json"), raw)
    pointer = json.loads(storage.read_bytes(champion_uri(registry, NAME)))
    storage.write_bytes(
        champion_uri(registry, NAME),
        integrity.encode(
            {**pointer, "version": "000001", "manifest_sha256": integrity.digest_bytes(raw)["sha256"]}
        ),
    )
    load(registry, trusted_keys={})  # checksums alone cannot see it: everything matches the forged manifest
    with pytest.raises(IntegrityError, match="bad signature"):
        load(registry, trusted_keys=only_a)
    assert version_details(registry, NAME, 1)["signature"]["verified"] is False


def test_promote_under_a_key_policy_refuses_an_unsigned_version(registry, tmp_path, keys, monkeypatch):
    publish_signed(monkeypatch, write_run(tmp_path / "a", seed=1, auroc=0.8), registry, keys["a"])
    staged = publish_signed(
        monkeypatch, write_run(tmp_path / "b", seed=2, auroc=0.85), registry, None, stage=True
    )
    monkeypatch.setenv(signing.TRUSTED_KEYS_ENV, keys["a"]["public_key"])
    with pytest.raises(IntegrityError, match="unsigned"):
        promote(registry, NAME, staged.version, reason="ok", actor="dr")
    assert json.loads(storage.read_bytes(champion_uri(registry, NAME)))["version"] == "000001"


def test_without_keys_the_consumer_warns_once_and_a_pem_from_the_environment_signs(
    registry, tmp_path, keys, monkeypatch, caplog
):
    monkeypatch.setattr(signing, "_warned_unsigned", False)
    publish(str(write_run(tmp_path / "a")), registry)
    with caplog.at_level(logging.WARNING, logger="xray_tasks.registry.signing"):
        load(registry)
        load(registry)
    assert caplog.text.count("no trusted signing keys configured") == 1

    # The PEM text itself (what a DAG copies from an Airflow connection), with literal "\n" escapes.
    pem = Path(keys["b"]["private_key"]).read_text().replace("\n", "\\n")
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, pem)
    summary = publish(str(write_run(tmp_path / "b", seed=2, auroc=0.85)), registry)
    assert summary.key_id == keys["b"]["key_id"]
    monkeypatch.setenv(
        signing.SIGNING_KEY_ENV, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"
    )
    with pytest.raises(ValueError, match="XRAY_SIGNING_KEY: not an unencrypted PEM private key") as info:
        publish(str(write_run(tmp_path / "c", seed=3, auroc=0.86)), registry)
    assert "not a key" not in str(info.value)
