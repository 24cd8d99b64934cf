"""Driver adapters: mysqlclient end to end through a pool; errors classified from real failures."""

from __future__ import annotations

import contextlib
import typing as t

import pytest
from conftest import needs_mysqlclient, scratch_table
from flask import Flask

from poolkit import Pool, Poolkit, db, load_config
from poolkit.pool.drivers import DISCONNECT_CODES, error_code, get_driver, is_disconnect
from poolkit.testing.plugin import admin_connect
from poolkit.url import parse_url

DRIVERS = ["pymysql", pytest.param("mysqldb", marks=needs_mysqlclient)]


def with_scheme(url: str, driver: str) -> str:
    scheme = {"pymysql": "mysql+pymysql", "mysqldb": "mysql+mysqldb"}[driver]
    return scheme + url[url.index("://"):]


@pytest.fixture
def table(admin: t.Any) -> str:
    return scratch_table(admin, "drv_item", "id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50)")


def rows(admin: t.Any) -> list[str]:
    with admin.cursor() as cur:
        cur.execute("SELECT name FROM drv_item ORDER BY id")
        return [r[0] for r in cur.fetchall()]


@pytest.fixture(params=DRIVERS)
def pool(request: pytest.FixtureRequest, database_url: str) -> t.Iterator[Pool]:
    settings = load_config({"POOLKIT_DATABASE_URL": with_scheme(database_url, request.param),
                            "POOLKIT_MAX_CONNECTIONS": 3}).pools["default"]
    pool = Pool(settings)
    assert pool.driver.name == request.param
    yield pool
    pool.close()


def test_query_scalar_and_dict_rows(pool: Pool) -> None:
    with pool.connection() as conn:
        assert conn.scalar("SELECT %s + 1", (41,)) == 42
        assert conn.query("SELECT %s AS a, %s AS b", (1, "x")) == [{"a": 1, "b": "x"}]
        assert conn.query_one("SELECT 'only' AS v") == {"v": "only"}
        cur = conn.cursor(dict=True)
        cur.execute("SELECT 7 AS seven")
        assert cur.fetchall() in ([{"seven": 7}], ({"seven": 7},))
        cur.close()
        plain = conn.cursor()
        plain.execute("SELECT 8")
        assert plain.fetchone() == (8,)
        plain.close()


def test_transaction_commits_and_rolls_back(pool: Pool, admin: t.Any, table: str) -> None:
    with pool.connection() as conn:
        with conn.transaction():
            conn.execute("INSERT INTO drv_item (name) VALUES (%s)", ("kept",))
        with pytest.raises(RuntimeError), conn.transaction():
            conn.execute("INSERT INTO drv_item (name) VALUES (%s)", ("undone",))
            raise RuntimeError
    assert rows(admin) == ["kept"]


def test_uncommitted_work_is_rolled_back_on_return(pool: Pool, admin: t.Any,
                                                   table: str) -> None:
    with pool.connection() as conn:
        assert conn.execute("INSERT INTO drv_item (name) VALUES ('dirty')") == 1
    assert rows(admin) == []
    assert pool.stats()["resets"] == 1
    with pool.connection() as conn:  # the same connection comes back, clean
        assert conn.scalar("SELECT COUNT(*) FROM drv_item") == 0


def test_connection_is_reused(pool: Pool) -> None:
    with pool.connection() as conn:
        first = conn.scalar("SELECT CONNECTION_ID()")
    with pool.connection() as conn:
        assert conn.scalar("SELECT CONNECTION_ID()") == first
    stats = pool.stats()
    assert (stats["connections_opened"], stats["checkouts"], stats["idle"]) == (1, 2, 1)


@needs_mysqlclient
def test_mysqlclient_through_the_extension(database_url: str, admin: t.Any,
                                           table: str) -> None:
    app = Flask(__name__)
    app.config["POOLKIT_DATABASE_URL"] = with_scheme(database_url, "mysqldb")
    extension = Poolkit(app)
    try:
        with app.app_context():
            assert app.extensions["poolkit"].pool().driver.name == "mysqldb"
            with db.transaction():
                db.execute("INSERT INTO drv_item (name) VALUES (%s)", ("ext",))
            assert db.query("SELECT name FROM drv_item") == [{"name": "ext"}]
    finally:
        extension.close()
    assert rows(admin) == ["ext"]


# -- error classification, from real failures --------------------------------------------
def killed_error(database_url: str, driver: str) -> BaseException:
    """The error a driver raises when its connection was killed by the server."""
    url = parse_url(with_scheme(database_url, driver))
    victim = admin_connect(url)
    killer = admin_connect(url)
    try:
        cur = victim.cursor()
        cur.execute("SELECT CONNECTION_ID()")
        (victim_id,) = cur.fetchone()
        killer.cursor().execute(f"KILL {int(victim_id)}")
        with pytest.raises(get_driver(url.driver).module.Error) as info:
            cur = victim.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
        return info.value
    finally:
        killer.close()
        with contextlib.suppress(Exception):  # already closed by the failure
            victim.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_killed_connection_is_a_disconnect(database_url: str, driver: str) -> None:
    error = killed_error(database_url, driver)
    assert error_code(error) in DISCONNECT_CODES
    assert is_disconnect(error)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("sql", "code"), [
    ("SELEC 1", 1064),
    ("SELECT * FROM no_such_table_here", 1146),
    ("SET STATEMENT max_statement_time=0.05 FOR SELECT SLEEP(1)", 1969),
])
def test_statement_errors_are_not_disconnects(database_url: str, driver: str, sql: str,
                                              code: int) -> None:
    url = parse_url(with_scheme(database_url, driver))
    con = admin_connect(url)
    try:
        cur = con.cursor()
        with pytest.raises(get_driver(url.driver).module.Error) as info:
            cur.execute(sql)
            cur.fetchall()
        assert error_code(info.value) == code
        assert not is_disconnect(info.value)
        cur = con.cursor()
        cur.execute("SELECT 5")  # still usable
        assert cur.fetchone() == (5,)
    finally:
        con.close()


@pytest.mark.parametrize("code", sorted(DISCONNECT_CODES))
def test_every_disconnect_code_is_classified(code: int) -> None:
    import pymysql

    assert is_disconnect(pymysql.err.OperationalError(code, "gone"))


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("code", [1205, 1213, 1062, 1969, 3024])
def test_retryable_statement_errors_are_not_disconnects(driver: str, code: int) -> None:
    module = get_driver(driver).module
    assert not is_disconnect(module.OperationalError(code, "statement failed"))


def test_error_code_of_errors_without_one() -> None:
    assert error_code(ValueError("x")) is None
    assert error_code(RuntimeError()) is None


# -- the PyMySQL adapter's surface for the rest of poolkit ---------------------------------

def test_adapter_helpers_on_a_real_connection(make_pool: t.Callable[..., t.Any]) -> None:
    from poolkit.pool import pymysql_compat as compat

    multi = 1 << 16  # CLIENT_MULTI_STATEMENTS, OR-ed with poolkit's session tracking
    pool = make_pool(POOLKIT_CONNECT_ARGS={"read_timeout": 1, "client_flag": multi},
                     POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        raw = conn.raw
        assert compat.is_pymysql(raw) and not compat.is_pymysql(object())
        cur = raw.cursor()
        cur.execute("SELECT 1; SELECT 2")  # two result sets
        assert compat.has_more_results(raw)
        cur.close()  # reads the rest
        assert not compat.has_more_results(raw)
        compat.disable_timeouts(raw)
        assert conn.scalar("SELECT SLEEP(1.5)") == 0  # read_timeout=1 no longer applies
        compat.shutdown_socket(raw)
        with pytest.raises(pool.driver.module.OperationalError):
            raw.cursor().execute("SELECT 1")
        assert compat.is_closed(raw)
    assert pool.stats()["discarded"] == 1
