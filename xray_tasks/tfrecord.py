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

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord record around ``data`` (header, payload and footer)."""
    length = struct.pack("<Q", len(data))
    return b"".join(
        (length, struct.pack("<I", masked_crc32c(length)), data, struct.pack("<I", masked_crc32c(data)))
    )


class RecordError(ValueError):
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


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _feature(kind: str, values: Sequence) -> bytes:
    if kind == "bytes":
        inner = b"".join(_field(1, bytes(v)) for v in values)
        return _field(1, inner)
    if kind == "int64":
        packed = b"".join(_varint(int(v)) for v in values)
        return _field(3, _field(1, packed) if values else b"")
    if kind == "float":
        packed = struct.pack(f"<{len(values)}f", *values)
        return _field(2, _field(1, packed) if values else b"")
    raise ValueError(f"feature kind must be 'bytes', 'int64' or 'float', got {kind!r}")


def encode_example(features: Mapping[str, tuple[str, Sequence]]) -> bytes:
    """Serialize ``{name: (kind, values)}`` as a ``tf.train.Example``; ``kind`` is bytes/int64/float."""
    entries = []
    for name in sorted(features):
        kind, values = features[name]
        entry = _field(1, name.encode("utf-8")) + _field(2, _feature(kind, values))
        entries.append(_field(1, entry))
    return _field(1, b"".join(entries))
