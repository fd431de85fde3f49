"""TFRecord files and ``tf.train.Example`` messages, written without TensorFlow.

Ingest workers stay light (importing TensorFlow alone costs ~600 MB of RSS and seconds of start-up), so the
writer encodes the two formats itself.  Both are small and stable:

* a record is ``uint64 length | uint32 masked crc32c(length) | data | uint32 masked crc32c(data)``
  (little-endian), as TensorFlow's ``RecordWriter`` frames it;
* an Example is ``Features{map<string, Feature>}``, each Feature one of ``BytesList``, ``FloatList``,
  ``Int64List``, in protobuf wire format.  Keys are emitted in sorted order, so the same values always give the
  same bytes (TensorFlow's own serializer does not promise that for maps).

The tests parse what this writes with ``tf.io.parse_single_example`` and ``tf.data.TFRecordDataset``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import IO

import google_crc32c

from xray_tasks.errors import BadInput, IntegrityError

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    return _mask(google_crc32c.value(data))


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_parts(parts: Sequence[bytes]) -> list[bytes]:
    """The pieces of one TFRecord record around a payload given as pieces (no copy of the payload)."""
    crc, length = 0, 0
    for part in parts:
        crc = google_crc32c.extend(crc, part)
        length += len(part)
    header = struct.pack("<Q", length)
    return [header, struct.pack("<I", masked_crc32c(header)), *parts, struct.pack("<I", _mask(crc))]


def frame_record(data: bytes) -> bytes:
    """One TFRecord record around ``data`` (header, payload and footer)."""
    return b"".join(frame_parts([data]))


class RecordError(IntegrityError, ValueError):
    """A TFRecord file is truncated or fails its checksums."""


def iter_records(fh: IO[bytes], verify: bool = True) -> Iterator[bytes]:
    """Yield the payloads of the records in ``fh``; raises :class:`RecordError` on damage."""
    while True:
        header = fh.read(12)
        if not header:
            return
        if len(header) < 12:
            raise RecordError("truncated record header")
        (length,) = struct.unpack("<Q", header[:8])
        if verify and struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
            raise RecordError("length checksum mismatch")
        data = fh.read(length)
        footer = fh.read(4)
        if len(data) < length or len(footer) < 4:
            raise RecordError("truncated record payload")
        if verify and struct.unpack("<I", footer)[0] != masked_crc32c(data):
            raise RecordError("payload checksum mismatch")
        yield data


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 -> two's complement, ten bytes
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _header(number: int, length: int) -> bytes:
    """Tag and length of a length-delimited field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(length)


def _field(number: int, payload: bytes) -> bytes:
    return _header(number, len(payload)) + payload


def _feature_parts(kind: str, values: Sequence) -> list[bytes]:
    if kind == "bytes":
        inner: list[bytes] = []
        for value in values:
            inner += [_header(1, len(value)), value]
        return [_header(1, sum(map(len, inner))), *inner]
    if kind == "int64":
        packed = b"".join(_varint(int(v)) for v in values)
        return [_field(3, _field(1, packed) if values else b"")]
    if kind == "float":
        packed = struct.pack(f"<{len(values)}f", *values)
        return [_field(2, _field(1, packed) if values else b"")]
    raise BadInput(f"feature kind must be 'bytes', 'int64' or 'float', got {kind!r}")


def example_parts(features: Mapping[str, tuple[str, Sequence]]) -> list[bytes]:
    """A ``tf.train.Example`` as a list of pieces whose concatenation is the message.

    Large byte values (the image) are referenced, not copied: the writer hands the pieces straight to the file.
    """
    entries: list[bytes] = []
    for name in sorted(features):
        kind, values = features[name]
        key = _field(1, name.encode("utf-8"))
        value = _feature_parts(kind, values)
        value_len = sum(map(len, value))
        entry_len = len(key) + len(_header(2, value_len)) + value_len
        entries += [_header(1, entry_len), key, _header(2, value_len), *value]
    return [_header(1, sum(map(len, entries))), *entries]


def encode_example(features: Mapping[str, tuple[str, Sequence]]) -> bytes:
    """Serialize ``{name: (kind, values)}`` as a ``tf.train.Example``; ``kind`` is bytes/int64/float."""
    return b"".join(example_parts(features))
