"""The reset is skipped only when the session provably equals a fresh one.

Each case: pool of one connection, borrower A leaves something the server does not report (or
turns the reporting off), borrower B gets the same server session and must see a fresh one.
Every case runs under ``POOLKIT_RESET`` auto and always.
"""

from __future__ import annotations

import time
import typing as t

import pymysql
import pytest
from conftest import scratch_table, server_count

from poolkit import Pool
from poolkit.errors import ConnectionReturnedError

RESETS = pytest.mark.parametrize("reset", ["auto", "always"])


@pytest.fixture
def table(admin: t.Any) -> str:
    return scratch_table(admin, "failsafe_t", "id INT PRIMARY KEY")


def one(make_pool: t.Callable[..., Pool], reset: str, **config: t.Any) -> Pool:
    return make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_RESET=reset, **config)


def same_session(pool: Pool, leave: t.Callable[[t.Any], None]) -> int:
    """Run *leave* in a borrow; return its CONNECTION_ID()."""
    with pool.connection() as conn:
        cid = int(conn.scalar("SELECT CONNECTION_ID()"))
        leave(conn)
    return cid


def raw_sql(conn: t.Any, *statements: str) -> None:
    cur = conn.raw.cursor()
    for sql in statements:
        cur.execute(sql)
        cur.fetchall()
    cur.close()


@RESETS
def test_session_tracking_turned_off_does_not_hide_later_borrowers(
        make_pool: t.Callable[..., Pool], admin: t.Any, table: str, reset: str) -> None:
    pool = one(make_pool, reset)
    same_session(pool, lambda c: c.execute("SET SESSION session_track_state_change = OFF"))
    same_session(pool, lambda c: raw_sql(
        c, "SET @secret = 'token'", "SET SESSION sql_select_limit = 1",
        "SET SESSION foreign_key_checks = 0", f"CREATE TEMPORARY TABLE {table} (id INT)"))
    with pool.connection() as conn:
        row = conn.query_one("SELECT @secret AS s, @@sql_select_limit AS l, "
                             "@@foreign_key_checks AS f, @@session_track_state_change AS tr")
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        conn.commit()
    assert row is not None
    assert (row["s"], row["f"], row["tr"]) == (None, 1, 1)
    assert row["l"] > 1
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 1


@RESETS
def test_next_transaction_read_only_is_not_handed_on(
        make_pool: t.Callable[..., Pool], admin: t.Any, table: str, reset: str) -> None:
    pool = one(make_pool, reset)
    same_session(pool, lambda c: c.execute("SET TRANSACTION READ ONLY"))
    with pool.connection() as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1)")  # 1792 in a read-only transaction
        conn.commit()
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 1


@RESETS
def test_next_transaction_isolation_is_not_handed_on(
        make_pool: t.Callable[..., Pool], table: str, reset: str) -> None:
    pool = one(make_pool, reset)
    with pool.connection() as conn:
        fresh = conn.scalar("SELECT @@SESSION.tx_isolation")
    same_session(pool, lambda c: c.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"))
    with pool.connection() as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES (1)")  # registers the transaction
        level = None
        deadline = time.monotonic() + 2.0
        while level is None and time.monotonic() < deadline:
            time.sleep(0.11)  # INNODB_TRX is a cache refreshed at most every 0.1 s
            level = conn.scalar("SELECT trx_isolation_level FROM information_schema.INNODB_TRX "
                                "WHERE trx_mysql_thread_id = CONNECTION_ID()")
        conn.rollback()
    assert level == fresh.replace("-", " ")


@RESETS
def test_sequence_previous_value_is_not_handed_on(
        make_pool: t.Callable[..., Pool], admin: t.Any, reset: str) -> None:
    with admin.cursor() as cur:
        cur.execute("CREATE SEQUENCE IF NOT EXISTS failsafe_seq START WITH 1000")
    pool = one(make_pool, reset)
    same_session(pool, lambda c: c.scalar("SELECT NEXTVAL(failsafe_seq)"))
    with pool.connection() as conn:
        assert conn.query_one("SELECT PREVIOUS VALUE FOR failsafe_seq AS p, "
                              "LASTVAL(failsafe_seq) AS l") == {"p": None, "l": None}


@RESETS
def test_flush_for_export_is_not_handed_on(
        make_pool: t.Callable[..., Pool], admin: t.Any, table: str, reset: str) -> None:
    scratch_table(admin, "failsafe_other", "id INT PRIMARY KEY")
    pool = one(make_pool, reset)
    same_session(pool, lambda c: c.execute(f"FLUSH TABLES {table} FOR EXPORT"))
    with admin.cursor() as cur:  # other sessions may write the table again
        cur.execute("SET SESSION lock_wait_timeout = 2")
        cur.execute(f"INSERT INTO {table} VALUES (7)")
    with pool.connection() as conn:  # 1100: table was not locked with LOCK TABLES
        assert conn.scalar("SELECT COUNT(*) FROM failsafe_other") == 0


@RESETS
def test_backup_stage_is_not_handed_on(make_pool: t.Callable[..., Pool], reset: str) -> None:
    pool = one(make_pool, reset)
    same_session(pool, lambda c: c.execute("BACKUP STAGE START"))
    with pool.connection() as conn:  # fails when the session is still in a backup stage
        conn.execute("BACKUP STAGE START")
        conn.execute("BACKUP STAGE END")


@RESETS
def test_named_lock_taken_in_a_stored_function_is_released(
        make_pool: t.Callable[..., Pool], admin: t.Any, reset: str) -> None:
    with admin.cursor() as cur:
        cur.execute("CREATE OR REPLACE FUNCTION failsafe_hidden_lock() RETURNS INT "
                    "RETURN GET_LOCK('failsafe_hidden', 0)")
    pool = one(make_pool, reset)
    same_session(pool, lambda c: c.scalar("SELECT failsafe_hidden_lock()"))
    assert server_count(admin, "SELECT IS_USED_LOCK('failsafe_hidden')") is None


@RESETS
def test_user_variable_set_in_a_stored_function_is_not_handed_on(
        make_pool: t.Callable[..., Pool], admin: t.Any, reset: str) -> None:
    with admin.cursor() as cur:
        cur.execute("CREATE OR REPLACE FUNCTION failsafe_hidden_var() RETURNS INT "
                    "BEGIN SET @hidden = 'token'; RETURN 1; END")
    pool = one(make_pool, reset)
    same_session(pool, lambda c: c.scalar("SELECT failsafe_hidden_var()"))
    with pool.connection() as conn:
        assert conn.scalar("SELECT @hidden") is None


@RESETS
def test_last_insert_id_is_not_handed_on(make_pool: t.Callable[..., Pool], admin: t.Any,
                                         reset: str) -> None:
    scratch_table(admin, "failsafe_ai", "id INT AUTO_INCREMENT PRIMARY KEY, v INT")
    pool = one(make_pool, reset)
    with pool.connection() as conn:
        conn.execute("INSERT INTO failsafe_ai (v) VALUES (1)")
        conn.commit()
    with pool.connection() as conn:
        assert conn.scalar("SELECT LAST_INSERT_ID()") == 0


# -- roles (a private server: roles and accounts are server-wide) ---------------------------
@RESETS
def test_set_role_is_not_handed_on(make_pool: t.Callable[..., Pool], role_server: t.Any,
                                   reset: str) -> None:
    from .conftest import role_url

    pool = one(make_pool, reset, POOLKIT_DATABASE_URL=role_url(role_server))
    same_session(pool, lambda c: c.execute("SET ROLE writer"))
    with pool.connection() as conn:
        assert conn.scalar("SELECT CURRENT_ROLE()") is None
        with pytest.raises(pymysql.err.OperationalError) as denied:
            conn.execute("INSERT INTO t VALUES (1)")
    assert denied.value.args[0] == 1142  # INSERT command denied


@RESETS
def test_set_role_none_is_not_handed_on(make_pool: t.Callable[..., Pool], role_server: t.Any,
                                        reset: str) -> None:
    from .conftest import role_url

    url = role_url(role_server, "poolkit_defrole", "pw")
    pool = one(make_pool, reset, POOLKIT_DATABASE_URL=url)
    same_session(pool, lambda c: c.execute("SET ROLE NONE"))
    with pool.connection() as conn:
        assert conn.scalar("SELECT CURRENT_ROLE()") == "writer"
        conn.execute("INSERT INTO t VALUES (1)")  # the default role may
        conn.rollback()


# -- handed-out objects die with their borrow -----------------------------------------------
def _kept(kind: str, conn: t.Any) -> t.Any:
    if kind == "db.cursor()":
        return conn.cursor()
    if kind == "db.raw.cursor()":
        return conn.raw.cursor()
    if kind == "SSCursor":
        return conn.raw.cursor(pymysql.cursors.SSCursor)
    return conn.raw


@pytest.mark.parametrize("kind", ["db.cursor()", "db.raw.cursor()", "SSCursor", "db.raw"])
def test_a_kept_object_never_reaches_the_next_borrower(
        make_pool: t.Callable[..., Pool], admin: t.Any, table: str, kind: str) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        kept = _kept(kind, conn)
    with pool.connection() as conn:
        conn.execute("SET @secret = 'B'")
        with pytest.raises(ConnectionReturnedError):
            if kind == "db.raw":
                kept.cursor().execute("SELECT @secret")
            else:
                kept.execute(f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(ConnectionReturnedError):
            kept.query("SELECT 1") if kind == "db.raw" else kept.fetchall()
        conn.execute(f"INSERT INTO {table} VALUES (2)")
        conn.commit()
    assert server_count(admin, f"SELECT id FROM {table}") == 2
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 1
