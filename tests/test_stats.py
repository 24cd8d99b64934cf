"""pool.stats(): a stable key set; counters that count what happened."""

from __future__ import annotations

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
    bad = database_url.replace("://root:", "://no_such_user_pk:")
    pool = make_pool(POOLKIT_DATABASE_URL=bad)
    try:
        pool.checkout()
    except pool.driver.module.OperationalError as error:
        assert error.args[0] in (1045, 1698)  # access denied (1698: unix-socket auth)
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
