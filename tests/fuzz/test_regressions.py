"""Every crash the fuzzers found, as a named test with its input (and in the corpus under fuzz/corpus/).

The registry's readers are owned by the registry side and used read-only here: their crashes are pinned as
strict xfails (they fail once fixed, so the marker is removed with the fix and the entry in
``fuzz/targets.py REGISTRY_KNOWN`` with it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xray_tasks.errors import IntegrityError
from xray_tasks.registry import integrity, pointers
from xray_tasks.registry.layout import MANIFEST, RegistryError, champion_uri

REGISTRY_BUG = "registry reader lets a non-UTF-8 or deeply nested JSON file escape as a Python error"


def _manifest(tmp_path: Path, data: bytes):
    (tmp_path / MANIFEST).write_bytes(data)
    return integrity.read_manifest(str(tmp_path))


def _pointer(tmp_path: Path, data: bytes):
    uri = Path(champion_uri(str(tmp_path), "xray"))
    uri.parent.mkdir(parents=True, exist_ok=True)
    uri.write_bytes(data)
    return pointers.read_champion(str(tmp_path), "xray")


@pytest.mark.xfail(strict=True, raises=UnicodeDecodeError, reason=REGISTRY_BUG)
def test_fuzz_pointer_non_utf8_champion_is_a_registry_error(tmp_path):
    # found by the `pointer` target in its first seconds: crash input {""errsion"vu\x84", ...
    with pytest.raises(RegistryError):
        _pointer(tmp_path, b'{""errsion"vu\x84", "\x01\x00p{n": ')


@pytest.mark.xfail(strict=True, raises=RecursionError, reason=REGISTRY_BUG)
def test_fuzz_pointer_deeply_nested_json_is_a_registry_error(tmp_path):
    # the same class found reading the target after the first crash (json's C decoder recurses per bracket)
    with pytest.raises(RegistryError):
        _pointer(tmp_path, b"[" * 5000)


@pytest.mark.xfail(strict=True, raises=UnicodeDecodeError, reason=REGISTRY_BUG)
def test_fuzz_manifest_non_utf8_is_an_integrity_error(tmp_path):
    # the pointer crash's input class, confirmed on the manifest reader (same json.loads on raw bytes)
    with pytest.raises(IntegrityError):
        _manifest(tmp_path, b'{"schema": 1, "files": {"\x84": {}}}')


@pytest.mark.xfail(strict=True, raises=RecursionError, reason=REGISTRY_BUG)
def test_fuzz_manifest_deeply_nested_json_is_an_integrity_error(tmp_path):
    with pytest.raises(IntegrityError):
        _manifest(tmp_path, b"[" * 5000)
