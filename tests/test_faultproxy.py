"""The fault proxy itself, with the real server behind it (fast: about a second in all)."""

from __future__ import annotations

import threading
import time
import typing as t

import pymysql
import pytest

from poolkit.testing.faultproxy import FaultProxy
from poolkit.url import DatabaseURL


def connect(proxy: FaultProxy, server: DatabaseURL, **extra: t.Any) -> t.Any:
    kwargs: dict[str, t.Any] = {"host": proxy.host, "port": proxy.port, "user": server.user,
                                "password": server.password, "connect_timeout": 2,
                                "read_timeout": 2, "write_timeout": 2}
    kwargs.update(extra)
    return pymysql.connect(**kwargs)


def scalar(con: t.Any, sql: str) -> t.Any:
    with con.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


@pytest.fixture
def proxy(poolkit_server: DatabaseURL) -> t.Iterator[FaultProxy]:
    with FaultProxy(poolkit_server.host, poolkit_server.port) as proxy:
        yield proxy
    assert proxy.open_connections == 0, "stop() left a connection thread behind"


def test_passes_traffic_on_loopback(proxy: FaultProxy, poolkit_server: DatabaseURL) -> None:
    assert proxy.host == "127.0.0.1" and proxy.port > 0
    con = connect(proxy, poolkit_server)
    try:
        assert scalar(con, "SELECT 6 * 7") == 42
        assert proxy.open_connections == 1
    finally:
        con.close()
    assert proxy.accepted == 1 and proxy.bytes_forwarded > 0


def test_url_points_at_the_proxy(proxy: FaultProxy) -> None:
    url = proxy.url("mysql://u:p%40ss@db.example:3306/app?read_timeout=1")
    assert url == f"mysql://u:p%40ss@127.0.0.1:{proxy.port}/app?read_timeout=1"


def test_connect_delay_slows_the_greeting(proxy: FaultProxy,
                                          poolkit_server: DatabaseURL) -> None:
    proxy.delay(connect=0.15)
    started = time.monotonic()
    con = connect(proxy, poolkit_server)
    took = time.monotonic() - started
    con.close()
    print(f"\nconnect through a 150 ms greeting delay: {took * 1000:.0f} ms")
    assert 0.15 <= took < 1.0


def test_chunk_delay_adds_latency_per_round_trip(proxy: FaultProxy,
                                                 poolkit_server: DatabaseURL) -> None:
    con = connect(proxy, poolkit_server)
    try:
        proxy.delay(chunk=0.05)
        started = time.monotonic()
        scalar(con, "SELECT 1")
        took = time.monotonic() - started
    finally:
        con.close()
    assert 0.1 <= took < 1.0  # one chunk each way


def test_cut_resets_every_open_connection(proxy: FaultProxy,
                                          poolkit_server: DatabaseURL) -> None:
    cons = [connect(proxy, poolkit_server) for _ in range(3)]
    assert proxy.cut() == 3
    assert proxy.open_connections == 0
    for con in cons:
        with pytest.raises(pymysql.OperationalError):
            scalar(con, "SELECT 1")
    con = connect(proxy, poolkit_server)  # new connections pass again at once
    assert scalar(con, "SELECT 1") == 1
    con.close()


def test_refuse_answers_connection_refused_then_accepts(proxy: FaultProxy,
                                                        poolkit_server: DatabaseURL) -> None:
    proxy.refuse(1.0)
    time.sleep(0.2)  # the acceptor closes its listener within one tick (generous under load)
    started = time.monotonic()
    with pytest.raises(pymysql.OperationalError) as caught:
        connect(proxy, poolkit_server)
    assert caught.value.args[0] == 2003 and "refused" in str(caught.value)
    assert time.monotonic() - started < 0.5
    deadline = time.monotonic() + 5
    while proxy.refusing and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proxy.refusing
    con = connect(proxy, poolkit_server)
    assert scalar(con, "SELECT 1") == 1
    con.close()


def test_black_hole_hangs_queries_and_connects_until_restore(
        proxy: FaultProxy, poolkit_server: DatabaseURL) -> None:
    con = connect(proxy, poolkit_server, read_timeout=1)
    proxy.black_hole()
    started = time.monotonic()
    with pytest.raises(pymysql.OperationalError):
        scalar(con, "SELECT 1")
    assert 0.9 <= time.monotonic() - started < 2.0
    with pytest.raises(pymysql.OperationalError):
        connect(proxy, poolkit_server, connect_timeout=1, read_timeout=0.3)
    proxy.restore()
    con = connect(proxy, poolkit_server)
    assert scalar(con, "SELECT 1") == 1
    con.close()


def test_stop_ends_every_thread_even_mid_transfer(poolkit_server: DatabaseURL) -> None:
    before = threading.active_count()
    proxy = FaultProxy(poolkit_server.host, poolkit_server.port).start()
    cons = [connect(proxy, poolkit_server) for _ in range(4)]
    proxy.black_hole()
    started = time.monotonic()
    proxy.stop(timeout=2.0)
    assert time.monotonic() - started < 1.0
    assert proxy.open_connections == 0
    assert threading.active_count() <= before
    for con in cons:
        con.close()
