"""Conditional writes and directory listing in xray_tasks.storage, on a local path and on the loopback S3 server."""

from __future__ import annotations

import threading

import pytest

from xray_tasks import storage
from xray_tasks.storage import conditional


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_bucket") + "/root"


def _race(uri: str, writers: int, **condition) -> list[int]:
    """``writers`` threads released together, each trying one conditional write; returns who succeeded."""
    barrier = threading.Barrier(writers)
    winners: list[int] = []

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            conditional.write_bytes_if(uri, f"writer {i}".encode(), **condition)
            winners.append(i)
        except conditional.PreconditionFailed:
            pass

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return winners


def test_create_only_has_exactly_one_winner(root):
    for round_ in range(10):
        uri = storage.join(root, f"claim-{round_}")
        winners = _race(uri, 6, absent=True)
        assert len(winners) == 1
        assert storage.read_bytes(uri) == f"writer {winners[0]}".encode()


def test_compare_and_swap_refuses_a_stale_tag(root):
    uri = storage.join(root, "pointer")
    first = conditional.write_bytes_if(uri, b"v1", absent=True)
    data, tag = conditional.read_bytes_tagged(uri)
    assert (data, tag) == (b"v1", first)
    second = conditional.write_bytes_if(uri, b"v2", tag=tag)
    assert second != first
    with pytest.raises(conditional.PreconditionFailed, match="no longer has tag"):
        conditional.write_bytes_if(uri, b"v3", tag=first)
    assert storage.read_bytes(uri) == b"v2"


def test_compare_and_swap_race_has_exactly_one_winner(root):
    uri = storage.join(root, "pointer")
    conditional.write_bytes_if(uri, b"start", absent=True)
    _, tag = conditional.read_bytes_tagged(uri)
    winners = _race(uri, 6, tag=tag)
    assert len(winners) == 1
    assert storage.read_bytes(uri) == f"writer {winners[0]}".encode()


def test_a_retried_write_that_already_landed_counts_as_done(root):
    uri = storage.join(root, "claim")
    conditional.write_bytes_if(uri, b"mine, nonce 1", absent=True)
    # The same payload again is what an SDK retry after a lost answer looks like: not a failure.
    conditional.write_bytes_if(uri, b"mine, nonce 1", absent=True)
    with pytest.raises(conditional.PreconditionFailed, match="already exists"):
        conditional.write_bytes_if(uri, b"someone else, nonce 2", absent=True)


def test_swap_of_an_absent_object_fails(root):
    with pytest.raises(conditional.PreconditionFailed):
        conditional.write_bytes_if(storage.join(root, "missing"), b"x", tag="0123")
    assert not storage.exists(storage.join(root, "missing"))


def test_write_bytes_if_needs_exactly_one_condition(root):
    with pytest.raises(ValueError, match="exactly one"):
        conditional.write_bytes_if(storage.join(root, "x"), b"x")
    with pytest.raises(ValueError, match="exactly one"):
        conditional.write_bytes_if(storage.join(root, "x"), b"x", absent=True, tag="t")


def test_read_bytes_tagged_of_a_missing_object(root):
    with pytest.raises(FileNotFoundError):
        conditional.read_bytes_tagged(storage.join(root, "nothing"))


def test_list_dirs_names_sub_directories_only(root):
    storage.write_bytes(storage.join(root, "a", "000001", "f"), b"1")
    storage.write_bytes(storage.join(root, "a", "000002", "g", "h"), b"2")
    storage.write_bytes(storage.join(root, "a", "file"), b"3")
    assert storage.list_dirs(storage.join(root, "a")) == ["000001", "000002"]
    assert storage.list_dirs(storage.join(root, "absent")) == []
