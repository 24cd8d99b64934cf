"""The engine's decisions: reset only when dirty (read snapshots count), LIFO reuse."""

from __future__ import annotations

import typing as t

import pytest
from conftest import server_count

from poolkit import Pool


@pytest.fixture
def items(admin: t.Any) -> str:
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS pooled_item (id INT PRIMARY KEY) ENGINE=InnoDB")
        cur.execute("TRUNCATE pooled_item")
    return "pooled_item"


def test_read_snapshot_does_not_outlive_the_checkout(make_pool: t.Callable[..., Pool],
                                                     admin: t.Any, items: str) -> None:
    pool = make_pool()
    with pool.connection() as conn:
        conn.scalar("SELECT 1")  # a warm connection, as in a busy app
    with pool.connection() as conn:
        first = conn.scalar("SELECT CONNECTION_ID()")
        assert conn.scalar("SELECT COUNT(*) FROM pooled_item") == 0  # REPEATABLE READ snapshot
    with admin.cursor() as cur:
        cur.execute("INSERT INTO pooled_item VALUES (1)")  # autocommit: committed
    with pool.connection() as conn:
        assert conn.scalar("SELECT CONNECTION_ID()") == first  # the same pooled connection
        assert conn.scalar("SELECT COUNT(*) FROM pooled_item") == 1  # sees the new row


def test_select_only_checkout_is_not_reset(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    with pool.connection() as conn:
        conn.scalar("SELECT 1")
    before = pool.stats()["resets"]
    for value in range(5):
        with pool.connection() as conn:
            assert conn.scalar("SELECT %s", (value,)) == value
    assert pool.stats()["resets"] == before


def test_uncommitted_insert_is_reset(make_pool: t.Callable[..., Pool], admin: t.Any,
                                     items: str) -> None:
    pool = make_pool()
    with pool.connection() as conn:
        conn.scalar("SELECT 1")
    before = pool.stats()["resets"]
    with pool.connection() as conn:
        conn.execute("INSERT INTO pooled_item VALUES (7)")
    assert pool.stats()["resets"] == before + 1
    assert server_count(admin, "SELECT COUNT(*) FROM pooled_item") == 0


def test_committed_work_needs_no_reset(make_pool: t.Callable[..., Pool], admin: t.Any,
                                       items: str) -> None:
    pool = make_pool()
    with pool.connection() as conn:
        conn.scalar("SELECT 1")
    before = pool.stats()["resets"]
    with pool.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO pooled_item VALUES (8)")
    assert pool.stats()["resets"] == before
    assert server_count(admin, "SELECT COUNT(*) FROM pooled_item") == 1


def test_reset_always_rolls_back_every_return(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_RESET="always")
    for _ in range(3):
        with pool.connection() as conn:
            conn.scalar("SELECT 1")
    assert pool.stats()["resets"] == 3


def test_idle_connections_are_reused_last_in_first_out(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    a, b = pool.checkout(), pool.checkout()
    ida, idb = a.scalar("SELECT CONNECTION_ID()"), b.scalar("SELECT CONNECTION_ID()")
    a.close()
    b.close()  # b is the warmest
    with pool.connection() as conn:
        assert conn.scalar("SELECT CONNECTION_ID()") == idb
    assert ida != idb
    assert pool.stats()["connections_opened"] == 2


def test_max_cached_closes_the_overflow(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=3, POOLKIT_MAX_CACHED=1)
    held = [pool.checkout() for _ in range(3)]
    for conn in held:
        conn.scalar("SELECT 1")
        conn.close()
    stats = pool.stats()
    assert (stats["idle"], stats["connections_closed"], stats["discarded"]) == (1, 2, 0)


def test_steady_connection_surface(make_pool: t.Callable[..., Pool], admin: t.Any) -> None:
    # poolkit.pool.dbutils_compat: the names the rest of poolkit uses instead of DBUtils'
    # private members, on a real connection.
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_MAX_USAGE=5)
    con = pool._checkout()
    first = con.raw.thread_id()
    fresh = con.reconnect()  # a new raw connection in place of the old one, counted
    assert con.raw is fresh and fresh.thread_id() != first
    con.count_use()
    assert con.usage == 1 and not con.in_transaction and not con.closed
    pool._checkin(con)
    stats = pool.stats()
    assert (stats["connections_opened"], stats["connections_closed"], stats["size"]) == (2, 1, 1)
    con = pool._checkout()
    kept = con.raw.thread_id()
    pool._engine._lent.discard(con)  # as a forked child does with an inherited connection
    con.detach()  # forgets it without a word to the server: the session stays open
    assert con.closed
    assert server_count(admin, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                               "WHERE ID = %s", kept) == 1
    con.raw.close()


def test_a_connection_returned_twice_is_not_pooled_twice(
        make_pool: t.Callable[..., Pool], caplog: pytest.LogCaptureFixture) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2)
    con = pool._checkout()
    pool._checkin(con)
    with caplog.at_level("WARNING", logger="poolkit"):
        pool._checkin(con)  # a stale second return while it idles
    assert "returned twice" in caplog.text
    stats = pool.stats()
    assert (stats["in_use"], stats["idle"]) == (0, 1)
    first, second = pool._checkout(), pool._checkout()
    assert first is not second  # never handed to two borrowers
    pool._checkin(first)
    pool._checkin(second)
