"""Applying files through a pooled connection: bytes unchanged, errors at file:line, interrupts."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest

from poolkit import Pool
from poolkit.sqlimport.apply import apply_file, count_statements, import_session, locate
from poolkit.sqlimport.files import check_file
from poolkit.sqlimport.statement import Statement


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bytes_reach_the_server_unchanged(make_pool: t.Callable[..., Pool],
                                          tmp_path: Path) -> None:
    pool = make_pool()
    blob = bytes(range(256))
    escaped = blob.replace(b"\\", b"\\\\").replace(b"'", b"\\'").replace(b"\x00", b"\\0")
    path = _write(tmp_path, "1.sql", b"CREATE TABLE blobs (v LONGBLOB);\n"
                  b"INSERT INTO blobs VALUES (_binary '" + escaped + b"');\n"
                  b"INSERT INTO blobs VALUES ('%s %d 100%');\n")
    with import_session(pool.connection()) as raw:
        result = apply_file(raw, check_file(path))
        assert result.ok and result.statements == 3
        with raw.cursor() as cur:
            cur.execute("SELECT v FROM blobs")
            assert [r[0] for r in cur.fetchall()] == [blob, b"%s %d 100%"]
            cur.execute("DROP TABLE blobs")


def test_call_with_several_result_sets(make_pool: t.Callable[..., Pool], tmp_path: Path) -> None:
    pool = make_pool()
    path = _write(tmp_path, "1.sql", b"DELIMITER //\nCREATE PROCEDURE two() BEGIN SELECT 1; "
                  b"SELECT 2; END//\nDELIMITER ;\nCALL two();\nCALL two();\nSELECT 3;\n"
                  b"DROP PROCEDURE two;\n")
    with import_session(pool.connection()) as raw:
        result = apply_file(raw, check_file(path))
    assert result.ok, result.errors
    assert result.statements == 5
    assert count_statements(path) == 5


def test_the_session_is_discarded_afterwards(make_pool: t.Callable[..., Pool],
                                             tmp_path: Path) -> None:
    pool = make_pool()
    path = _write(tmp_path, "1.sql", b"SET @leak = 1;\nSET SESSION sql_mode = 'ANSI_QUOTES';\n")
    with import_session(pool.connection()) as raw:
        assert raw.get_autocommit()
        assert apply_file(raw, check_file(path)).ok
    with pool.connection() as conn:
        assert conn.scalar("SELECT @leak") is None
        assert "ANSI_QUOTES" not in conn.scalar("SELECT @@SESSION.sql_mode")


def test_error_line_from_the_servers_at_line() -> None:
    class Fake(Exception):
        sqlstate = "42000"

    stmt = Statement(b"SELECT\n1\nFROM WHERE", 40, 0, 10, Path("sql/20_data.sql"))
    error = locate(Fake(1064, "You have an error near 'WHERE' at line 3"), stmt, Path("x"))
    assert error.headline() == ("sql/20_data.sql:42: ERROR 1064 (42000): You have an error "
                                "near 'WHERE' at line 3")
    assert error.excerpt() == [(41, "1"), (42, "FROM WHERE")]


def test_keyboard_interrupt_leaves_nothing_recorded(make_pool: t.Callable[..., Pool],
                                                    tmp_path: Path) -> None:
    pool = make_pool()
    path = _write(tmp_path, "1.sql", b"SELECT 1;\nSELECT 2;\n")
    seen: list[int] = []

    def interrupt(stmt: Statement, seconds: float) -> None:
        seen.append(stmt.line)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), import_session(pool.connection()) as raw:
        apply_file(raw, check_file(path), on_statement=interrupt)
    assert seen == [1]
    assert pool.stats()["in_use"] == 0  # the connection went back (and was discarded)
    with pool.connection() as conn:
        assert conn.scalar("SELECT 1") == 1


def test_read_ahead_gives_the_same_statements_and_forwards_errors(tmp_path: Path) -> None:
    from poolkit.errors import SqlFileError
    from poolkit.sqlimport.apply import read_ahead
    from poolkit.sqlimport.split import split_file

    path = _write(tmp_path, "1.sql", b"".join(b"SELECT %d;\n" % i for i in range(5000)))
    assert list(read_ahead(split_file(path, chunk_size=64))) == list(split_file(path))
    bad = _write(tmp_path, "2.sql", b"SELECT 1;\nDELIMITER\n")
    got: list[int] = []
    with pytest.raises(SqlFileError, match="DELIMITER must be followed"):
        for stmt in read_ahead(split_file(bad)):
            got.append(stmt.line)
    assert got == [1]
    early = read_ahead(split_file(path))
    assert next(early).line == 1
    early.close()  # the producer thread stops


def test_big_file_goes_through_read_ahead(make_pool: t.Callable[..., Pool],
                                          tmp_path: Path) -> None:
    from poolkit.sqlimport.apply import READ_AHEAD_MIN_BYTES

    rows = b",".join(b"(%d,'row;%d -- not a comment')" % (i, i) for i in range(20000))
    statement = b"INSERT INTO big VALUES " + rows + b";\n"
    copies = READ_AHEAD_MIN_BYTES // len(statement) + 2
    data = b"CREATE TABLE big (id INT, v VARCHAR(40));\n" + statement * copies + b"BROKEN;\n"
    path = _write(tmp_path, "big.sql", data)
    pool = make_pool()
    with import_session(pool.connection()) as raw:
        result = apply_file(raw, check_file(path))
        assert result.statements == 1 + copies
        assert [e.line for e in result.errors] == [2 + copies]
        with raw.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM big")
            assert cur.fetchone() == (20000 * copies,)
            cur.execute("DROP TABLE big")
