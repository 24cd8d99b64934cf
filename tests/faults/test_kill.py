"""Scenario 1: every pooled connection killed from the server side under a 16-thread load.

Figure: failed requests, split into those in flight at the kill (unavoidable) and those that
started after it (target and assertion: 0).
"""

from __future__ import annotations

import time
import typing as t

import pytest
from flask import Flask

from poolkit import db

from .conftest import database_of, kill_connections, start_load, summary

pytestmark = pytest.mark.faults

THREADS = 16


@pytest.fixture
def items(admin: t.Any) -> str:
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS fault_item "
                    "(id INT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB")
        cur.execute("REPLACE INTO fault_item VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    return "fault_item"


def read_app(fault_app: t.Callable[..., Flask]) -> Flask:
    app = fault_app(POOLKIT_MAX_CONNECTIONS=THREADS, POOLKIT_TIMEOUT=5.0)
    app.testing = True  # a view's exception reaches the client thread, which records it

    @app.get("/items")
    def items_view() -> list[dict[str, t.Any]]:
        return db.query("SELECT id, name FROM fault_item ORDER BY id")

    @app.get("/items-tx")
    def items_in_transaction() -> list[dict[str, t.Any]]:
        with db.transaction():
            return db.query("SELECT id, name FROM fault_item ORDER BY id")

    return app


@pytest.mark.parametrize("path", ["/items", "/items-tx"])
def test_kill_every_pooled_connection_under_load(fault_app: t.Callable[..., Flask], admin: t.Any,
                                                 database_url: str, items: str,
                                                 path: str) -> None:
    app = read_app(fault_app)
    load = start_load(app, lambda client, i, n: client.get(path), threads=THREADS,
                      max_seconds=10.0, pause=0.002)
    try:
        time.sleep(0.6)  # every thread has checked out, the pool holds up to 16 connections
        kill_started = time.monotonic()
        killed = kill_connections(admin, database_of(database_url))
        kill_ended = time.monotonic()
        time.sleep(1.0)  # the idle connections outlive the 0.5 s ping bypass: both paths run
    finally:
        load.finish()
    in_flight = load.failed(until=kill_ended)
    after = load.failed(since=kill_ended)
    total = len(load.done())
    stats = app.extensions["poolkit"].pool().stats()
    print(f"\n[scenario 1 {path}] killed {killed} connections "
          f"(KILL took {(kill_ended - kill_started) * 1000:.0f} ms); {total} requests; "
          f"failed in flight: {len(in_flight)}; failed after the kill: {len(after)}; "
          f"discarded {stats['discarded']}, opened {stats['connections_opened']}")
    assert killed >= THREADS // 2, "the load did not hold the pool's connections"
    assert len(load.done(since=kill_ended)) > THREADS, "too few requests after the kill"
    assert after == [], f"requests that started after the kill failed: {summary(after)}"
    assert len(in_flight) <= THREADS, summary(in_flight)
    assert stats["in_use"] == 0


@pytest.mark.parametrize("path", ["/items", "/items-tx"])
def test_no_request_that_starts_after_the_kill_fails(fault_app: t.Callable[..., Flask],
                                                     admin: t.Any, database_url: str,
                                                     items: str, path: str) -> None:
    # The strict form of the target: the load pauses, every pooled connection (all idle now,
    # used moments ago, so no ping will check them) is killed, then the load resumes.
    app = read_app(fault_app)
    load = start_load(app, lambda client, i, n: client.get(path), threads=THREADS,
                      max_seconds=10.0, pause=0.002)
    try:
        time.sleep(0.4)
        load.pause()
        killed = kill_connections(admin, database_of(database_url))
        time.sleep(0.05)  # the server closes the killed sockets
        kill_ended = time.monotonic()
        load.resume()
        time.sleep(0.6)
    finally:
        load.finish()
    after = load.failed(since=kill_ended)
    print(f"\n[scenario 1 strict {path}] killed {killed} idle pooled connections; "
          f"{len(load.done(since=kill_ended))} requests after the kill, "
          f"{len(after)} failed")
    assert killed >= THREADS // 2
    assert after == [], f"requests that started after the kill failed: {summary(after)}"
