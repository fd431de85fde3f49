import io
import tarfile

import pytest

from xray_tasks.data.archives import ArchiveError, iter_members
from xray_tasks.data.synth import write_archive


def _read(path, limit=1 << 20):
    with open(path, "rb") as fh:
        return list(iter_members(fh, path.name, limit))


def test_stream_yields_files_and_problems_in_order(tmp_path):
    path = tmp_path / "images_001.tar.gz"
    write_archive(
        path,
        [
            ("images/b.png", b"B"),
            ("images/a.png", b"A" * 10),
            ("images/notes.txt", b"x"),
            ("../up.png", b"u"),
            ("/root.png", b"r"),
            ("images/big.png", b"0" * 2000),
        ],
        specials=[
            ("images/s.png", tarfile.SYMTYPE, "/etc/passwd"),
            ("images/h.png", tarfile.LNKTYPE, "images/a.png"),
            ("images/d.png", tarfile.CHRTYPE, ""),
            ("images/f.png", tarfile.FIFOTYPE, ""),
        ],
    )
    members = _read(path, limit=1000)
    got = [(m.path, m.data, m.problem[0] if m.problem else None) for m in members]
    assert got == [
        ("images/b.png", b"B", None),
        ("images/a.png", b"A" * 10, None),
        ("images/notes.txt", None, "non_image"),
        ("../up.png", None, "unsafe_path"),
        ("/root.png", None, "unsafe_path"),
        ("images/big.png", None, "member_too_large"),
        ("images/s.png", None, "link_member"),
        ("images/h.png", None, "link_member"),
        ("images/d.png", None, "device_member"),
        ("images/f.png", None, "device_member"),
    ]
    assert members[0].name == "b.png"


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_truncated_archive_raises_with_the_archive_name(tmp_path, keep):
    path = tmp_path / "images_002.tar.gz"
    write_archive(path, [(f"images/{i:03d}.png", bytes(range(256)) * 200) for i in range(20)])
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(
        ArchiveError, match=r"images_002.tar.gz: archive is truncated or corrupt after \d+ member"
    ):
        _read(path)


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "images_003.tar.gz"
    path.write_bytes(b"definitely not gzip" * 10)
    with pytest.raises(ArchiveError, match="images_003.tar.gz"):
        _read(path)


def test_nothing_is_extracted(tmp_path):
    path = tmp_path / "images_004.tar.gz"
    write_archive(path, [("../../escape.png", b"x"), ("images/ok.png", b"y")])
    before = sorted(p.name for p in tmp_path.parent.rglob("*"))
    _read(path)
    assert sorted(p.name for p in tmp_path.parent.rglob("*")) == before
    assert not (tmp_path.parent.parent / "escape.png").exists()


def test_plain_file_objects_work(tmp_path):
    path = tmp_path / "images_005.tar.gz"
    write_archive(path, [("images/x.png", b"data")])
    members = list(iter_members(io.BytesIO(path.read_bytes()), "mem", 100))
    assert [(m.path, m.data) for m in members] == [("images/x.png", b"data")]
