"""Every crash the fuzzers found, as a named test with its input (and in the corpus under fuzz/corpus/).

The registry's readers let a non-UTF-8 or deeply nested JSON file escape as a Python error (UnicodeDecodeError,
RecursionError) until they caught both; a numeric champion version was accepted until it had to be a string.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xray_tasks.errors import IntegrityError
from xray_tasks.registry import integrity, pointers
from xray_tasks.registry.layout import MANIFEST, RegistryError, champion_uri


def _manifest(tmp_path: Path, data: bytes):
    (tmp_path / MANIFEST).write_bytes(data)
    return integrity.read_manifest(str(tmp_path))


def _pointer(tmp_path: Path, data: bytes):
    uri = Path(champion_uri(str(tmp_path), "xray"))
    uri.parent.mkdir(parents=True, exist_ok=True)
    uri.write_bytes(data)
    return pointers.read_champion(str(tmp_path), "xray")


def test_fuzz_pointer_non_utf8_champion_is_a_registry_error(tmp_path):
    # found by the `pointer` target in its first seconds: crash input {""errsion"vu\x84", ...
    with pytest.raises(RegistryError):
        _pointer(tmp_path, b'{""errsion"vu\x84", "\x01\x00p{n": ')


def test_fuzz_pointer_deeply_nested_json_is_a_registry_error(tmp_path):
    # the same class found reading the target after the first crash (json's C decoder recurses per bracket)
    with pytest.raises(RegistryError):
        _pointer(tmp_path, b"[" * 5000)


def test_fuzz_manifest_non_utf8_is_an_integrity_error(tmp_path):
    # the pointer crash's input class, confirmed on the manifest reader (same json.loads on raw bytes)
    with pytest.raises(IntegrityError):
        _manifest(tmp_path, b'{"schema": 1, "files": {"\x84": {}}}')


def test_fuzz_manifest_deeply_nested_json_is_an_integrity_error(tmp_path):
    with pytest.raises(IntegrityError):
        _manifest(tmp_path, b"[" * 5000)


def test_fuzz_pointer_numeric_version_is_a_registry_error(tmp_path):
    # seen while fuzzing: {"version": 1} passed as a pointer although versions are zero-padded strings
    with pytest.raises(RegistryError, match="no 'version' string"):
        _pointer(tmp_path, b'{"version": 1}')
