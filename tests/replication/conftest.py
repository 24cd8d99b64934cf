"""Fixtures of the replication suite: a private MariaDB primary and replica, apps on both.

The servers come from :mod:`poolkit.testing.servers` (``mariadb-install-db`` into temp dirs, free
127.0.0.1 ports, GTID replication); the shared test server is never touched. One pair serves
the whole session for the tests that leave the topology as they found it; the tests that swap
roles or kill a server get a fresh pair of their own (about 3 s to start).
"""

from __future__ import annotations

import os
import threading
import time
import typing as t
from dataclasses import dataclass, field

import pytest
from flask import Flask

from poolkit import Poolkit
from poolkit.testing.servers import (
    DATABASE,
    PrivateServer,
    ReplicationPair,
    binaries_available,
    start_replica,
    start_replication_pair,
)

pytestmark = pytest.mark.replication


def _require_binaries() -> None:
    if not binaries_available():
        reason = "mariadbd / mariadb-install-db are not installed (apt install mariadb-server)"
        if os.environ.get("POOLKIT_TEST_REQUIRE_DB") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _create_schema(pair: ReplicationPair) -> None:
    pair.primary.execute(f"CREATE TABLE IF NOT EXISTS {DATABASE}.items ("
                         "id INT AUTO_INCREMENT PRIMARY KEY, label VARCHAR(40) NOT NULL, "
                         "writer INT NOT NULL DEFAULT 0) ENGINE=InnoDB")
    pair.wait_replicated()


def _started_pair(first_id: int) -> t.Iterator[ReplicationPair]:
    _require_binaries()
    servers = start_replication_pair(first_id=first_id)
    try:
        _create_schema(servers)
        yield servers
    finally:
        servers.destroy()


@pytest.fixture(scope="session")
def pair() -> t.Iterator[ReplicationPair]:
    """A primary and its replica for the session; tests must leave both as they found them."""
    yield from _started_pair(first_id=1)


@pytest.fixture
def fresh_pair() -> t.Iterator[ReplicationPair]:
    """A primary and replica of this test's own, for tests that swap roles or kill a server."""
    yield from _started_pair(first_id=11)


@pytest.fixture
def items(pair: ReplicationPair) -> ReplicationPair:
    """The session pair with an empty ``items`` table on both servers."""
    pair.primary.execute(f"DELETE FROM {DATABASE}.items")
    pair.wait_replicated()
    return pair


@pytest.fixture
def make_app() -> t.Iterator[t.Callable[..., Flask]]:
    """Build Flask apps on a pair: the default pool targets the primary, bind ``replica``
    the replicas, both over the same host list (replica first, so that order alone never
    finds the primary). Pools closed afterwards."""
    made: list[Poolkit] = []

    def factory(servers: ReplicationPair, **config: t.Any) -> Flask:
        app = Flask("poolkit_replication_app")
        hosts = (servers.replica, servers.primary)
        app.config.update({
            "POOLKIT_DATABASE_URL": servers.url(*hosts, query="target=primary"),
            "POOLKIT_BINDS": {"replica": servers.url(*hosts, query="target=replica")},
            "POOLKIT_CONNECT_ARGS": {"connect_timeout": 2, "read_timeout": 10},
            **config,
        })
        extension = Poolkit(app)
        made.append(extension)
        return app

    yield factory
    for extension in made:
        extension.close()


@dataclass
class Outcome:
    """One request of a :class:`Load`: start and end (monotonic), error text if it failed."""

    thread: int
    started: float
    ended: float
    error: str | None = None


@dataclass
class Load:
    """*threads* threads each running ``request(thread_no, n)`` until stopped (bounded)."""

    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def finish(self, timeout: float = 20.0) -> list[Outcome]:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [th.name for th in self.threads if th.is_alive()]
        assert not stuck, f"load threads still running {timeout} s after stop: {stuck}"
        with self.lock:
            return list(self.outcomes)

    def count(self) -> int:
        with self.lock:
            return len(self.outcomes)


def start_load(request: t.Callable[[int, int], None], *, threads: int,
               max_requests: int = 5000, max_seconds: float = 30.0,
               pause: float = 0.002) -> Load:
    """Start the load; a request that raises counts as failed."""
    load = Load()

    def run(number: int) -> None:
        ends = time.monotonic() + max_seconds
        for n in range(max_requests):
            if load.stop.is_set() or time.monotonic() > ends:
                return
            started = time.monotonic()
            error = None
            try:
                request(number, n)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            with load.lock:
                load.outcomes.append(Outcome(number, started, time.monotonic(), error))
            load.stop.wait(pause)

    for number in range(threads):
        thread = threading.Thread(target=run, args=(number,), name=f"repl-load-{number}",
                                  daemon=True)
        load.threads.append(thread)
        thread.start()
    return load


def wait_for(condition: t.Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *condition* until true (every 20 ms), failing after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def second_replica(items: ReplicationPair) -> t.Iterator[PrivateServer]:
    """Another replica of the session primary, for this test only."""
    server = start_replica(items.primary, server_id=41)
    try:
        yield server
    finally:
        server.destroy()
