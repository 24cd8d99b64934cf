"""Routing promises on a real primary and replica: a refusal is a role change only when the
server says so, the lag limit at every borrow, read-your-writes per request, pool-status."""

from __future__ import annotations

import os
import typing as t

import pytest
from flask import Flask

from poolkit import NoHostAvailableError, Pool, db, load_config
from poolkit.commands.pool_status import pool_status_command
from poolkit.testing.servers import (
    APP_PASSWORD,
    APP_USER,
    DATABASE,
    PrivateServer,
    ReplicationPair,
    free_port,
)

pytestmark = pytest.mark.replication


def _warm(pool: Pool, count: int) -> None:
    held = [pool.connection().acquire() for _ in range(count)]
    for conn in held:
        conn.close()
    assert pool.stats()["idle"] == count


def test_the_borrowers_own_read_only_transaction_is_not_a_role_change(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items)
    pool = app.extensions["poolkit"].pool()
    _warm(pool, 4)
    with pool.connection() as conn:
        conn.execute("START TRANSACTION READ ONLY")
        with pytest.raises(Exception, match="1792"):
            conn.execute("INSERT INTO items (label) VALUES ('read-only trx')")
        conn.rollback()
    stats = pool.stats()
    assert stats["read_only_errors"] == 0 and stats["refusals_explained"] == 1
    assert stats["discarded"] == 0 and stats["idle"] == 4  # 4 of 4 healthy connections kept
    with pool.connection() as conn:  # and the host is still the primary
        assert conn.scalar("SELECT @@port") == items.primary.port


def test_secure_file_priv_refusing_an_outfile_is_not_a_role_change(tmp_path: t.Any) -> None:
    allowed = tmp_path / "exports"
    allowed.mkdir()
    server = PrivateServer(61, prefix="poolkit-sfp-", options=[f"--secure-file-priv={allowed}"])
    try:
        server.install()
        server.start()
        pool = Pool(load_config({"POOLKIT_DATABASE_URL":
                                 f"mysql://root@{server.address}/mysql"}).pools["default"])
        try:
            _warm(pool, 4)
            with pool.connection() as conn, pytest.raises(Exception, match="1290"):
                conn.scalar(f"SELECT 1 INTO OUTFILE '{os.path.join(str(tmp_path), 'x.txt')}'")
            stats = pool.stats()
            assert stats["discarded"] == 0 and stats["idle"] == 4
        finally:
            pool.close()
    finally:
        server.destroy()


def test_the_lag_limit_holds_when_the_replica_pool_is_borrowed_directly(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    import time

    app = make_app(items, POOLKIT_MAX_REPLICA_LAG=1.0)
    pool = app.extensions["poolkit"].pool("replica")
    checkout = pool.hosts.guard(pool._checkout, pool._checkin)
    con = checkout()
    assert con.raw.port == items.replica.port
    pool._checkin(con)
    items.replica.execute("STOP SLAVE SQL_THREAD")  # Seconds_Behind_Master: NULL
    try:
        time.sleep(1.05)  # past the one-second reading
        with pytest.raises(NoHostAvailableError, match="replica lag unknown"):
            checkout()
        stats = pool.stats()
        assert stats["lag_skips"] >= 1 and stats["idle"] == 0
        replica = next(h for h in pool.hosts.describe() if h["host"] == items.replica.address)
        assert replica["lag"] is None and "stopped" in replica["lag_error"]
    finally:
        items.replica.execute("START SLAVE SQL_THREAD")
    items.wait_replicated()


def test_pool_connection_on_a_replica_pool_applies_the_lag_limit(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    import time

    app = make_app(items, POOLKIT_MAX_REPLICA_LAG=1.0)
    pool = app.extensions["poolkit"].pool("replica")
    with pool.connection() as conn:
        assert conn.scalar("SELECT @@port") == items.replica.port
    items.replica.execute("STOP SLAVE SQL_THREAD")
    try:
        time.sleep(1.05)
        with pytest.raises(NoHostAvailableError), pool.connection() as conn:
            conn.scalar("SELECT 1")
    finally:
        items.replica.execute("START SLAVE SQL_THREAD")
    items.wait_replicated()


def test_read_your_writes_survives_db_close(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items)
    items.replica.execute("STOP SLAVE SQL_THREAD")  # the replica would show the old rows
    try:
        with app.app_context():
            db.execute("INSERT INTO items (label) VALUES ('mine')")
            db.commit()
            db.close()
            rows = db.using("replica").query("SELECT label FROM items")
            assert [r["label"] for r in rows] == ["mine"]
    finally:
        items.replica.execute("START SLAVE SQL_THREAD")
    items.wait_replicated()


def test_a_default_replica_url_without_a_replica_is_a_503(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items, POOLKIT_DATABASE_URL=items.url(items.primary, query="target=replica"),
                   POOLKIT_BINDS={})

    @app.get("/")
    def index() -> str:
        return str(db.scalar("SELECT 1"))

    response = app.test_client().get("/")
    assert response.status_code == 503, response.get_data(as_text=True)[:300]
    assert response.headers["Retry-After"]


def test_pool_status_keeps_a_replica_whose_lag_it_cannot_read(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    items.primary.execute("CREATE USER IF NOT EXISTS 'nomonitor'@'%' IDENTIFIED BY 'pw'",
                          f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO 'nomonitor'@'%'")
    items.wait_replicated()
    hosts = f"{items.replica.address},{items.primary.address}"
    app = make_app(items, POOLKIT_DATABASE_URL=f"mysql://nomonitor:pw@{hosts}/{DATABASE}"
                                               "?target=primary", POOLKIT_BINDS={})
    result = app.test_cli_runner().invoke(pool_status_command, [])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if items.replica.address in x
                and x.lstrip().startswith("host"))
    assert "unreachable" not in line, line
    assert "replica  lag ? (1227" in line and "max_connections 200" in line, line


def test_pool_status_prints_a_multi_host_error_whole(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    stranger = PrivateServer(62, prefix="poolkit-stranger-")  # no app user: 1045 'user'@'host'
    try:
        stranger.install()
        stranger.start()
        dead = f"127.0.0.1:{free_port()}"
        hosts = f"{items.replica.address},{stranger.address},{dead}"
        url = f"mysql://{APP_USER}:{APP_PASSWORD}@{hosts}/{DATABASE}?target=primary"
        app = make_app(items, POOLKIT_DATABASE_URL=url, POOLKIT_BINDS={},
                       POOLKIT_FAILOVER_TIMEOUT=0)
        result = app.test_cli_runner().invoke(pool_status_command, [])
    finally:
        stranger.destroy()
    assert result.exit_code == 1
    out = result.output
    assert APP_PASSWORD not in out
    assert (f"NoHostAvailableError: no host of mysql://{APP_USER}:***@{hosts}/{DATABASE}"
            "?target=primary is a primary") in out, out
    assert f"{items.replica.address}: read-only" in out
    assert f"{stranger.address}: cannot connect (1045 Access denied for user '{APP_USER}'@" in out
    assert f"{dead}: cannot connect (2003" in out


def test_a_replica_pool_leaves_a_replica_that_was_promoted(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    import time

    app = make_app(items)
    pool = app.extensions["poolkit"].pool("replica")
    checkout = pool.hosts.guard(pool._checkout, pool._checkin)
    con = checkout()
    assert con.raw.port == items.replica.port
    pool._checkin(con)
    items.replica.execute("SET GLOBAL read_only = 0")  # promoted (replication left running)
    try:
        time.sleep(1.05)  # a host's role is read again at most once a second at borrow
        with pytest.raises(NoHostAvailableError, match="writable"):
            checkout()
        assert pool.stats()["idle"] == 0  # the pooled connection to it was retired
    finally:
        items.replica.execute("SET GLOBAL read_only = 1")
    time.sleep(1.05)
    con = checkout()  # a replica again: used again
    assert con.raw.port == items.replica.port
    pool._checkin(con)
