import io

import numpy as np
import pytest

from xray_tasks.data.tfrecord import RecordError, encode_example, frame_record, iter_records


def test_example_parses_with_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    payload = encode_example(
        {
            "image": ("bytes", [b"\x00\x01\xff" * 100]),
            "ids": ("int64", [0, 1, -5, 2**40]),
            "score": ("float", [0.5, -1.25]),
            "empty": ("int64", []),
        }
    )
    path = tmp_path / "one.tfrecord"
    path.write_bytes(frame_record(payload) + frame_record(payload))
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "ids": tf.io.FixedLenFeature([4], tf.int64),
        "score": tf.io.FixedLenFeature([2], tf.float32),
        "empty": tf.io.VarLenFeature(tf.int64),
    }
    records = list(tf.data.TFRecordDataset(str(path)))  # TF verifies the record checksums
    assert len(records) == 2
    parsed = tf.io.parse_single_example(records[0], spec)
    assert parsed["image"].numpy() == b"\x00\x01\xff" * 100
    assert parsed["ids"].numpy().tolist() == [0, 1, -5, 2**40]
    np.testing.assert_allclose(parsed["score"].numpy(), [0.5, -1.25])
    assert parsed["empty"].values.numpy().size == 0


def test_serialization_is_deterministic_and_key_order_free():
    a = encode_example({"b": ("int64", [1]), "a": ("bytes", [b"x"])})
    b = encode_example({"a": ("bytes", [b"x"]), "b": ("int64", [1])})
    assert a == b


def test_iter_records_round_trip_and_detects_damage():
    blob = frame_record(b"first") + frame_record(b"second record")
    assert list(iter_records(io.BytesIO(blob))) == [b"first", b"second record"]
    damaged = bytearray(blob)
    damaged[14] ^= 0xFF  # inside the first payload
    with pytest.raises(RecordError, match="payload checksum"):
        list(iter_records(io.BytesIO(bytes(damaged))))
    with pytest.raises(RecordError, match="truncated"):
        list(iter_records(io.BytesIO(blob[:-3])))


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="feature kind"):
        encode_example({"x": ("string", [b"a"])})
