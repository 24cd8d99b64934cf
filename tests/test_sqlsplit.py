"""The statement splitter: the mysql client's rules, exact statements and lines, streaming."""

from __future__ import annotations

import io
import typing as t
from pathlib import Path

import pytest
from conftest import CORPUS, needs_corpus

from poolkit.errors import SqlFileError
from poolkit.sqlimport.split import split_bytes, split_file

# (id, input, [(statement, line), ...])
CASES: list[tuple[str, bytes, list[tuple[bytes, int]]]] = [
    ("simple", b"SELECT 1;\nSELECT 2;\n", [(b"SELECT 1", 1), (b"SELECT 2", 2)]),
    ("same line", b"SELECT 1; SELECT 2;", [(b"SELECT 1", 1), (b"SELECT 2", 1)]),
    ("no final delimiter", b"SELECT 1;\n\nSELECT 2\n", [(b"SELECT 1", 1), (b"SELECT 2", 3)]),
    ("delimiter in single quotes", b"SELECT 'a;b';", [(b"SELECT 'a;b'", 1)]),
    ("delimiter in double quotes", b'SELECT "a;b";', [(b'SELECT "a;b"', 1)]),
    ("delimiter in backticks", b"SELECT 1 AS `a;b`;", [(b"SELECT 1 AS `a;b`", 1)]),
    ("backslash escape", b"SELECT 'it\\'s;';\nSELECT 2;",
     [(b"SELECT 'it\\'s;'", 1), (b"SELECT 2", 2)]),
    ("doubled quote", b"SELECT 'it''s;' ;", [(b"SELECT 'it''s;'", 1)]),
    ("doubled backtick", b"SELECT 1 AS `a``;b`;", [(b"SELECT 1 AS `a``;b`", 1)]),
    ("escaped backslash ends string", b"SELECT 'a\\\\';SELECT 2;",
     [(b"SELECT 'a\\\\'", 1), (b"SELECT 2", 1)]),
    ("dash comment", b"-- a comment; not a statement\nSELECT 1; -- trailing;\nSELECT 2;",
     [(b"SELECT 1", 2), (b"SELECT 2", 3)]),
    ("dashes without space", b"SELECT 1--1;\nSELECT 2;", [(b"SELECT 1--1", 1), (b"SELECT 2", 2)]),
    ("dash comment inside statement", b"SELECT 1 -- one;\n + 1;",
     [(b"SELECT 1 \n + 1", 1)]),
    ("hash comment", b"# header;\nSELECT 1; # x;\nSELECT 2;", [(b"SELECT 1", 2), (b"SELECT 2", 3)]),
    ("hash in string", b"SELECT '#not;a comment';", [(b"SELECT '#not;a comment'", 1)]),
    ("block comment", b"/* a;\n b; */ SELECT 1;\nSELECT /* ; */ 2;",
     [(b"SELECT 1", 2), (b"SELECT  2", 3)]),
    ("comment-only statement", b"SELECT 1;\n-- only a comment\n/* and this */;\n",
     [(b"SELECT 1", 1)]),
    ("executable comment kept", b"/*!40101 SET NAMES utf8mb4 */;\n/*!*/;\n",
     [(b"/*!40101 SET NAMES utf8mb4 */", 1), (b"/*!*/", 2)]),
    ("mariadb executable comment", b"/*M!100100 SET @x=1 */;", [(b"/*M!100100 SET @x=1 */", 1)]),
    ("sandbox line", b"/*!999999\\- enable the sandbox mode */\n-- MariaDB dump\nSELECT 1;\n",
     [(b"SELECT 1", 3)]),
    ("sandbox line, MariaDB 10.11.8+", b"/*M!999999\\- enable the sandbox mode */ \n"
     b"/*M!100616 SET @OLD_NOTE_VERBOSITY=@@NOTE_VERBOSITY, NOTE_VERBOSITY=0 */;\n",
     [(b"/*M!100616 SET @OLD_NOTE_VERBOSITY=@@NOTE_VERBOSITY, NOTE_VERBOSITY=0 */", 2)]),
    ("delimiter change", b"DELIMITER //\nCREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END//\n"
     b"DELIMITER ;\nSELECT 3;",
     [(b"CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", 2), (b"SELECT 3", 4)]),
    ("delimiter lower case and trailing text", b"delimiter $$ the rest is ignored\n"
     b"SELECT 1; SELECT 2$$\ndelimiter ;\n", [(b"SELECT 1; SELECT 2", 2)]),
    ("double semicolon delimiter", b"DELIMITER ;;\n/*!50003 CREATE*/ /*!50003 TRIGGER t "
     b"BEFORE INSERT ON x FOR EACH ROW BEGIN SET @a=1; END */;;\nDELIMITER ;\n",
     [(b"/*!50003 CREATE*/ /*!50003 TRIGGER t BEFORE INSERT ON x FOR EACH ROW BEGIN SET @a=1; "
       b"END */", 2)]),
    ("\\d delimiter", b"\\d //\nSELECT 1; SELECT 2//\n\\d ;\nSELECT 3;",
     [(b"SELECT 1; SELECT 2", 2), (b"SELECT 3", 4)]),
    ("delimiter inside string under new delimiter", b"DELIMITER //\nSELECT '//'//\n",
     [(b"SELECT '//'", 2)]),
    ("crlf", b"SELECT 1;\r\n-- c\r\nSELECT\r\n 2;\r\n", [(b"SELECT 1", 1), (b"SELECT\n 2", 3)]),
    # The client drops the CR of CRLF line ends, inside literals too; a lone CR stays.
    ("crlf in a literal", b"SELECT 'a\r\nb', 'c\rd';\r\n", [(b"SELECT 'a\nb', 'c\rd'", 1)]),
    ("crlf delimiter line", b"DELIMITER //\r\nSELECT 1//\r\nDELIMITER ;\r\nSELECT 2;\r\n",
     [(b"SELECT 1", 2), (b"SELECT 2", 4)]),
    ("utf-8 bom", b"\xef\xbb\xbfSELECT 1;", [(b"SELECT 1", 1)]),
    ("binary bytes in a string", b"INSERT INTO t VALUES (_binary '\xff\x00\xfe;\x80');",
     [(b"INSERT INTO t VALUES (_binary '\xff\x00\xfe;\x80')", 1)]),
    ("percent sign", b"SELECT '100%', '%s';", [(b"SELECT '100%', '%s'", 1)]),
    ("\\N is NULL", b"SELECT \\N;", [(b"SELECT \\N", 1)]),
    ("\\g ends a statement", b"SELECT 1\\g SELECT 2;", [(b"SELECT 1", 1), (b"SELECT 2", 1)]),
    ("empty statements", b";;\nSELECT 1;;", [(b"SELECT 1", 2)]),
    ("unterminated string sent as is", b"SELECT 1;\nSELECT 'abc",
     [(b"SELECT 1", 1), (b"SELECT 'abc", 2)]),
    ("multi-line statement line", b"\n\n  -- lead\n  INSERT INTO t\n  VALUES (1);",
     [(b"INSERT INTO t\n  VALUES (1)", 4)]),
]


def _split(data: bytes, chunk_size: int) -> list[tuple[bytes, int]]:
    return [(s.sql, s.line) for s in split_bytes(data, chunk_size=chunk_size)]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cases(data: bytes, expected: list[tuple[bytes, int]]) -> None:
    assert _split(data, 1 << 20) == expected


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 5, 6, 7])
def test_every_chunk_size_gives_the_same_statements(data: bytes, expected: list[tuple[bytes, int]],
                                                    chunk_size: int) -> None:
    assert _split(data, chunk_size) == expected


def test_offsets_cover_the_statement() -> None:
    data = b"-- x\nSELECT 1;\n  SELECT 22 ;"
    first, second = split_bytes(data)
    assert data[first.offset:first.end_offset] == b"SELECT 1;"
    assert data[second.offset:second.end_offset] == b"SELECT 22 ;"


def test_delimiter_without_argument_is_an_error() -> None:
    with pytest.raises(SqlFileError, match="DELIMITER must be followed"):
        split_bytes(b"SELECT 1;\nDELIMITER\nSELECT 2;")


def test_source_resolves_beside_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "part.sql").write_bytes(b"\nSELECT 'part';\n")
    main = tmp_path / "main.sql"
    main.write_bytes(b"SELECT 1;\nsource inc/part.sql\n\\. inc/part.sql\nSELECT 2;\n")
    got = [(s.sql, s.path.name if s.path else None, s.line) for s in split_file(main)]
    assert got == [(b"SELECT 1", "main.sql", 1), (b"SELECT 'part'", "part.sql", 2),
                   (b"SELECT 'part'", "part.sql", 2), (b"SELECT 2", "main.sql", 4)]


def test_source_cycle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_bytes(b"SELECT 1;\nsource b.sql\n")
    (tmp_path / "b.sql").write_bytes(b"source a.sql\n")
    with pytest.raises(SqlFileError, match="cycle"):
        list(split_file(tmp_path / "a.sql"))


def test_source_missing_file_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_bytes(b"SELECT 1;\n\nsource nope.sql\n")
    with pytest.raises(SqlFileError, match=r"a\.sql:3"):
        list(split_file(tmp_path / "a.sql"))


def test_sandbox_mode_refuses_source(tmp_path: Path) -> None:
    (tmp_path / "b.sql").write_bytes(b"SELECT 1;")
    (tmp_path / "a.sql").write_bytes(b"/*!999999\\- enable the sandbox mode */\nsource b.sql\n")
    with pytest.raises(SqlFileError, match="sandbox"):
        list(split_file(tmp_path / "a.sql"))


def test_big_statement_streams_whole(tmp_path: Path) -> None:
    rows = b",".join(b"(%d,'%s')" % (i, b"x;\\'y" * 3) for i in range(20000))
    data = b"INSERT INTO t VALUES " + rows + b";\nSELECT 1;\n"
    small = [(s.sql, s.line) for s in split_bytes(data, chunk_size=4096)]
    assert small == [(b"INSERT INTO t VALUES " + rows, 1), (b"SELECT 1", 2)]


def test_reads_in_chunks_never_the_whole_stream() -> None:
    class Counting(io.BytesIO):
        biggest = 0

        def read(self, size: int | None = -1) -> bytes:
            assert size is not None and 0 < size <= 1 << 26
            data = super().read(size)
            Counting.biggest = max(Counting.biggest, len(data))
            return data

    data = b"".join(b"INSERT INTO t VALUES (%d);\n" % i for i in range(50000))
    from poolkit.sqlimport.split import _Session, _Splitter

    stream = Counting(data)
    count = sum(1 for _ in _Splitter(t.cast(t.BinaryIO, stream), None, _Session(),
                                     4096).statements())
    assert count == 50000
    assert Counting.biggest <= 4096


@needs_corpus
@pytest.mark.parametrize("name", ["sakila-schema.sql", "sakila-data.sql"])
def test_sakila_is_the_same_at_every_chunk_size(name: str) -> None:
    path = CORPUS / "sakila" / name
    whole = [(s.sql, s.line) for s in split_file(path)]
    for chunk_size in (1, 7, 4093):
        if chunk_size == 1 and name == "sakila-data.sql":
            continue  # 3 MB one byte at a time: slow, and chunk sizes 1..7 are covered above
        assert [(s.sql, s.line) for s in split_file(path, chunk_size=chunk_size)] == whole
    if name == "sakila-schema.sql":
        assert len(whole) == 46
        creates = [sql.split(b"\n", 1)[0] for sql, _ in whole if sql.startswith(b"CREATE")]
        assert sum(b"TRIGGER" in c for c in creates) == 3  # the other 3 come with the data
        assert sum(b"PROCEDURE" in c or b"FUNCTION" in c for c in creates) == 6


@pytest.mark.parametrize("size", [65535, 65536, 65537, 200_000])
def test_literals_and_runs_longer_than_the_regex_window(size: int) -> None:
    # The statement regex looks at 64 KiB per call (sre's memory grows with each iteration);
    # literals, identifiers and plain text across that edge must still be read whole.
    parts = [b"'" + b"a\\';" * (size // 4) + b"'", b"x" * size,
             b"`" + b"b;" * (size // 2) + b"`", b'"' + b"\\\\" * (size // 2) + b'"']
    first = b"SELECT " + b",".join(parts)
    data = first + b";SELECT 2;"
    for chunk_size in (7, 4096, 65536, 1 << 20):
        got = [(s.sql, s.line) for s in split_bytes(data, chunk_size=chunk_size)]
        assert got == [(first, 1), (b"SELECT 2", 1)], chunk_size


def test_a_literal_of_many_escapes_is_fast() -> None:
    # 8 MB of escapes: a Python loop per escape, or one regex over it all, took seconds/GBs.
    literal = b"'" + b"ab\\'c" * (1 << 21) + b"'"
    [stmt] = split_bytes(b"INSERT INTO t VALUES (" + literal + b");", chunk_size=1 << 16)
    assert stmt.sql.endswith(literal + b")")


def test_comments_are_stripped_like_the_client_or_kept() -> None:
    data = (b"SELECT 1 -- one\n + 2 # two\n, 3/* three */+4, '-- kept # /* */' /*!50100 , 5 */"
            b" /*+ HINT */ ,\n  /* multi\n line */ 6;\n")
    [stripped] = split_bytes(data)
    assert stripped.sql == (b"SELECT 1 \n + 2 \n, 3 +4, '-- kept # /* */' /*!50100 , 5 */ "
                            b"/*+ HINT */ ,\n   6")
    assert stripped.shifts == ((4, 1),)  # the comment on line 4 took one newline with it
    assert stripped.file_line(4) == 4 and stripped.file_line(5) == 6
    [kept] = split_bytes(data, comments=True)
    assert kept.sql == data.rstrip(b";\n").replace(b"*/+4", b"*/ +4")  # the client's space
    assert kept.shifts == ()


def test_statements_know_their_delimiter_and_source() -> None:
    [one, block, three] = split_bytes(b"SELECT 1;\nDELIMITER //\nDO 1; DO 2//\nDELIMITER ;\n"
                                      b"DO 3;\n")
    assert (one.plain, block.plain, three.plain) == (True, False, True)


def test_sourced_statements_name_where_they_were_sourced(tmp_path: Path) -> None:
    (tmp_path / "inc.sql").write_bytes(b"SELECT 'inner';\n")
    (tmp_path / "top.sql").write_bytes(b"SELECT 1;\n\nsource inc.sql\n")
    statements = list(split_file(tmp_path / "top.sql"))
    assert [s.origin for s in statements] == [None, f"{tmp_path / 'top.sql'}:3"]
