"""Scenario 2: the server closes idle pooled connections (``wait_timeout``); the pool serves on.

Figure: errors among the requests served after the pool sat idle past ``wait_timeout``
(target and assertion: 0), and how the pool noticed (retired unasked, or a failed ping).
"""

from __future__ import annotations

import time
import typing as t

import pytest
from flask import Flask

from poolkit import db
from poolkit.testing.plugin import admin_connect
from poolkit.url import parse_url

from .conftest import database_of, pool_connection_ids, start_load, summary

pytestmark = pytest.mark.faults

WAIT_TIMEOUT = 2
PREFILL = 4


def global_wait_timeout(database_url: str, value: int | None = None) -> int:
    """Read (and with *value*, set) ``@@GLOBAL.wait_timeout`` on a connection of its own."""
    con = admin_connect(parse_url(database_url))
    try:
        with con.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.wait_timeout")
            old = int(cur.fetchone()[0])
            if value is not None:
                cur.execute(f"SET GLOBAL wait_timeout = {int(value)}")
        return old
    finally:
        con.close()


@pytest.mark.parametrize("how", ["global", "session"])
def test_idle_connections_closed_by_the_server(fault_app: t.Callable[..., Flask], admin: t.Any,
                                               database_url: str, how: str) -> None:
    config: dict[str, t.Any] = {"POOLKIT_MIN_CACHED": PREFILL, "POOLKIT_MAX_CONNECTIONS": 8}
    if how == "global":
        # New connections take the global value and poolkit reads it at connect. Keep the
        # window short: the global setting reaches every session opened meanwhile.
        old = global_wait_timeout(database_url, WAIT_TIMEOUT)
        try:
            app = fault_app(**config)
        finally:
            global_wait_timeout(database_url, old)
    else:
        # Set after poolkit's connect (DBUtils' setsession): the pool does not know it and
        # only the ping before reuse can tell.
        app = fault_app(POOLKIT_SESSION=[f"SET SESSION wait_timeout = {WAIT_TIMEOUT}"],
                        **config)
    made = time.monotonic()
    assert global_wait_timeout(database_url) != WAIT_TIMEOUT, "global wait_timeout not restored"

    @app.get("/n")
    def count() -> dict[str, t.Any]:
        return {"n": db.scalar("SELECT COUNT(*) FROM information_schema.SCHEMATA")}

    app.testing = True
    database = database_of(database_url)
    opened = set(pool_connection_ids(admin, database))
    assert len(opened) == PREFILL
    deadline = time.monotonic() + WAIT_TIMEOUT + 5
    while set(pool_connection_ids(admin, database)) & opened and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(pool_connection_ids(admin, database)) & opened, "server kept them open"
    idle_for = time.monotonic() - made
    load = start_load(app, lambda client, i, n: client.get("/n"), threads=4, max_requests=10)
    load.join()
    failed = load.failed()
    stats = app.extensions["poolkit"].pool().stats()
    print(f"\n[scenario 2 {how}] {PREFILL} idle connections closed by the server "
          f"(pool idle {idle_for:.1f} s); {len(load.done())} requests, {len(failed)} failed; "
          f"retired {stats['discarded']} (pings {stats['pings']}, failed {stats['ping_failures']})")
    assert len(load.done()) == 40
    assert failed == [], summary(failed)
    assert stats["discarded"] >= 1
