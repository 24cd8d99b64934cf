"""Transactions are all or nothing, and a borrow never moves to another connection.

Rows are counted on the server by an admin connection after every case.
"""

from __future__ import annotations

import threading
import time
import typing as t

import pymysql
import pytest
from conftest import scratch_table, server_count
from flask import Flask

from poolkit import Pool, db
from poolkit.errors import PoolkitError, TransactionError


@pytest.fixture
def table(admin: t.Any) -> str:
    return scratch_table(admin, "aon_t", "id INT AUTO_INCREMENT PRIMARY KEY, v INT")


def test_max_usage_never_loses_a_requests_rows(make_app: t.Callable[..., Flask],
                                                admin: t.Any, table: str) -> None:
    app = make_app(POOLKIT_MAX_USAGE=48, POOLKIT_MAX_CONNECTIONS=1)

    @app.post("/write/<int:n>")
    def write(n: int) -> str:
        for i in range(3):
            db.execute(f"INSERT INTO {table} (v) VALUES (%s)", (n * 10 + i,))
        db.executemany(f"INSERT INTO {table} (v) VALUES (%s)", [(n,), (n,), (n,)])
        cur = db.cursor()
        for _ in range(3):
            cur.execute(f"INSERT INTO {table} (v) VALUES (%s)", (n,))
        cur.close()
        db.commit()
        return "ok"

    client = app.test_client()
    answers = [client.post(f"/write/{n}").status_code for n in range(60)]
    assert answers == [200] * 60
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 540
    # The limit still applies: at return, never inside a borrow.
    assert app.extensions["poolkit"].pool().stats()["connections_opened"] > 1


def test_transaction_inside_an_implicit_one_never_commits_it(
        make_pool: t.Callable[..., Pool], admin: t.Any, table: str) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        conn.execute(f"INSERT INTO {table} (v) VALUES (1)")  # autocommit off: implicit trx
        with pytest.raises(PoolkitError, match="commit"), conn.transaction():
            conn.execute(f"INSERT INTO {table} (v) VALUES (2)")
            raise RuntimeError("the request fails")
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 0


def test_transaction_after_reads_only_is_fine(make_pool: t.Callable[..., Pool],
                                              admin: t.Any, table: str) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        assert conn.scalar(f"SELECT COUNT(*) FROM {table}") == 0  # a read snapshot
        with conn.transaction():
            conn.execute(f"INSERT INTO {table} (v) VALUES (1)")
        conn.execute(f"INSERT INTO {table} (v) VALUES (2)")  # not committed
        conn.commit()
        conn.execute(f"INSERT INTO {table} (v) VALUES (3)")  # never committed
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 2


def _deadlock_victim(pool: Pool, admin: t.Any, table: str,
                     swallow: bool) -> tuple[BaseException | None, BaseException | None]:
    """Nested block of *pool*'s borrow against *admin*: the borrow is the deadlock victim
    (the other transaction modified many more rows). Returns (inner error, outer error)."""
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS aon_lock (id INT PRIMARY KEY, n INT) "
                    "ENGINE=InnoDB")
        cur.execute("REPLACE INTO aon_lock VALUES (1, 0), (2, 0)")
        cur.execute("CREATE TABLE IF NOT EXISTS aon_bulk (id INT) ENGINE=InnoDB")
        cur.execute("BEGIN")
        cur.execute("UPDATE aon_lock SET n = n + 1 WHERE id = 2")
        cur.executemany("INSERT INTO aon_bulk VALUES (%s)", [(i,) for i in range(200)])

    def other() -> None:
        time.sleep(0.5)  # the borrow waits on row 2 by then
        with admin.cursor() as cur:
            cur.execute("UPDATE aon_lock SET n = n + 1 WHERE id = 1")
            cur.execute("ROLLBACK")

    thread = threading.Thread(target=other)
    inner: BaseException | None = None
    outer: BaseException | None = None
    with pool.connection() as conn:
        thread.start()
        try:
            with conn.transaction():
                conn.execute(f"INSERT INTO {table} (v) VALUES (100)")
                conn.execute("UPDATE aon_lock SET n = n + 1 WHERE id = 1")
                try:
                    with conn.transaction():
                        conn.execute("UPDATE aon_lock SET n = n + 1 WHERE id = 2")
                except Exception as error:
                    inner = error
                    if not swallow:
                        raise
                conn.execute(f"INSERT INTO {table} (v) VALUES (101)")
        except Exception as error:
            outer = error
    thread.join(10)
    return inner, outer


@pytest.mark.parametrize("swallow", [False, True], ids=["raised", "swallowed"])
def test_deadlock_in_a_nested_block_raises_it_and_commits_nothing(
        make_pool: t.Callable[..., Pool], admin: t.Any, table: str, swallow: bool) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    inner, outer = _deadlock_victim(pool, admin, table, swallow)
    assert isinstance(inner, pymysql.err.OperationalError) and inner.args[0] == 1213, inner
    assert isinstance(outer, pymysql.err.OperationalError) and outer.args[0] == 1213, outer
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 0


def test_connection_lost_after_session_changes_raises(
        make_app: t.Callable[..., Flask], admin: t.Any, table: str) -> None:
    with admin.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS poolkit_tenant_b")
        cur.execute("CREATE TABLE IF NOT EXISTS poolkit_tenant_b.aon_t "
                    "(id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        cur.execute("TRUNCATE poolkit_tenant_b.aon_t")
    app = make_app(POOLKIT_MAX_CONNECTIONS=1)
    app.testing = False

    @app.post("/tenant")
    def tenant() -> str:
        db.execute("USE poolkit_tenant_b")
        db.execute("SET time_zone = '+09:00'")
        with admin.cursor() as cur:
            cur.execute(f"KILL CONNECTION {int(db.scalar('SELECT CONNECTION_ID()'))}")
        time.sleep(0.1)
        db.execute("INSERT INTO aon_t (v) VALUES (1)")
        db.commit()
        return "ok"

    assert app.test_client().post("/tenant").status_code == 500
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 0
    assert server_count(admin, "SELECT COUNT(*) FROM poolkit_tenant_b.aon_t") == 0


def test_first_statement_of_a_borrow_is_still_rerun(
        make_pool: t.Callable[..., Pool], admin: t.Any) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_PING_INTERVAL=60)
    with pool.connection() as conn:
        first = conn.scalar("SELECT CONNECTION_ID()")
    with admin.cursor() as cur:
        cur.execute(f"KILL CONNECTION {int(first)}")
    time.sleep(0.1)
    with pool.connection() as conn:  # the alive-bypass skipped the ping: the re-run heals it
        assert conn.scalar("SELECT CONNECTION_ID()") != first


def test_a_cursor_never_fails_over_in_mid_borrow(make_pool: t.Callable[..., Pool],
                                                 admin: t.Any, table: str) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        conn.execute("SET @tenant = 'b'")
        victim = conn.scalar("SELECT CONNECTION_ID()")
        with admin.cursor() as cur:
            cur.execute(f"KILL CONNECTION {int(victim)}")
        time.sleep(0.05)
        cur = conn.cursor()  # DBUtils' cursor would reopen and re-run on a fresh session
        with pytest.raises(pymysql.err.OperationalError) as lost:
            cur.execute(f"INSERT INTO {table} (v) VALUES (@tenant)")
    assert lost.value.args[0] in (2006, 2013)
    with pool.connection() as conn:
        assert conn.scalar("SELECT CONNECTION_ID()") != victim
    stats = pool.stats()
    assert stats["connections_opened"] - stats["connections_closed"] == stats["size"] == 1
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 0


@pytest.mark.parametrize("nested", [False, True], ids=["in the block", "in a nested block"])
def test_lock_wait_timeout_that_rolled_back_commits_nothing(
        make_pool: t.Callable[..., Pool], rollback_on_timeout_server: t.Any,
        nested: bool) -> None:
    server = rollback_on_timeout_server
    server.execute("TRUNCATE app.t")
    pool = make_pool(POOLKIT_DATABASE_URL=f"mysql://root:@127.0.0.1:{server.port}/app")
    holder = server.connect(database="app")
    caught: list[BaseException] = []
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("UPDATE hot SET n = n + 1 WHERE id = 1")
        with (pytest.raises(pymysql.err.OperationalError) as outer, pool.connection() as conn,
              conn.transaction()):
            conn.execute("INSERT INTO t (v) VALUES (1)")
            try:
                if nested:
                    with conn.transaction():
                        conn.execute("UPDATE hot SET n = n + 1 WHERE id = 1")
                else:
                    conn.execute("UPDATE hot SET n = n + 1 WHERE id = 1")
            except pymysql.err.OperationalError as error:
                caught.append(error)
            conn.execute("INSERT INTO t (v) VALUES (2)")  # a new implicit transaction
    finally:
        holder.rollback()
        holder.close()
    assert [e.args[0] for e in caught] == [1205]
    assert outer.value.args[0] == 1205
    assert server.execute("SELECT COUNT(*) FROM app.t") == [(0,)]


@pytest.mark.parametrize("call", ["commit", "rollback"])
def test_commit_or_rollback_inside_a_block_raises_and_the_block_keeps_nothing(
        make_pool: t.Callable[..., Pool], admin: t.Any, table: str, call: str) -> None:
    # A commit() half way through a block would keep its first half when the rest fails.
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        with pytest.raises(TransactionError, match=rf"db.{call}\(\) inside db.transaction"), \
                conn.transaction():
            conn.execute(f"INSERT INTO {table} (v) VALUES (1)")
            getattr(conn, call)()
        conn.execute(f"INSERT INTO {table} (v) VALUES (2)")
        conn.commit()  # outside a block it is the plain DB-API call
    assert server_count(admin, f"SELECT COUNT(*) FROM {table} WHERE v = 1") == 0
    assert server_count(admin, f"SELECT COUNT(*) FROM {table} WHERE v = 2") == 1
