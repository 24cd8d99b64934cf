"""Host selection on real servers: order, roles, read-only errors, the wait for a promotion."""

from __future__ import annotations

import time
import typing as t

import pytest
from conftest import needs_mysqlclient
from flask import Flask

from poolkit import NoHostAvailableError, Pool, load_config
from poolkit.testing.faultproxy import FaultProxy
from poolkit.testing.servers import APP_PASSWORD, APP_USER, DATABASE, ReplicationPair, free_port

pytestmark = pytest.mark.replication


def _pool(url: str, **config: t.Any) -> Pool:
    return Pool(load_config({"POOLKIT_DATABASE_URL": url, **config}).pools["default"])


def test_a_down_host_is_skipped_and_random_spreads(items: ReplicationPair) -> None:
    dead = f"127.0.0.1:{free_port()}"
    hosts = f"{dead},{items.primary.address},{items.replica.address}"
    pool = _pool(f"mysql://{APP_USER}:{APP_PASSWORD}@{hosts}/{DATABASE}")
    try:
        with pool.connection() as conn:  # target=any: the first host that answers
            assert conn.scalar("SELECT @@port") == items.primary.port
        down = pool.hosts.describe()[0]
        assert down["host"] == dead and "2003" in down["error"]
    finally:
        pool.close()
    spread = _pool(f"mysql://{APP_USER}:{APP_PASSWORD}@{items.primary.address},"
                   f"{items.replica.address}/{DATABASE}?load_balance=random")
    ports = set()
    for _ in range(30):
        raw = spread.hosts.connect()
        ports.add(raw.port)
        raw.close()
    spread.close()
    assert ports == {items.primary.port, items.replica.port}


@pytest.mark.parametrize("scheme", ["mysql", pytest.param("mysql+mysqldb",
                                                           marks=needs_mysqlclient)])
def test_read_only_error_retires_the_hosts_connections_and_is_not_rerun(
        items: ReplicationPair, make_app: t.Callable[..., Flask], scheme: str) -> None:
    url = items.url(items.replica, items.primary, query="target=primary")
    app = make_app(items, POOLKIT_FAILOVER_TIMEOUT=0.6,
                   POOLKIT_DATABASE_URL=url.replace("mysql://", f"{scheme}://"))
    pool = app.extensions["poolkit"].pool()
    held = [pool.connection().acquire() for _ in range(3)]
    for conn in held:
        assert conn.scalar("SELECT @@port") == items.primary.port
        conn.close()
    assert pool.stats()["idle"] == 3
    items.primary.execute("SET GLOBAL read_only = 1")
    try:
        with pool.connection() as conn:
            cursor = conn.cursor()  # the DB-API (DBUtils failover) cursor: not re-run either
            with pytest.raises(Exception, match="1290"):
                cursor.execute("INSERT INTO items (label) VALUES ('refused')")
        stats = pool.stats()
        assert stats["read_only_errors"] == 1
        assert stats["idle"] == 2 and stats["discarded"] == 1  # the failed one, at its return
        # The other two are retired at checkout; no host is a primary now, and poolkit saw the
        # demotion: it waits POOLKIT_FAILOVER_TIMEOUT for a promotion, then names each host.
        started = time.monotonic()
        with pytest.raises(NoHostAvailableError) as caught, pool.connection() as conn:
            conn.scalar("SELECT 1")
        waited = time.monotonic() - started
        assert 0.5 <= waited < 5.0, waited
        assert f"{items.primary.address}: read-only" in str(caught.value)
        assert pool.stats()["discarded"] == 3 and pool.stats()["size"] == 0
    finally:
        items.primary.execute("SET GLOBAL read_only = 0")
    with pool.connection() as conn:  # the primary is back: the next checkout finds it
        assert conn.scalar("SELECT @@port") == items.primary.port
        assert conn.scalar("SELECT COUNT(*) FROM items") == 0  # the INSERT never ran


def test_an_unknown_primary_that_is_gone_fails_at_once(items: ReplicationPair) -> None:
    dead = f"127.0.0.1:{free_port()}"
    pool = _pool(f"mysql://{APP_USER}:{APP_PASSWORD}@{items.replica.address},{dead}/"
                 f"{DATABASE}?target=primary", POOLKIT_FAILOVER_TIMEOUT=10.0)
    started = time.monotonic()
    try:
        with pytest.raises(NoHostAvailableError) as caught, pool.connection() as conn:
            conn.scalar("SELECT 1")
    finally:
        pool.close()
    assert time.monotonic() - started < 3.0  # no demotion seen: no wait for a promotion
    text = str(caught.value)
    assert f"{items.replica.address}: read-only (a replica, not the primary)" in text
    assert f"{dead}: cannot connect (2003" in text
    assert APP_PASSWORD not in text


def test_a_host_that_just_failed_is_tried_last(items: ReplicationPair) -> None:
    # A black hole in front of the primary: connects hang until connect_timeout.
    with FaultProxy("127.0.0.1", items.primary.port) as proxy:
        proxy.black_hole()
        pool = _pool(f"mysql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{proxy.port},"
                     f"{items.replica.address}/{DATABASE}?connect_timeout=1")
        try:
            started = time.monotonic()
            first = pool.hosts.connect()
            slow = time.monotonic() - started
            assert first.port == items.replica.port and slow >= 0.9
            started = time.monotonic()
            second = pool.hosts.connect()  # the black hole is tried after the replica now
            assert second.port == items.replica.port
            assert time.monotonic() - started < 0.9
            first.close()
            second.close()
        finally:
            pool.close()


@pytest.mark.parametrize("scheme", ["mysql", pytest.param("mysql+mysqldb",
                                                           marks=needs_mysqlclient)])
def test_a_commit_refused_by_a_demoted_primary_retires_its_host(
        items: ReplicationPair, scheme: str) -> None:
    url = items.url(items.primary, items.replica, query="target=primary")
    pool = _pool(url.replace("mysql://", f"{scheme}://"), POOLKIT_FAILOVER_TIMEOUT=0)
    try:
        with pool.connection() as conn:
            conn.execute("INSERT INTO items (label) VALUES ('pending')")
            items.primary.execute("SET GLOBAL read_only = 1")
            # The INSERT ran before the demotion; its COMMIT comes after (not through query()).
            with pytest.raises(Exception, match="1290"):
                conn.commit()
        stats = pool.stats()
        assert (stats["read_only_errors"], stats["discarded"], stats["size"]) == (1, 1, 0)
    finally:
        items.primary.execute("SET GLOBAL read_only = 0")
        pool.close()
    assert items.primary.execute(f"SELECT COUNT(*) FROM {DATABASE}.items")[0][0] == 0


def test_a_one_host_pool_discards_on_read_only_and_keeps_its_keys(
        items: ReplicationPair) -> None:
    # A DNS or VIP failover behind one name: the read-only connection must not be reused.
    pool = _pool(f"mysql://{APP_USER}:{APP_PASSWORD}@{items.replica.address}/{DATABASE}")
    try:
        assert not pool.hosts.routed
        with pool.connection() as conn, pytest.raises(Exception, match="1290"):
            conn.execute("INSERT INTO items (label) VALUES ('refused')")
        stats = pool.stats()
        assert (stats["discarded"], stats["size"]) == (1, 0)
        assert "read_only_errors" not in stats  # single-host pools keep the keys they had
        with pool.connection() as conn:  # reads go on, on a new connection
            assert conn.scalar("SELECT @@port") == items.replica.port
    finally:
        pool.close()
