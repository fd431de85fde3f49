import bz2
import gzip
import io
import lzma
import random
import tarfile

import pytest
from support.hostile import long_name_archive, pax_archive, plain_tar

from xray_tasks.data.archives import NAME_LIMIT, ArchiveError, iter_members, shorten
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


# -- hostile headers, other compressions, empty archives (issue 11) ---------------------------------------------


def _members(data, name="images_009.tar.gz", **kw):
    return list(iter_members(io.BytesIO(data), name, 1 << 20, **kw))


def test_an_oversized_gnu_long_name_is_quarantined_unread_and_the_rest_goes_on(tmp_path):
    path = long_name_archive(tmp_path / "images_009.tar.gz", 1 << 20, [("images/ok.png", b"fine")])
    with open(path, "rb") as fh:
        members = list(iter_members(fh, path.name, 1 << 20, max_header_bytes=64 * 1024))
    assert [(m.path, m.data, m.problem and m.problem[0]) for m in members] == [
        ("images/x.png", None, "oversized_header"),
        ("images/ok.png", b"fine", None),
    ]
    assert members[0].problem[1] == (
        "GNU long-name header of 1048577 bytes (limit 65536); member skipped unread"
    )


def test_an_oversized_pax_header_is_quarantined_and_the_rest_goes_on(tmp_path):
    path = pax_archive(tmp_path / "images_009.tar.gz", 200_000, [("images/ok.png", b"fine")])
    members = _members(path.read_bytes())
    assert [m.problem[0] if m.problem else m.path for m in members] == ["oversized_header", "images/ok.png"]
    assert members[0].problem[1].startswith("pax extended header of ")


def test_long_names_under_the_limit_are_read_and_shortened_wherever_returned(tmp_path):
    long = "images/" + "n" * 5000 + ".png"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name in (long, "../" + "u" * 5000):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    first, second = _members(out.getvalue())
    assert first.data == b"abc" and len(first.path) <= NAME_LIMIT and "[5011 chars]" in first.path
    assert second.problem[0] == "unsafe_path" and len(second.problem[1]) < NAME_LIMIT + 100
    assert shorten("short") == "short"


@pytest.mark.parametrize(
    "compress, what", [(lambda b: b, "uncompressed tar"), (bz2.compress, "bzip2"), (lzma.compress, "xz")]
)
def test_an_archive_not_gzip_compressed_is_read_for_what_it_is(compress, what, caplog):
    data = compress(plain_tar([("images/a.png", b"x" * 10)]))
    with caplog.at_level("WARNING"):
        members = _members(data)
    assert [(m.path, m.data) for m in members] == [("images/a.png", b"x" * 10)]
    assert f"the name promises gzip but the data is {what}" in caplog.text


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "archive is empty (0 bytes)"),
        (gzip.compress(b""), "archive is empty (the gzip stream holds no tar data)"),
        (gzip.compress(plain_tar([])), "archive is empty (no file members; read as gzip)"),
        (plain_tar([]), "archive is empty (no file members; read as uncompressed tar)"),
    ],
    ids=["zero-bytes", "empty-gzip", "gzip-of-empty-tar", "empty-tar"],  # gzip headers carry the time
)
def test_an_empty_archive_is_called_empty(data, words):
    with pytest.raises(ArchiveError) as info:
        _members(data)
    assert str(info.value) == f"images_009.tar.gz: {words}"
    assert "truncated" not in str(info.value)


def test_bytes_that_are_no_archive_are_refused_with_that_reason():
    with pytest.raises(ArchiveError, match="not a tar archive .*its first bytes are 72 61 6e 64"):
        _members(b"random junk" * 100)


def test_a_chain_of_extended_headers_is_refused_not_a_crash():
    body = b"11 a=bcdef\n"
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.size, pax.type = len(body), tarfile.XHDTYPE
    one = pax.tobuf(format=tarfile.USTAR_FORMAT) + body + b"\0" * (512 - len(body))
    with pytest.raises(ArchiveError, match="a chain of extended headers too long to follow"):
        _members(gzip.compress(one * 5000 + plain_tar([("images/z.png", b"z")])))


@pytest.mark.parametrize(
    "kind, words",
    [(b"V", "a volume label"), (b"M", "a multi-volume continuation"), (b"Z", "unknown tar type 'Z'")],
)
def test_other_member_types_are_named_in_words(kind, words):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        odd = tarfile.TarInfo("images/a.png")
        odd.type = kind
        tar.addfile(odd)
        plain = tarfile.TarInfo("images/b.png")
        plain.size = 1
        tar.addfile(plain, io.BytesIO(b"x"))
    odd_member, plain_member = _members(out.getvalue())
    assert odd_member.problem == ("not_regular_file", f"not a regular file ({words})")
    assert plain_member.data == b"x"


# -- damage inside the stream: no member may vanish from an archive that reads as complete (issue 15) -----------


def _three_members() -> bytes:
    return plain_tar([(f"images/{i}.png", bytes([65 + i]) * 700) for i in range(3)])


def test_a_damaged_header_mid_archive_is_an_error_not_a_silent_end():
    data = bytearray(_three_members())
    second = data.index(b"images/1.png")  # the second member's header block
    data[second + 148 : second + 156] = b"garbage!"  # its checksum field
    with pytest.raises(
        ArchiveError, match=r"truncated or corrupt after 1 member\(s\).*damaged tar header at byte 1536"
    ):
        _members(gzip.compress(bytes(data)))


def test_data_after_the_end_marker_is_an_error():
    one = plain_tar([("images/a.png", b"a" * 10)])
    # A block of zeros where the next member's header should be, the members behind it still there.
    data = one[:1024] + b"\0" * 512 + plain_tar([("images/b.png", b"b" * 10)])
    with pytest.raises(ArchiveError, match=r"after 1 member\(s\).*data after the end-of-archive marker"):
        _members(gzip.compress(data))


@pytest.mark.parametrize("gunzip", ["isal", "zlib"])
def test_a_gzip_trailer_that_does_not_match_the_data_is_an_error(gunzip):
    # Members larger than the read buffer, so the trailer is met only at the last read, after every member.
    big = plain_tar([(f"images/{i}.png", random.Random(i).randbytes(400_000)) for i in range(3)])
    data = bytearray(gzip.compress(big))
    data[-8] ^= 0xFF  # the CRC-32 of the uncompressed data
    with pytest.raises(ArchiveError, match=r"truncated or corrupt after 3 member\(s\) \(read as gzip\)"):
        _members(bytes(data), gunzip=gunzip)
    assert len(_members(gzip.compress(big), gunzip=gunzip)) == 3
