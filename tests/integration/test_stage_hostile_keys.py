"""A crafted run on S3 whose key climbs out with ``../`` is refused before anything is staged for publishing.

It runs on moto as well as SeaweedFS: AWS S3 and moto store such a key verbatim, which is the attack; SeaweedFS's
server refuses such a PUT (400 InvalidRequest, measured with 4.48), so on it the key cannot reach the publisher."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from support.registry import write_run
from support.services import MotoServer, free_port

from xray_tasks import storage
from xray_tasks.registry import publish
from xray_tasks.storage.staging import UnsafeName

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def moto_env():
    server = MotoServer(free_port())
    server.start()
    yield server.env()
    server.stop()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("run") / "run", seed=3, auroc=0.8)


@pytest.mark.parametrize("server", ["seaweedfs", "moto"])
def test_a_run_key_with_dot_dot_is_refused_and_nothing_lands_outside(
    server, request, run_dir, tmp_path, monkeypatch
):
    if server == "moto":
        for key, value in request.getfixturevalue("moto_env").items():
            monkeypatch.setenv(key, value)
    else:
        request.getfixturevalue("s3_server")
    bucket = f"hostile-{uuid.uuid4().hex[:10]}"
    storage.s3_client().create_bucket(Bucket=bucket)
    run_uri = f"s3://{bucket}/runs/r1"
    for path in run_dir.rglob("*"):
        if path.is_file():
            storage.put_file(path, f"{run_uri}/{path.relative_to(run_dir)}")
    outside = Path("/tmp") / f"xray-escape-{uuid.uuid4().hex}"
    hostile_key = "runs/r1/plots/" + "../" * 12 + str(outside).lstrip("/") + "/pwned.png"
    try:
        storage.s3_client().put_object(Bucket=bucket, Key=hostile_key, Body=b"payload")
        stored = "accepted"
    except ClientError as exc:  # SeaweedFS 4.48 answers 400 InvalidRequest for a key with '..' segments
        stored = exc.response["Error"]["Code"]
    keys = [uri.split("/", 3)[3] for uri in storage.list_files(f"s3://{bucket}")]
    verbatim = hostile_key in keys
    registry = f"s3://{bucket}/registry"
    if verbatim:
        with pytest.raises(UnsafeName, match=r"a '\.\.' segment"):
            publish(run_uri, registry)
        assert not storage.list_files(registry)  # refused before any claim or upload
    else:
        assert not [k for k in keys if ".." in k.split("/")]
        publish(run_uri, registry)  # the server refused (or cleaned) the key: the run publishes normally
    assert not outside.exists()
    if server == "moto":
        assert stored == "accepted" and verbatim  # the attack as AWS S3 allows it
    print(f"{server}: PUT of the hostile key: {stored}; stored verbatim: {verbatim}")
