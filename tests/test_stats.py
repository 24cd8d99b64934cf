"""pool.stats(): a stable key set; counters that count what happened."""

from __future__ import annotations

import re
import time
import typing as t

from poolkit import Pool
from poolkit.stats import COUNTER_KEYS, GAUGE_KEYS

EXPECTED_KEYS = [
    "size", "idle", "in_use", "waiting", "opening", "max_connections",
    "checkouts", "timeouts", "connections_opened", "connections_closed", "connect_errors",
    "pings", "ping_failures", "resets", "discarded", "leaks", "dropped", "wait_time_total",
    "wait_time_max", "connect_time_total",
]


def test_keys_are_stable_and_ordered(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=4)
    fresh = pool.stats()
    assert list(fresh) == EXPECTED_KEYS == [*GAUGE_KEYS, *COUNTER_KEYS]
    assert all(v == 0 for k, v in fresh.items() if k != "max_connections")
    assert fresh["max_connections"] == 4
    with pool.connection() as conn:
        conn.scalar("SELECT 1")
        assert list(pool.stats()) == EXPECTED_KEYS


def test_counters_and_gauges(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    a = pool.checkout()
    a.scalar("SELECT 1")
    b = pool.checkout()
    during = pool.stats()
    assert (during["size"], during["in_use"], during["idle"]) == (2, 2, 0)
    a.close()
    b.close()
    for _ in range(3):
        with pool.connection() as conn:
            conn.scalar("SELECT 1")
    stats = pool.stats()
    assert stats["checkouts"] == 5
    assert stats["connections_opened"] == 2
    assert (stats["size"], stats["idle"], stats["in_use"]) == (2, 2, 0)
    assert stats["connections_closed"] == stats["discarded"] == stats["timeouts"] == 0
    assert stats["connect_time_total"] > 0
    assert stats["wait_time_max"] <= stats["wait_time_total"]


def test_pings_only_after_the_alive_window(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_PING_INTERVAL=0)
    for _ in range(3):
        with pool.connection() as conn:
            conn.scalar("SELECT 1")
    assert pool.stats()["pings"] == 2  # every reuse pinged; the new connection was not
    quiet = make_pool(POOLKIT_PING_INTERVAL=60)
    for _ in range(3):
        with quiet.connection() as conn:
            conn.scalar("SELECT 1")
    assert quiet.stats()["pings"] == 0


def test_close_counts_closed_not_discarded(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    held = [pool.checkout() for _ in range(2)]
    for conn in held:
        conn.close()
    pool.close()
    stats = pool.stats()
    assert (stats["connections_closed"], stats["discarded"], stats["size"]) == (2, 0, 0)


def test_connect_errors_are_counted(make_pool: t.Callable[..., Pool], database_url: str) -> None:
    bad = re.sub(r"://[^@]*@", "://no_such_user_pk:@", database_url, count=1)
    pool = make_pool(POOLKIT_DATABASE_URL=bad)
    try:
        pool.checkout()
    except pool.driver.module.OperationalError as error:
        # 1045: no such account; 1698: unix-socket auth; 1044: a stock server's anonymous
        # ''@localhost account let the login in, and the database refused it.
        assert error.args[0] in (1044, 1045, 1698)
    else:
        raise AssertionError("connected as a user that does not exist")
    stats = pool.stats()
    assert (stats["connect_errors"], stats["connections_opened"], stats["size"]) == (1, 0, 0)


def test_checkin_dropped_returns_and_counts(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    con = pool._checkout()
    con._con.cursor().execute("BEGIN")
    pool._checkin_dropped(con)  # what a garbage-collected handle's finalizer calls
    stats = pool.stats()
    assert (stats["dropped"], stats["in_use"], stats["idle"], stats["resets"]) == (1, 0, 1, 1)
    with pool.connection() as conn:  # the dropped connection serves the next borrower
        assert conn.scalar("SELECT @@in_transaction") == 0


def test_sockets_replaced_by_failover_are_counted(make_pool: t.Callable[..., Pool],
                                                  admin: t.Any) -> None:
    # A socket the server killed between borrows is replaced by the next borrow's first
    # statement (its transparent re-run): each replacement closes one socket and opens one.
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2, POOLKIT_PING_INTERVAL=60)
    for _ in range(3):
        with pool.connection() as conn:
            victim = conn.scalar("SELECT CONNECTION_ID()")
        with admin.cursor() as cur:
            cur.execute("KILL %s", (victim,))
        time.sleep(0.05)  # the server closes the socket
        with pool.connection() as conn:  # first statement: re-run on a new socket
            assert conn.scalar("SELECT CONNECTION_ID()") != victim
            stats = pool.stats()
            assert stats["connections_opened"] - stats["connections_closed"] == stats["size"]
    stats = pool.stats()
    assert (stats["connections_opened"], stats["connections_closed"], stats["size"]) == (4, 3, 1)
    assert stats["discarded"] == 3


def test_opened_minus_closed_is_size_through_discards(make_pool: t.Callable[..., Pool],
                                                      admin: t.Any) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=3, POOLKIT_MAX_CACHED=1, POOLKIT_MAX_USAGE=3)
    for round_ in range(6):
        held = [pool.checkout() for _ in range(3)]
        for n, conn in enumerate(held):
            conn.scalar("SELECT 1")
            if n == round_ % 3:
                conn.execute("SET @dirty = 1")  # reset on return
        for conn in held:
            conn.close()
        stats = pool.stats()
        assert stats["connections_opened"] - stats["connections_closed"] == stats["size"]


def test_checkin_dropped_inside_the_pools_lock_is_deferred(
        make_pool: t.Callable[..., Pool]) -> None:
    # A finalizer can run while this very thread holds the pool's lock (the garbage
    # collector runs on any allocation): it must neither deadlock nor corrupt the pool.
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    con = pool._checkout()
    with pool._engine._mutex:
        pool._checkin_dropped(con)  # returns at once: queued
    assert pool.stats()["in_use"] == 1
    with pool.connection() as conn:  # the next checkout returns it first, then reuses it
        assert conn.scalar("SELECT 1") == 1
    stats = pool.stats()
    assert (stats["dropped"], stats["in_use"], stats["idle"], stats["size"]) == (1, 0, 1, 1)
