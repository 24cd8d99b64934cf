"""Issue 10, items 1-2: nothing one borrower leaves in its session reaches the next borrower.

Each case: borrower A changes its session and returns the connection; borrower B gets the same
server session (same CONNECTION_ID) and must see what a fresh connection sees. Clean borrows
must cost no extra statement; a changed session costs one pipelined round trip.
"""

from __future__ import annotations

import typing as t

import pymysql
import pytest
from conftest import needs_mysqlclient, scratch_table, server_count

from poolkit import Pool

#: What a session looks like: compared between a fresh connection and a reused one.
FINGERPRINT = (
    "SELECT @@SESSION.sql_mode, @@SESSION.tx_isolation, @@SESSION.time_zone, @@autocommit, "
    "@@character_set_client, @@character_set_connection, @@character_set_results, "
    "@@collation_connection, DATABASE(), @secret, @y, IS_USED_LOCK('poolkit_job'), "
    "@@in_transaction, @@SESSION.wait_timeout, @@session_track_state_change"
)


def fingerprint(conn: t.Any) -> tuple[t.Any, ...]:
    cur = conn.raw.cursor()
    cur.execute(FINGERPRINT)
    row = cur.fetchone()
    cur.close()
    return tuple(row)


def fresh_fingerprint(make_pool: t.Callable[..., Pool], **config: t.Any) -> tuple[t.Any, ...]:
    pool = make_pool(**config)
    with pool.connection() as conn:
        return fingerprint(conn)


@pytest.fixture
def table(admin: t.Any) -> str:
    return scratch_table(admin, "reset_item", "id INT PRIMARY KEY")


def _sql(*statements: str) -> t.Callable[[t.Any], None]:
    def run(conn: t.Any) -> None:
        for sql in statements:
            cur = conn.raw.cursor()
            cur.execute(sql)
            cur.fetchall()
            cur.close()
    return run


LEFTOVERS: dict[str, t.Callable[[t.Any], None]] = {
    "user variable": _sql("SET @secret = 'token'"),
    "user variable in a SELECT": _sql("SELECT @y := 3"),
    "SELECT INTO a user variable": _sql("SELECT 'token' INTO @secret"),
    "sql_mode": _sql("SET SESSION sql_mode = ''"),
    "isolation": _sql("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED"),
    "time_zone": _sql("SET time_zone = '+01:00'"),
    "autocommit": lambda conn: conn.raw.autocommit(True),
    "SET NAMES": _sql("SET NAMES latin1"),
    "driver charset": lambda conn: conn.raw.set_character_set("latin1"),
    "USE": _sql("USE information_schema"),
    "select_db()": lambda conn: conn.raw.select_db("information_schema"),
    "GET_LOCK": _sql("SELECT GET_LOCK('poolkit_job', 0)"),
    "wait_timeout": _sql("SET SESSION wait_timeout = 5"),
    "everything at once": _sql(
        "SET @secret = 'token'", "SET SESSION sql_mode = ''", "USE information_schema",
        "SET time_zone = '+01:00'", "SELECT GET_LOCK('poolkit_job', 0)", "BEGIN"),
}


@pytest.mark.parametrize("leave", LEFTOVERS.values(), ids=LEFTOVERS.keys())
def test_next_borrower_sees_a_fresh_session(make_pool: t.Callable[..., Pool],
                                            leave: t.Callable[[t.Any], None]) -> None:
    fresh = fresh_fingerprint(make_pool)
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        first = conn.scalar("SELECT CONNECTION_ID()")
        leave(conn)
        assert fingerprint(conn) != fresh  # the case really changes the session
    with pool.connection() as conn:
        assert conn.scalar("SELECT CONNECTION_ID()") == first  # the same server session
        assert fingerprint(conn) == fresh
    stats = pool.stats()
    assert (stats["resets"], stats["connections_opened"], stats["discarded"]) == (1, 1, 0)


def test_leaked_autocommit_does_not_commit_the_next_borrowers_insert(
        make_pool: t.Callable[..., Pool], admin: t.Any, table: str) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        conn.raw.autocommit(True)
    with pool.connection() as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1)")  # never committed
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 0


def test_temporary_table_is_dropped(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        conn.execute("CREATE TEMPORARY TABLE scratch (a INT)")
        conn.execute("INSERT INTO scratch VALUES (1)")
    with pool.connection() as conn:
        with pytest.raises(pymysql.err.ProgrammingError) as error:
            conn.scalar("SELECT COUNT(*) FROM scratch")
        assert error.value.args[0] == 1146  # no such table


def test_table_lock_is_released(make_pool: t.Callable[..., Pool], admin: t.Any,
                                table: str) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        conn.execute(f"LOCK TABLES {table} WRITE")
    # While the connection idles in the pool, other sessions can write the table.
    with admin.cursor() as cur:
        cur.execute("SET SESSION lock_wait_timeout = 2")
        cur.execute(f"INSERT INTO {table} VALUES (5)")
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 1


def test_named_lock_is_released(make_pool: t.Callable[..., Pool], admin: t.Any) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        assert conn.scalar("SELECT GET_LOCK('poolkit_job', 0)") == 1
    assert server_count(admin, "SELECT IS_USED_LOCK('poolkit_job')") is None
    assert server_count(admin, "SELECT GET_LOCK('poolkit_job', 0)") == 1
    server_count(admin, "SELECT RELEASE_LOCK('poolkit_job')")


def test_prepared_statement_is_deallocated(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        conn.execute("PREPARE leftover FROM 'SELECT 42'")
        assert conn.scalar("EXECUTE leftover") == 42
    with pool.connection() as conn, pytest.raises(pymysql.err.OperationalError) as error:
        conn.scalar("EXECUTE leftover")
    assert error.value.args[0] == 1243  # unknown prepared statement handler


def test_handler_is_closed(make_pool: t.Callable[..., Pool], table: str) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        conn.execute(f"HANDLER {table} OPEN")
    with pool.connection() as conn, pytest.raises(pymysql.err.MySQLError) as error:
        conn.query(f"HANDLER {table} READ FIRST")
    assert error.value.args[0] == 1109  # unknown table in HANDLER


def test_unread_unbuffered_result_is_not_handed_on(make_pool: t.Callable[..., Pool],
                                                   admin: t.Any, table: str) -> None:
    with admin.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} VALUES (%s)", [(i,) for i in range(1000)])
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        cur = conn.raw.cursor(pymysql.cursors.SSCursor)
        cur.execute(f"SELECT id FROM {table}")  # opens a snapshot, then reads one row only
        assert cur.fetchone() is not None
    with admin.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1000)")
    # filterwarnings=error: PyMySQL's "Previous unbuffered result was left incomplete" fails.
    with pool.connection() as conn:
        assert conn.scalar(f"SELECT COUNT(*) FROM {table}") == 1001
    assert pool.stats()["discarded"] == 1


def test_session_sql_is_applied_again_after_a_reset(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1,
                     POOLKIT_SESSION=["SET SESSION time_zone = '+02:00'", "SET @pool_tag = 7"])
    with pool.connection() as conn:
        conn.execute("SET @secret = 'token'")
        conn.execute("SET time_zone = '-05:00'")
    with pool.connection() as conn:
        row = conn.query_one("SELECT @@SESSION.time_zone AS tz, @pool_tag AS tag, "
                             "@secret AS secret")
    assert row == {"tz": "+02:00", "tag": 7, "secret": None}
    assert pool.stats()["resets"] == 1


def questions(conn: t.Any) -> int:
    """Statements this server session has run, by its own status counter."""
    row = conn.query_one("SHOW SESSION STATUS LIKE 'Questions'")
    assert row is not None
    return int(row["Value"])


def test_clean_borrows_cost_no_extra_statement(make_pool: t.Callable[..., Pool],
                                               admin: t.Any, table: str) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        before = questions(conn)
    borrows = 20
    for value in range(borrows):
        with pool.connection() as conn:
            assert conn.scalar("SELECT %s", (value,)) == value
        with pool.connection() as conn, conn.transaction():  # committed work is clean too
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (value,))
    with pool.connection() as conn:
        after = questions(conn)
    # Each borrow ran its own statements (SELECT; BEGIN, INSERT, COMMIT) and nothing else:
    # no ROLLBACK, no reset, no ping. +1: the SHOW STATUS that read `before`.
    assert after - before == borrows * 4 + 1
    assert pool.stats()["resets"] == 0


def test_changed_session_costs_one_round_trip(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        raw = conn.raw
        conn.execute("SET @secret = 'token'")
        sends: list[bytes] = []
        write = raw._write_bytes

        def counting_write(data: bytes) -> None:  # the real driver, with a send counter
            sends.append(data)
            write(data)

        raw._write_bytes = counting_write
    try:
        assert len(sends) == 1  # reset, database and session SQL in one write (pipelined)
    finally:
        with pool.connection() as again:  # the same driver connection (a pool of one);
            del again.raw._write_bytes  # the borrow's db.raw is dead once it was returned
    assert pool.stats()["resets"] == 1


def test_reset_always_is_a_full_reset(make_pool: t.Callable[..., Pool], admin: t.Any) -> None:
    # A stored function's GET_LOCK is invisible to the client and not flagged by the server:
    # POOLKIT_RESET="always" resets every return whatever the borrower did.
    with admin.cursor() as cur:
        cur.execute("DROP FUNCTION IF EXISTS poolkit_hidden_lock")
        cur.execute("CREATE FUNCTION poolkit_hidden_lock() RETURNS INT "
                    "RETURN GET_LOCK('poolkit_hidden', 0)")
    pool = make_pool(POOLKIT_RESET="always", POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        assert conn.scalar("SELECT poolkit_hidden_lock()") == 1
    assert server_count(admin, "SELECT IS_USED_LOCK('poolkit_hidden')") is None
    for _ in range(2):
        with pool.connection() as conn:
            conn.scalar("SELECT 1")
    assert pool.stats()["resets"] == 3


def test_pool_without_a_database_reopens_a_changed_session(
        make_pool: t.Callable[..., Pool]) -> None:
    # COM_RESET_CONNECTION keeps the current database, and a pool without one cannot undo
    # a USE: such a session is closed and the next borrower gets a new one.
    pool = make_pool(POOLKIT_CONNECT_ARGS={"database": None}, POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        first = conn.scalar("SELECT CONNECTION_ID()")
        conn.execute("USE information_schema")
    with pool.connection() as conn:
        assert conn.scalar("SELECT DATABASE()") is None
        assert conn.scalar("SELECT CONNECTION_ID()") != first
    stats = pool.stats()
    assert (stats["discarded"], stats["connections_opened"] - stats["connections_closed"],
            stats["size"]) == (1, 1, 1)


@needs_mysqlclient
def test_mysqlclient_resets_every_return(make_pool: t.Callable[..., Pool], database_url: str,
                                         admin: t.Any, table: str) -> None:
    url = database_url.replace("mysql://", "mysql+mysqldb://", 1)
    fresh = fresh_fingerprint(make_pool, POOLKIT_DATABASE_URL=url)
    pool = make_pool(POOLKIT_DATABASE_URL=url, POOLKIT_MAX_CONNECTIONS=1,
                     POOLKIT_SESSION=["SET SESSION time_zone = '+02:00'"])
    fresh_session = fresh_fingerprint(make_pool, POOLKIT_DATABASE_URL=url,
                                      POOLKIT_SESSION=["SET SESSION time_zone = '+02:00'"])
    assert fresh != fresh_session
    with pool.connection() as conn:
        first = conn.scalar("SELECT CONNECTION_ID()")
        _sql("SET @secret = 'token'", "SET SESSION sql_mode = ''",
             "CREATE TEMPORARY TABLE scratch (a INT)", "USE information_schema",
             "SELECT GET_LOCK('poolkit_job', 0)", "SET autocommit = 1")(conn)
    with pool.connection() as conn:
        assert conn.scalar("SELECT CONNECTION_ID()") == first
        assert fingerprint(conn) == fresh_session
        conn.execute(f"INSERT INTO {table} VALUES (1)")  # not committed: autocommit is off
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 0
    assert pool.stats()["resets"] == 2


def test_statement_text_checks() -> None:
    from poolkit.pool.pymysql_compat import changes_untracked_state as untracked

    for sql in ("SELECT GET_LOCK('a', 0)", "lock tables t write", "SELECT @a := 1", "CALL p()",
                "HANDLER t OPEN", b"LOCK TABLES t READ", "SELECT x INTO @v FROM t",
                "SELECT a, b INTO @a, @b FROM t", "DO @q := 2"):
        assert untracked(sql), sql
    for sql in ("SELECT blocked, clock FROM t", "SELECT 1", "SELECT * FROM callbacks",
                "SELECT @@version", "INSERT INTO t (email) VALUES ('a@b.c')",
                b"INSERT INTO t VALUES (1)", "UPDATE t SET a = 1"):
        assert not untracked(sql), sql
    assert untracked("INSERT INTO t VALUES " + ",".join(["(1)"] * 20000))  # bulk: reset


@needs_mysqlclient
def test_mysqlclient_unread_unbuffered_result_is_not_handed_on(
        make_pool: t.Callable[..., Pool], database_url: str, admin: t.Any, table: str) -> None:
    import MySQLdb.cursors

    with admin.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} VALUES (%s)", [(i,) for i in range(1000)])
    url = database_url.replace("mysql://", "mysql+mysqldb://", 1)
    pool = make_pool(POOLKIT_DATABASE_URL=url, POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        cur = conn.raw.cursor(MySQLdb.cursors.SSCursor)
        cur.execute(f"SELECT id FROM {table}")
        assert cur.fetchone() is not None
    with admin.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1000)")
    with pool.connection() as conn:
        assert conn.scalar(f"SELECT COUNT(*) FROM {table}") == 1001
    stats = pool.stats()
    assert stats["in_use"] == 0
    assert stats["connections_opened"] - stats["connections_closed"] == stats["size"] == 1
