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
