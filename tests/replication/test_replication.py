"""Multi-host URLs on a real MariaDB primary and replica: routing, lag, switchover, outage."""

from __future__ import annotations

import time
import typing as t

import pytest
from flask import Flask

from poolkit import NoHostAvailableError, db
from poolkit.testing.servers import APP_PASSWORD, APP_USER, DATABASE, PrivateServer, ReplicationPair

from .conftest import start_load, wait_for

pytestmark = pytest.mark.replication


def _port(bind: str | None = None) -> int:
    conn = db.using(bind) if bind else db
    return int(conn.scalar("SELECT @@port"))


def _labels(conn: t.Any) -> list[str]:
    return [r["label"] for r in conn.query("SELECT label FROM items ORDER BY id")]


def test_writes_go_to_the_primary_and_appear_on_the_replica(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items)
    with app.app_context():
        assert _port() == items.primary.port  # the URL lists the replica first
        db.execute("INSERT INTO items (label) VALUES ('first')")
        db.commit()
    items.wait_replicated()
    with app.app_context():
        replica = db.using("replica")
        assert _port("replica") == items.replica.port
        assert _labels(replica) == ["first"]
    state = app.extensions["poolkit"]
    assert state.pool("replica").stats()["replica_fallbacks"] == 0
    # The default pool tried the replica first (URL order), saw read_only=1 and went on.
    roles = {h["host"]: h["role"] for h in state.pool().hosts.describe()}
    assert roles == {items.primary.address: "primary", items.replica.address: "replica"}


def test_a_write_on_a_replica_bind_fails_on_the_replica(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items, POOLKIT_READ_YOUR_WRITES=False)
    with app.app_context(), pytest.raises(Exception, match=r"1290|read-only"):
        db.using("replica").execute("INSERT INTO items (label) VALUES ('nope')")


def test_read_your_writes_reads_from_the_primary_after_a_write(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items)
    with app.app_context():
        assert _port("replica") == items.replica.port  # no write yet
        db.execute("INSERT INTO items (label) VALUES ('mine')")
        db.commit()
        # The replica may not have it yet: this request reads its own write on the primary.
        assert _port("replica") == items.primary.port
        assert _labels(db.using("replica")) == ["mine"]
    with app.app_context():  # a new request starts on the replica again
        assert _port("replica") == items.replica.port
    off = make_app(items, POOLKIT_READ_YOUR_WRITES=False)
    with off.app_context():
        db.execute("INSERT INTO items (label) VALUES ('again')")
        db.commit()
        assert _port("replica") == items.replica.port


def test_a_lagging_replica_sends_reads_to_the_primary(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items, POOLKIT_MAX_REPLICA_LAG=1.0, POOLKIT_READ_YOUR_WRITES=False)
    pool = app.extensions["poolkit"].pool("replica")
    with app.app_context():
        assert _port("replica") == items.replica.port
    items.replica.execute("STOP SLAVE SQL_THREAD")
    try:
        items.primary.execute(f"INSERT INTO {DATABASE}.items (label) VALUES ('late')")
        time.sleep(1.1)  # the lag is read at most once a second per host
        with app.app_context():
            assert _port("replica") == items.primary.port
            assert _labels(db.using("replica")) == ["late"]
        stats = pool.stats()
        assert stats["replica_fallbacks"] >= 1
        replica_host = next(h for h in pool.hosts.describe()
                            if h["host"] == items.replica.address)
        assert replica_host["lag"] is None and "stopped" in replica_host["lag_error"]
    finally:
        items.replica.execute("START SLAVE SQL_THREAD")
    items.wait_replicated()

    def back_on_replica() -> bool:
        with app.app_context():
            return _port("replica") == items.replica.port

    wait_for(back_on_replica, 5.0, "reads back on the replica after it caught up")
    with app.app_context():
        assert _labels(db.using("replica")) == ["late"]


def test_no_primary_names_each_host_and_why(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items, POOLKIT_DATABASE_URL=items.url(items.replica, query="target=primary"))
    with app.app_context(), pytest.raises(NoHostAvailableError) as caught:
        db.scalar("SELECT 1")
    text = str(caught.value)
    assert f"{items.replica.address}: read-only" in text
    assert "app-secret" not in text and "***" in text


def test_role_swap_under_load_costs_at_most_one_failure_per_connection(
        fresh_pair: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    pair = fresh_pair
    threads = 4
    app = make_app(pair, POOLKIT_MAX_CONNECTIONS=threads, POOLKIT_FAILOVER_TIMEOUT=10.0)

    def request(number: int, n: int) -> None:
        with app.app_context():
            db.execute("INSERT INTO items (label, writer) VALUES (%s, %s)",
                       (f"{number}-{n}", number))
            db.commit()

    load = start_load(request, threads=threads, max_seconds=30.0)
    wait_for(lambda: load.count() >= 40, 10.0, "40 writes before the swap")
    # The switchover: the old primary refuses writes, the replica catches up and is promoted.
    pair.primary.execute("SET GLOBAL read_only = 1")
    demoted = time.monotonic()  # from here on, no write can succeed on the old primary
    pair.wait_replicated()
    pair.replica.execute("STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0")
    promoted = time.monotonic()
    wait_for(lambda: sum(o.started > promoted and o.error is None
                         for o in load.outcomes) >= 40, 15.0, "40 writes after the promotion")
    outcomes = load.finish()
    failed = [o for o in outcomes if o.error]
    assert len(failed) <= threads, [o.error for o in failed]
    per_thread = {o.thread for o in failed}
    assert len(per_thread) == len(failed), "a thread (one connection) failed twice"
    assert all("1290" in (o.error or "") for o in failed), [o.error for o in failed]
    first_ok = min(o.ended for o in outcomes if o.error is None and o.started >= demoted)
    # Every successful write is on the new primary or was on the old one before the swap.
    ok = sum(o.error is None for o in outcomes)
    old = pair.primary.execute(f"SELECT COUNT(*) FROM {DATABASE}.items")[0][0]
    new = pair.replica.execute(f"SELECT COUNT(*) FROM {DATABASE}.items")[0][0]
    assert new == ok and old <= new
    stats = app.extensions["poolkit"].pool().stats()
    assert stats["read_only_errors"] == len(failed)
    print(f"\nrole swap under load: {threads} connections in use, {len(failed)} failed "
          f"request(s), writes succeeded again {first_ok - demoted:.3f} s after the demotion "
          f"({first_ok - promoted:+.3f} s after the promotion)")


def test_primary_killed_reads_keep_working_writes_fail_fast(
        fresh_pair: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    pair = fresh_pair
    app = make_app(pair, POOLKIT_READ_YOUR_WRITES=False)

    @app.post("/items")
    def add_item() -> dict[str, int]:
        return {"added": db.execute("INSERT INTO items (label) VALUES ('view')")}

    @app.get("/items")
    def list_items() -> dict[str, list[str]]:
        return {"labels": _labels(db.using("replica"))}

    with app.app_context():
        db.execute("INSERT INTO items (label) VALUES ('before')")
        db.commit()
    pair.wait_replicated()
    with app.app_context():
        assert _labels(db.using("replica")) == ["before"]
    pair.primary.kill()
    for _ in range(3):
        with app.app_context():
            assert _port("replica") == pair.replica.port
            assert _labels(db.using("replica")) == ["before"]
        started = time.monotonic()
        with app.app_context(), pytest.raises(Exception) as caught:
            db.execute("INSERT INTO items (label) VALUES ('after')")
        took = time.monotonic() - started
        assert took < 3.0, f"a write took {took:.1f} s to fail"
    # The first write after the kill may see the pooled connection die (2013/2006); then the
    # pool looks for a primary and names each host.
    assert isinstance(caught.value, NoHostAvailableError), caught.value
    text = str(caught.value)
    assert f"{pair.primary.address}: cannot connect" in text
    assert f"{pair.replica.address}: read-only" in text
    # In a view: reads answer 200; a write answers 503 with Retry-After (a client or load
    # balancer retries), not a bare 500.
    client = app.test_client()
    assert client.get("/items").json == {"labels": ["before"]}
    response = client.post("/items")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"  # POOLKIT_FAILOVER_TIMEOUT
    assert "app-secret" not in response.get_data(as_text=True)


def test_a_user_who_cannot_read_the_lag_skips_the_replica(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    # SHOW REPLICA STATUS needs SLAVE MONITOR (MariaDB) / REPLICATION CLIENT (MySQL).
    items.primary.execute("CREATE USER IF NOT EXISTS 'nomonitor'@'%' IDENTIFIED BY 'pw'",
                          f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO 'nomonitor'@'%'")
    items.wait_replicated()
    hosts = f"{items.replica.address},{items.primary.address}"
    app = make_app(items, POOLKIT_MAX_REPLICA_LAG=5.0, POOLKIT_BINDS={
        "replica": f"mysql://nomonitor:pw@{hosts}/{DATABASE}?target=replica"})
    with app.app_context():
        assert _port("replica") == items.primary.port  # the lag is unknown: not in bounds
    pool = app.extensions["poolkit"].pool("replica")
    replica = next(h for h in pool.hosts.describe() if h["host"] == items.replica.address)
    assert replica["lag"] is None and "1227" in replica["lag_error"]
    assert pool.stats()["replica_fallbacks"] == 1


def test_the_lag_is_read_at_most_once_a_second_per_host(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items, POOLKIT_MAX_REPLICA_LAG=5.0, POOLKIT_READ_YOUR_WRITES=False)

    def status_reads() -> int:
        rows = items.replica.execute("SHOW GLOBAL STATUS LIKE 'Com_show_slave_status'")
        return int(rows[0][1])

    before = status_reads()
    started = time.monotonic()
    for _ in range(200):  # many requests, each routing a read
        with app.app_context():
            assert _port("replica") == items.replica.port
    seconds = time.monotonic() - started
    reads = status_reads() - before
    assert 1 <= reads <= int(seconds) + 2, (reads, seconds)


def test_a_lagging_replica_is_skipped_for_one_that_is_in_bounds(
        items: ReplicationPair, second_replica: PrivateServer,
        make_app: t.Callable[..., Flask]) -> None:
    first, second = items.replica, second_replica
    hosts = f"{first.address},{second.address},{items.primary.address}"
    app = make_app(items, POOLKIT_MAX_REPLICA_LAG=1.0, POOLKIT_READ_YOUR_WRITES=False,
                   POOLKIT_BINDS={"replica": f"mysql://{APP_USER}:{APP_PASSWORD}@{hosts}/"
                                             f"{DATABASE}?target=replica"})
    with app.app_context():
        assert _port("replica") == first.port  # URL order
    first.execute("STOP SLAVE SQL_THREAD")
    try:
        time.sleep(1.1)  # past the lag reading's one-second cache
        with app.app_context():
            assert _port("replica") == second.port  # not the primary: a replica is in bounds
        pool = app.extensions["poolkit"].pool("replica")
        stats = pool.stats()
        assert stats["replica_fallbacks"] == 0
        # The lagging host's pooled connection was retired, not handed out again.
        assert stats["discarded"] >= 1
        assert {h["host"]: h["connections"] for h in pool.hosts.describe()}[first.address] == 0
    finally:
        first.execute("START SLAVE SQL_THREAD")
    items.wait_replicated()
