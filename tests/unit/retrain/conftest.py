import pytest


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def where(request, tmp_path) -> str:
    """A root for source and workspace: a local folder, and a fresh bucket on the suite's S3 server."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_bucket")
