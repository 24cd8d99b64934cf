"""Driver-neutral error names: ``except poolkit.IntegrityError`` catches either driver's error."""

from __future__ import annotations

import subprocess
import sys
import typing as t

import pytest
from conftest import needs_mysqlclient, scratch_table
from flask import Flask

import poolkit
from poolkit import db
from poolkit.errors import PEP249_ERRORS, adopt_driver_errors

DRIVERS = ["pymysql", pytest.param("mysqldb", marks=needs_mysqlclient)]


def with_scheme(url: str, driver: str) -> str:
    return f"mysql+{driver}" + url[url.index("://"):]


@pytest.fixture(params=DRIVERS)
def driver_app(request: pytest.FixtureRequest, make_app: t.Callable[..., Flask],
               database_url: str, admin: t.Any) -> Flask:
    scratch_table(admin, "err_item", "id INT PRIMARY KEY, name VARCHAR(3) NOT NULL")
    return make_app(POOLKIT_DATABASE_URL=with_scheme(database_url, request.param))


# (statement, poolkit's class, the server's error number)
CASES = [
    ("INSERT INTO err_item VALUES (1, 'a'), (1, 'b')", poolkit.IntegrityError, 1062),
    # The drivers disagree on a few numbers (PyMySQL: OperationalError, mysqlclient:
    # IntegrityError); both are DatabaseErrors.
    ("INSERT INTO err_item (id) VALUES (2)", poolkit.DatabaseError, 1364),
    ("INSERT INTO err_item VALUES (3, NULL)", poolkit.IntegrityError, 1048),
    ("SELECT * FROM no_such_table", poolkit.ProgrammingError, 1146),
    ("SELEC 1", poolkit.ProgrammingError, 1064),
    ("INSERT INTO err_item VALUES (4, 'toolong')", poolkit.DataError, 1406),
]


@pytest.mark.parametrize(("sql", "expected", "code"), CASES, ids=[c[2] for c in CASES])
def test_poolkit_names_catch_the_drivers_errors(driver_app: Flask, sql: str,
                                                expected: type[Exception], code: int) -> None:
    with driver_app.app_context():
        db.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
        with pytest.raises(expected) as caught:
            db.execute(sql)
    error = caught.value
    assert isinstance(error, poolkit.DatabaseError) and isinstance(error, poolkit.Error)
    assert not isinstance(error, poolkit.PoolkitError)  # the server's error, not poolkit's
    assert error.args[0] == code
    # Still the driver's own class, with its own name first: old code keeps working.
    assert type(error).__module__.split(".")[0] in ("pymysql", "MySQLdb")
    if expected is not poolkit.DatabaseError:
        assert type(error).__name__ == expected.__name__


def test_through_a_dbapi_cursor_too(driver_app: Flask) -> None:
    with driver_app.app_context():
        cursor = db.cursor()
        cursor.execute("INSERT INTO err_item VALUES (9, 'x')")
        with pytest.raises(poolkit.IntegrityError):
            cursor.execute("INSERT INTO err_item VALUES (9, 'y')")


@needs_mysqlclient
def test_both_drivers_map_every_pep249_name() -> None:
    import MySQLdb
    import pymysql

    for ours in PEP249_ERRORS:
        for module in (pymysql, MySQLdb):
            assert issubclass(getattr(module, ours.__name__), ours), (module, ours)


def test_adopting_twice_changes_nothing() -> None:
    import pymysql.err

    before = pymysql.err.IntegrityError.__mro__
    adopt_driver_errors(pymysql.err)
    assert pymysql.err.IntegrityError.__mro__ == before
    assert before.index(poolkit.IntegrityError) > before.index(pymysql.err.DatabaseError)


def test_importing_poolkit_is_enough() -> None:
    # A fresh process: the names work without anything else of poolkit being used first.
    code = ("import poolkit, pymysql\n"
            "try:\n raise pymysql.err.IntegrityError(1062, 'dup')\n"
            "except poolkit.IntegrityError as e:\n print('caught', e.args[0])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout == "caught 1062\n"


def test_public_names_for_tests(app: Flask) -> None:
    with app.app_context():
        first = poolkit.current_connection()
        assert first is poolkit.current_connection()
        assert not first.checked_out  # naming it checks nothing out
        assert db.scalar("SELECT 1") == 1 and first.checked_out
        raw = first.raw
    with app.app_context():
        assert poolkit.current_connection() is not first
    with pytest.raises(poolkit.ConnectionReturnedError, match="already returned"):
        first.scalar("SELECT 1")
    assert raw is not None
