"""The history table and the GET_LOCK lock on the real server."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest

from poolkit.errors import SqlFileError
from poolkit.sqlimport.files import SqlFile
from poolkit.sqlimport.history import (
    APPLIED,
    CHANGED,
    FAILED,
    PENDING,
    TABLE,
    History,
    lock_name,
    server_lock,
    status,
)
from poolkit.testing.plugin import admin_connect
from poolkit.url import parse_url


@pytest.fixture
def db(make_database: t.Callable[[], str]) -> t.Iterator[tuple[t.Any, str]]:
    url = parse_url(make_database())
    con = admin_connect(url)
    yield con, url.database
    con.close()


def _file(name: str, checksum: str) -> SqlFile:
    return SqlFile(Path(name), name, 10, checksum)


def test_load_before_the_table_exists_is_empty(db: tuple[t.Any, str]) -> None:
    con, database = db
    assert History(con, database).load() == {}


def test_record_load_and_status(db: tuple[t.Any, str]) -> None:
    con, database = db
    history = History(con, database)
    history.ensure()
    history.ensure()  # idempotent
    history.record(_file("1.sql", "a" * 64), 12, 3)
    with con.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS poolkit_other_db")
        cur.execute("USE poolkit_other_db")  # a file may switch databases: writes stay put
    try:
        history.record(_file("2.sql", "b" * 64), 5, 1)
        history.record(_file("2.sql", "c" * 64), 6, 2)  # re-applied: replaced
    finally:
        with con.cursor() as cur:
            cur.execute("DROP DATABASE poolkit_other_db")
    rows = history.load()
    assert sorted(rows) == ["1.sql", "2.sql"]
    assert (rows["2.sql"].checksum, rows["2.sql"].duration_ms, rows["2.sql"].statements) == (
        "c" * 64, 6, 2)
    files = [_file("1.sql", "a" * 64), _file("2.sql", "x" * 64), _file("3.sql", "d" * 64)]
    assert [what for _, what in status(files, rows)] == [APPLIED, CHANGED, PENDING]
    with con.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{database}`.{TABLE}")
        assert cur.fetchone() == (2,)


def test_lock_excludes_a_second_session(db: tuple[t.Any, str], database_url: str) -> None:
    con, database = db
    other = admin_connect(parse_url(database_url))
    try:
        with server_lock(con, database, 1), pytest.raises(
                SqlFileError, match="another initdb run holds the lock"), \
                server_lock(other, database, 0.2):
            pass
        with server_lock(other, database, 1):  # released
            pass
    finally:
        other.close()


def test_lock_name_fits_the_server_limit() -> None:
    assert lock_name("app") == "poolkit_initdb.app"
    assert len(lock_name("x" * 64)) <= 64


def test_a_failed_record_and_its_status(db: tuple[t.Any, str]) -> None:
    con, database = db
    history = History(con, database)
    history.ensure()
    history.record_failed(_file("20_data.sql", "e" * 64), 30, 2, total=5, line=7,
                          failed_at=None, statement="CREATE TABLE t3 (id INT) oops",
                          error="20_data.sql:7: ERROR 1064 (42000): …", prefix_checksum="f" * 64)
    row = History(con, database).load()["20_data.sql"]
    assert (row.status, row.statements, row.total, row.failed_line, row.prefix_checksum) == (
        FAILED, 2, 5, 7, "f" * 64)
    assert row.progress() == "2 of 5 statements applied"
    assert status([_file("20_data.sql", "e" * 64)], {"20_data.sql": row}) == [
        (_file("20_data.sql", "e" * 64), FAILED)]
    history.record(_file("20_data.sql", "g" * 64), 40, 5)  # the rerun finished it
    again = History(con, database).load()["20_data.sql"]
    assert (again.status, again.statements, again.failed_line) == (APPLIED, 5, None)


def test_an_old_table_gets_the_new_columns(db: tuple[t.Any, str]) -> None:
    con, database = db
    with con.cursor() as cur:  # the first version of the table
        cur.execute(f"CREATE TABLE {TABLE} (file VARCHAR(255) NOT NULL PRIMARY KEY, "
                    "checksum CHAR(64) NOT NULL, applied_at DATETIME(6) NOT NULL, "
                    "duration_ms INT UNSIGNED NOT NULL, statements INT UNSIGNED NOT NULL)")
        cur.execute(f"INSERT INTO {TABLE} VALUES ('1.sql', %s, NOW(), 5, 3)", ("a" * 64,))
    history = History(con, database)
    assert history.load()["1.sql"].status == APPLIED  # readable before the upgrade
    history.ensure()
    history.record_failed(_file("2.sql", "b" * 64), 1, 0, total=None, line=1, failed_at=None,
                          statement=None, error="x", prefix_checksum=None)
    rows = History(con, database).load()
    assert (rows["1.sql"].status, rows["2.sql"].status) == (APPLIED, FAILED)
    assert rows["2.sql"].progress() == "0 statements applied"


def test_history_survives_its_table_or_database_being_dropped(db: tuple[t.Any, str]) -> None:
    con, database = db
    history = History(con, database)
    history.ensure()
    history.record(_file("1.sql", "a" * 64), 1, 1)
    with con.cursor() as cur:
        cur.execute(f"DROP TABLE {TABLE}")
    history.record(_file("2.sql", "b" * 64), 1, 1)
    assert history.restored == (f"the table {TABLE} was dropped by a file: re-created it and "
                                "restored its 1 record")
    with con.cursor() as cur:
        cur.execute(f"DROP DATABASE `{database}`")
    history.record(_file("3.sql", "c" * 64), 1, 1)
    assert history.restored is not None and history.restored.startswith(
        f"database '{database}' was dropped by a file: re-created it and restored its 2 records")
    assert sorted(History(con, database).load()) == ["1.sql", "2.sql", "3.sql"]
