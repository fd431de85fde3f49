"""xray_tasks.storage: the same operations on a local path and on the loopback S3 server, the error mapping, the
backend chosen once per scheme, and endpoint normalisation in one place."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xray_tasks import runner, storage
from xray_tasks.errors import StorageError, XrayError
from xray_tasks.storage import endpoints, s3
from xray_tasks.storage.base import PreconditionFailed

REPO = Path(storage.__file__).resolve().parents[2]


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_bucket") + "/root"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


# -- the same behaviour on both backends ------------------------------------------------------------------------------
def test_bytes_text_and_json_round_trip(root):
    storage.write_bytes(storage.join(root, "a", "b.bin"), b"\x00\x01")
    storage.write_text(storage.join(root, "t.txt"), "h\u00e9")
    storage.write_json(storage.join(root, "j.json"), {"b": 1, "a": [1, 2]})
    assert storage.read_bytes(storage.join(root, "a", "b.bin")) == b"\x00\x01"
    assert storage.read_text(storage.join(root, "t.txt")) == "h\u00e9"
    assert storage.read_json(storage.join(root, "j.json")) == {"a": [1, 2], "b": 1}
    assert storage.read_text(storage.join(root, "j.json")).endswith("}\n")
    assert storage.exists(storage.join(root, "t.txt"))
    storage.write_bytes(storage.join(root, "t.txt"), b"replaced")
    assert storage.read_bytes(storage.join(root, "t.txt")) == b"replaced"


def test_a_missing_object_is_file_not_found_everywhere(root, tmp_path):
    missing = storage.join(root, "nothing", "here.bin")
    assert not storage.exists(missing)
    for read in (
        storage.read_bytes,
        storage.read_text,
        storage.read_json,
        lambda u: storage.get_file(u, tmp_path / "dest"),
        lambda u: storage.cached_copy(u, tmp_path / "cache"),
        lambda u: storage.open_read(u).__enter__(),
        lambda u: storage.local_copy(u).__enter__(),
        storage.backend_for(missing).read_tagged,
    ):
        with pytest.raises(FileNotFoundError):
            read(missing)
    assert not (tmp_path / "dest").exists()
    storage.delete(missing)  # absent is fine
    storage.delete_tree(storage.join(root, "nothing"))
    assert storage.list_files(storage.join(root, "nothing")) == []
    assert storage.list_level(storage.join(root, "nothing")) == ([], [])


def test_listings(root):
    for rel in ("a/2.bin", "a/1.bin", "a/sub/x", "a/sub/deeper/y", "b/z"):
        storage.write_bytes(storage.join(root, *rel.split("/")), rel.encode())
    assert storage.list_files(storage.join(root, "a")) == [
        storage.join(root, "a", *rel.split("/")) for rel in ("1.bin", "2.bin", "sub/deeper/y", "sub/x")
    ]
    assert storage.listdir(storage.join(root, "a")) == ["1.bin", "2.bin"]
    assert storage.list_dirs(storage.join(root, "a")) == ["sub"]
    assert storage.list_level(root) == ([], ["a", "b"])
    storage.delete_tree(storage.join(root, "a"))
    assert storage.list_files(root) == [storage.join(root, "b", "z")]


def test_files_go_up_and_come_down(root, tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload" * 1000)
    uri = storage.join(root, "up", "file.bin")
    storage.put_file(source, uri)
    assert source.exists()  # a copy, not a move
    storage.get_file(uri, tmp_path / "down" / "file.bin")
    assert (tmp_path / "down" / "file.bin").read_bytes() == source.read_bytes()
    with storage.open_read(uri) as fh:
        assert fh.read(7) == b"payload"
    with storage.local_copy(uri) as path:
        assert path.read_bytes() == source.read_bytes()
    assert [p.name for p in (tmp_path / "down").iterdir()] == ["file.bin"]  # no temporary left behind


def test_staged_files_are_published_under_their_final_name(root):
    base = storage.join(root, "shards", ".staging")
    staging = storage.staging_dir(base, "images_001")
    (staging / "part").write_bytes(b"shard")
    final = storage.join(root, "shards", "train", "shard-00000-of-00001")
    storage.publish_file(staging / "part", final)
    assert storage.read_bytes(final) == b"shard"
    again = storage.staging_dir(base, "images_001")
    assert again != staging and again.is_dir() and not list(again.iterdir())
    if not storage.is_s3(root):
        # Locally the staging folder sits in the workspace (a rename, no copy) and a stale one is swept.
        assert not (staging / "part").exists()
        assert again.parent == storage.local_path(base) and not staging.exists()


def test_parquet_schema_is_read_through_a_seekable_file(root, tmp_path):
    table = pa.table({"x": [1, 2, 3]}).replace_schema_metadata({b"provenance": b'{"a": 1}'})
    pq.write_table(table, tmp_path / "f.parquet")
    uri = storage.join(root, "features", "f.parquet")
    storage.put_file(tmp_path / "f.parquet", uri)
    schema = storage.read_parquet_schema(uri)
    assert schema.names == ["x"] and schema.metadata[b"provenance"] == b'{"a": 1}'
    with storage.open_seekable(uri) as fh:
        fh.seek(-4, 2)
        assert fh.read() == b"PAR1"


def test_cached_copy_is_fetched_once(root, tmp_path):
    uri = storage.join(root, "weights", "w.h5")
    storage.write_bytes(uri, b"weights")
    first = storage.cached_copy(uri, tmp_path / "cache")
    assert first.read_bytes() == b"weights"
    if storage.is_s3(root):
        storage.delete(uri)
        assert storage.cached_copy(uri, tmp_path / "cache") == first  # served from the cache
    else:
        assert first == storage.local_path(uri)  # a local file is used in place


def test_join_and_basename():
    assert storage.join("s3://b/", "a/", "/c") == "s3://b/a/c"
    assert storage.join("/x", "a", "b") == str(Path("/x", "a", "b"))
    assert storage.join("file:///x", "a") == str(Path("/x", "a"))
    assert storage.basename("s3://b/a/c/") == "c"
    assert storage.split_s3("s3://b/a/c") == ("b", "a/c")
    with pytest.raises(ValueError, match="not an s3:// URI"):
        storage.split_s3("/local/path")


# -- local guarantees -----------------------------------------------------------------------------------------------
def test_local_writes_leave_no_temporary_and_listings_skip_one(tmp_path):
    target = tmp_path / "d" / "f.json"
    storage.write_json(str(target), {"a": 1})
    storage.write_json(str(target), {"a": 2})
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]
    (target.parent / ".g.tmp-123-abcd").write_bytes(b"half written")  # what a crashed writer leaves
    assert storage.list_files(str(tmp_path)) == [str(target)]
    assert storage.listdir(str(target.parent)) == ["f.json"]


# -- the backend is chosen once per scheme ----------------------------------------------------------------------------
def test_one_backend_per_scheme():
    assert storage.backend_for("s3://a/x") is storage.backend_for("s3://b/y")
    assert (
        storage.backend_for("/tmp/x") is storage.backend_for("file:///tmp/y") is storage.backend_for("rel/p")
    )
    assert (storage.backend_for("/tmp/x").name, storage.backend_for("s3://a").name) == ("local", "s3")
    assert storage.backend_for("s3://a", env={"AWS_REGION": "eu-west-1"}) is not storage.backend_for("s3://a")
    with pytest.raises(ValueError, match=r"'gs://b/k'.*expected a local path, file:// or s3://"):
        storage.exists("gs://b/k")
    with pytest.raises(ValueError, match="allowed: 'local', 's3'"):
        storage.create_backend("gcs")


@pytest.mark.s3
def test_a_backend_with_its_own_environment_ignores_ours(s3_server, s3_bucket, monkeypatch):
    uri = f"{s3_bucket}/k"
    storage.write_bytes(uri, b"v")
    fields = runner.connection_env("testing", "testing", {"endpoint_url": s3_server.endpoint})
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("XRAY_S3_MAX_ATTEMPTS", "1")
    backend = storage.backend_for(uri, env=fields)
    assert backend.read_text(uri) == "v"
    assert "testing" not in repr(backend) + repr(backend.settings())
    with pytest.raises(StorageError):
        storage.read_bytes(uri)  # the process environment now points at nothing


# -- error mapping --------------------------------------------------------------------------------------------------
def test_a_refused_connection_is_a_storage_error_naming_the_uri(monkeypatch, tmp_path):
    secret = "sekrit-do-not-print-0123"
    for name in endpoints.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("XRAY_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("XRAY_S3_CONNECT_TIMEOUT", "2")
    (tmp_path / "f").write_bytes(b"x")
    uri = "s3://bucket/some/key.json"
    calls = [
        storage.exists,
        storage.read_bytes,
        lambda u: storage.write_bytes(u, b"x"),
        storage.list_files,
        lambda u: storage.put_file(tmp_path / "f", u),
        storage.delete,
    ]
    for call in calls:
        with pytest.raises(StorageError) as info:
            call(uri)
        message = str(info.value)
        assert uri in message and "Could not connect to the endpoint URL" in message, message
        assert secret not in message
    assert isinstance(info.value, XrayError) and isinstance(info.value, RuntimeError)
    assert storage.StorageError is StorageError


@pytest.mark.s3
def test_a_missing_bucket_is_a_storage_error(s3_server):
    with pytest.raises(StorageError, match=r"LIST s3://no-such-bucket-9f3/p: .*NoSuchBucket"):
        storage.list_files("s3://no-such-bucket-9f3/p")


class _FakeClient:
    """Answers put_object with the given exceptions in turn, then with an ETag."""

    def __init__(self, *errors: Exception) -> None:
        self.errors, self.calls = list(errors), 0

    def put_object(self, **kwargs):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"ETag": '"new"'}


def _client_error(code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "test"}}, "PutObject")


def test_a_409_on_a_conditional_put_is_retried(monkeypatch):
    monkeypatch.setattr(s3.time, "sleep", lambda _: None)
    backend = s3.S3Backend()
    fake = _FakeClient(*[_client_error("ConditionalRequestConflict")] * s3.CONFLICT_RETRIES)
    monkeypatch.setattr(backend, "client", lambda: fake)
    assert backend.write_if("s3://b/k", b"x", absent=True, tag=None) == '"new"'
    assert fake.calls == s3.CONFLICT_RETRIES + 1
    fake = _FakeClient(*[_client_error("ConditionalRequestConflict")] * (s3.CONFLICT_RETRIES + 1))
    monkeypatch.setattr(backend, "client", lambda: fake)
    with pytest.raises(
        StorageError, match=r"conditional PUT s3://b/k: ClientError.*ConditionalRequestConflict"
    ):
        backend.write_if("s3://b/k", b"x", absent=True, tag=None)


@pytest.mark.parametrize(
    "code, absent, message",
    [
        ("PreconditionFailed", True, "already exists"),
        ("412", False, "no longer has tag t1"),
        ("NoSuchKey", False, "no longer has tag t1"),
    ],
)
def test_conditional_put_refusals_are_precondition_failed(monkeypatch, code, absent, message):
    backend = s3.S3Backend()
    monkeypatch.setattr(backend, "client", lambda: _FakeClient(_client_error(code)))
    with pytest.raises(PreconditionFailed, match=message):
        backend.write_if("s3://b/k", b"x", absent=absent, tag=None if absent else "t1")


@pytest.mark.s3
def test_large_uploads_go_up_in_parts(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "MULTIPART_THRESHOLD", 5 * 2**20)  # S3's smallest part size
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x07" * (6 * 2**20))
    storage.put_file(big, f"{s3_bucket}/big.bin")
    small = tmp_path / "small.bin"
    small.write_bytes(b"x")
    storage.put_file(small, f"{s3_bucket}/small.bin")
    head = storage.s3_client().head_object
    assert head(Bucket=s3_bucket[5:], Key="big.bin")["ETag"].strip('"').endswith("-2")
    assert "-" not in head(Bucket=s3_bucket[5:], Key="small.bin")["ETag"]
    assert storage.read_bytes(f"{s3_bucket}/big.bin") == big.read_bytes()


# -- endpoints: one place -------------------------------------------------------------------------------------------
def test_endpoint_normalisation():
    assert endpoints.normalize_endpoint("minio:9000") == "http://minio:9000"
    assert endpoints.normalize_endpoint("https://s3.example") == "https://s3.example"
    env = {"S3_ENDPOINT": "c:3", "AWS_ENDPOINT_URL": "b:2", "AWS_ENDPOINT_URL_S3": "https://a:1"}
    assert endpoints.endpoint_from(env) == "https://a:1"
    assert endpoints.endpoint_from({"S3_ENDPOINT": "c:3"}) == "http://c:3"
    assert endpoints.endpoint_from({}) is None
    assert s3.S3Settings.from_env({"AWS_ENDPOINT_URL": "b:2"}).endpoint == "http://b:2"


def test_tfio_environment_derives_from_the_boto3_variables():
    derived = endpoints.tfio_environment({"AWS_ENDPOINT_URL": "minio:9000"})
    assert derived["S3_ENDPOINT"] == "http://minio:9000" and derived["S3_VERIFY_SSL"] == "0"
    assert derived["AWS_EC2_METADATA_DISABLED"] == "true"
    derived = endpoints.tfio_environment({"AWS_ENDPOINT_URL": "https://s3.example", "S3_VERIFY_SSL": "0"})
    assert derived["S3_ENDPOINT"] == "https://s3.example" and derived["S3_VERIFY_SSL"] == "0"  # ours are kept
    assert "S3_ENDPOINT" not in endpoints.tfio_environment({})
    assert storage.tfio_environment is endpoints.tfio_environment
    fields = runner.connection_env(None, None, {"endpoint_url": "minio:9000"})
    assert (fields["AWS_ENDPOINT_URL"], fields["S3_ENDPOINT"]) == ("http://minio:9000", "http://minio:9000")


def test_endpoints_are_normalised_in_one_module_only():
    pattern = re.compile(r'f"http://\{|"://" (not )?in ')
    found = sorted(
        path.relative_to(REPO).as_posix()
        for path in (REPO / "xray_tasks").rglob("*.py")
        if pattern.search(path.read_text())
    )
    assert found == ["xray_tasks/storage/endpoints.py"]


def test_preparing_local_uris_for_tensorflow_imports_nothing(monkeypatch):
    import sys

    before = set(sys.modules)
    storage.prepare_tensorflow(["/tmp/a", "file:///tmp/b"])
    assert not {m for m in set(sys.modules) - before if m.startswith(("tensorflow", "boto"))}
