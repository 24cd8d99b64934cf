"""Discovery in natural order, checksums, and the checks that run before any statement."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from poolkit.errors import SqlFileError
from poolkit.sqlimport.files import check_file, check_files, discover, natural_key, sniff


def test_natural_order(tmp_path: Path) -> None:
    for name in ["10_y.sql", "2_x.sql", "1_a.sql", "V1_10__b.sql", "V1_9__a.sql", "notes.txt"]:
        (tmp_path / name).write_text("SELECT 1;")
    assert [p.name for p in discover(tmp_path)] == [
        "1_a.sql", "2_x.sql", "10_y.sql", "V1_9__a.sql", "V1_10__b.sql"]
    assert sorted(["b", "A", "a2", "a10"], key=natural_key) == ["A", "a2", "a10", "b"]


def test_missing_empty_and_wrong_folders(tmp_path: Path) -> None:
    with pytest.raises(SqlFileError, match="no such folder"):
        discover(tmp_path / "nope")
    with pytest.raises(SqlFileError, match=r"no \.sql files in this folder"):
        discover(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(SqlFileError, match="not a folder"):
        discover(tmp_path / "f")
    (tmp_path / "dir.sql").mkdir()
    with pytest.raises(SqlFileError, match=r"dir\.sql: is a folder"):
        discover(tmp_path)


def test_checksum_streams_sha256(tmp_path: Path) -> None:
    data = b"SELECT 1;\n" * 300_000
    path = tmp_path / "a.sql"
    path.write_bytes(data)
    checked = check_file(path)
    assert checked.checksum == hashlib.sha256(data).hexdigest()
    assert (checked.name, checked.size) == ("a.sql", len(data))


@pytest.mark.parametrize(("data", "message"), [
    (b"", r"is empty \(0 bytes\)"),
    (b"\x1f\x8b\x08\x00rest", "cannot read: "),  # a gzip file that is cut short
    (b"\x28\xb5\x2f\xfdrest", "zstd-compressed"),
    (b"PK\x03\x04", "zip archive"),
    ("SELECT 1;".encode("utf-16"), "UTF-16"),
    (b"SELECT 1;\x00\x00", "is not SQL text"),
    (b"\x7fELF\x02\x01\x01\x00", "is not SQL text"),
])
def test_files_that_are_not_sql(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "x.sql"
    path.write_bytes(data)
    with pytest.raises(SqlFileError, match=message) as caught:
        check_file(path)
    assert str(caught.value).startswith(str(path))


def test_binary_inside_literals_is_sql() -> None:
    assert sniff(b"INSERT INTO t VALUES (_binary '\x00\x01\xff\\'\x02');\n") is None
    assert sniff(b"INSERT INTO t VALUES ('\xe9t\xe9');  -- latin-1 bytes are fine\n") is None
    assert sniff(b"INSERT INTO t VALUES ('unclosed \x00 up to the end of the sniffed chunk")\
        is None


def test_same_name_twice_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.sql").write_text("SELECT 1;")
    (tmp_path / "b" / "x.sql").write_text("SELECT 2;")
    with pytest.raises(SqlFileError, match="same name"):
        check_files([tmp_path / "a" / "x.sql", tmp_path / "b" / "x.sql"])


@pytest.mark.parametrize("suffix", [".sql.gz", ".sql.bz2", ".sql.xz"])
def test_compressed_files_are_found_checked_and_read(tmp_path: Path, suffix: str) -> None:
    import bz2
    import gzip
    import lzma

    from poolkit.sqlimport.files import open_sql

    data = b"SELECT 1;\n" * 1000
    packed = {".sql.gz": gzip.compress, ".sql.bz2": bz2.compress, ".sql.xz": lzma.compress}
    path = tmp_path / f"10_x{suffix}"
    path.write_bytes(packed[suffix](data))
    (tmp_path / "2_a.sql").write_bytes(b"SELECT 2;\n")
    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(b"x"))
    assert [p.name for p in discover(tmp_path)] == ["2_a.sql", path.name]
    checked = check_file(path)
    assert checked.compression == {".sql.gz": "gzip", ".sql.bz2": "bzip2", ".sql.xz": "xz"}[suffix]
    assert checked.checksum == hashlib.sha256(path.read_bytes()).hexdigest()  # compressed bytes
    with open_sql(path) as reader:
        assert reader.read() == data


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.sql"
    path.write_bytes(b"SELECT 1;\nSELECT 'caf\xe9';\n-- caf\xe9 (a comment is not sent)\n"
                     b"SELECT caf\xe9;\n")
    with pytest.raises(SqlFileError, match=r"x\.sql:4: is not UTF-8 outside string literals"):
        check_file(path)
    assert sniff(b"SELECT 1;\n\n\x00") == ("line 3: is not SQL text: binary byte 0x00 outside "
                                           "any string literal (a binary file, or the wrong "
                                           "file?)")
