"""The S3 identities docker-compose.yml's seaweedfs-config writes, served by a real SeaweedFS of the image's version:
the pipeline key reads and writes its bucket only, the reader key reads registry/ only and writes nothing."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from support.deploy import identities_for, resolved
from support.services import SeaweedServer, services_required

pytestmark = pytest.mark.s3
PIPELINE_SECRET, READER_SECRET = "p" * 32, "r" * 32


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    doc = identities_for(
        resolved(),
        tmp_path_factory.mktemp("compose"),
        XRAY_S3_SECRET_ACCESS_KEY=PIPELINE_SECRET,
        XRAY_S3_READER_SECRET_ACCESS_KEY=READER_SECRET,
    )
    # The readiness probe and the bucket set-up (seaweedfs-init does it with `weed shell`) need an admin here.
    admin = {
        "name": "test-admin",
        "credentials": [{"accessKey": SeaweedServer.ACCESS_KEY, "secretKey": SeaweedServer.SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List"],
    }
    srv = SeaweedServer(
        tmp_path_factory.mktemp("seaweedfs-compose") / "data", {"identities": [*doc["identities"], admin]}
    )
    try:
        srv.start()
    except Exception as exc:  # noqa: BLE001
        if services_required():
            pytest.fail(f"SeaweedFS did not start: {exc}", pytrace=False)
        pytest.skip(f"SeaweedFS did not start: {exc}")
    admin_client = srv.client()
    for bucket in ("xray", "other"):
        admin_client.create_bucket(Bucket=bucket)
    admin_client.put_object(Bucket="xray", Key="registry/m/champion", Body=b"{}")
    admin_client.put_object(Bucket="xray", Key="workspace/shards/s.tfrecord", Body=b"data")
    admin_client.put_object(Bucket="other", Key="k", Body=b"x")
    yield srv
    srv.stop()


def code(call) -> str:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return "ok"


def test_the_pipeline_key_reads_and_writes_its_bucket_only(server):
    s3 = server.client("xray-pipeline", PIPELINE_SECRET, max_attempts=1)
    assert code(lambda: s3.put_object(Bucket="xray", Key="workspace/new", Body=b"1")) == "ok"
    assert s3.get_object(Bucket="xray", Key="registry/m/champion")["Body"].read() == b"{}"
    assert code(lambda: s3.list_objects_v2(Bucket="xray", Prefix="workspace/")) == "ok"
    assert code(lambda: s3.put_object(Bucket="xray", Key="registry/m/x", Body=b"1", IfNoneMatch="*")) == "ok"
    assert code(lambda: s3.get_object(Bucket="other", Key="k")) == "AccessDenied"
    assert code(lambda: s3.put_object(Bucket="other", Key="k2", Body=b"1")) == "AccessDenied"
    assert code(lambda: s3.create_bucket(Bucket="made-by-pipeline")) == "AccessDenied"
    bad = server.client("xray-pipeline", "w" * 32, max_attempts=1)
    assert code(lambda: bad.get_object(Bucket="xray", Key="registry/m/champion")) == "SignatureDoesNotMatch"


def test_the_reader_key_reads_the_registry_and_writes_nothing(server):
    s3 = server.client("xray-reader", READER_SECRET, max_attempts=1)
    assert s3.get_object(Bucket="xray", Key="registry/m/champion")["Body"].read() == b"{}"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="xray", Prefix="registry/")["Contents"]]
    assert "registry/m/champion" in keys
    assert code(lambda: s3.get_object(Bucket="xray", Key="workspace/shards/s.tfrecord")) == "AccessDenied"
    for call in (
        lambda: s3.put_object(Bucket="xray", Key="registry/m/champion", Body=b"evil"),
        lambda: s3.put_object(Bucket="xray", Key="registry/m/new", Body=b"1", IfNoneMatch="*"),
        lambda: s3.delete_object(Bucket="xray", Key="registry/m/champion"),
        lambda: s3.get_object(Bucket="other", Key="k"),
        lambda: s3.create_bucket(Bucket="made-by-reader"),
    ):
        assert code(call) == "AccessDenied"
    assert server.client().get_object(Bucket="xray", Key="registry/m/champion")["Body"].read() == b"{}"
    # What SeaweedFS cannot narrow (docs/cluster.md): List is per bucket, so key names outside registry/ show.
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="xray", Prefix="workspace/").get("Contents", [])]
    print(f"reader lists workspace/ key names: {listed}")
