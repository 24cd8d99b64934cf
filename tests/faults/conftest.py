"""Fixtures of the fault suite: a fault proxy, server-side kills and a bounded request load.

Every scenario runs on the real server (``POOLKIT_TEST_DATABASE_URL``), through a Flask app
built with ``make_app``; faults come from :class:`poolkit.testing.faultproxy.FaultProxy` or from an
admin connection (``KILL CONNECTION``, ``SET GLOBAL``). Every loop here is bounded in count
and time and every thread is joined with a timeout.
"""

from __future__ import annotations

import threading
import time
import typing as t
from dataclasses import dataclass, field

import pytest
from flask import Flask

from poolkit import Poolkit
from poolkit.testing.faultproxy import FaultProxy
from poolkit.url import DatabaseURL, parse_url


@pytest.fixture
def fault_app(admin: t.Any, database_url: str) -> t.Iterator[t.Callable[..., Flask]]:
    """Build apps with Poolkit (POOLKIT_DATABASE_URL may point at a proxy); afterwards close
    their pools and check that no connection of theirs is left open on the server."""
    apps: list[Flask] = []

    def factory(**config: t.Any) -> Flask:
        app = Flask("poolkit_fault_app")
        app.config.update({"POOLKIT_DATABASE_URL": database_url, **config})
        Poolkit(app)
        apps.append(app)  # a strong reference: Poolkit keeps its apps in a WeakSet
        return app

    yield factory
    for app in apps:
        for pool in app.extensions["poolkit"].pools.values():
            pool.close()
    database = database_of(database_url)
    deadline = time.monotonic() + 2.0
    while pool_connection_ids(admin, database) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = pool_connection_ids(admin, database)
    assert not left, f"{len(left)} connections left open on the server after the pools closed"


@pytest.fixture
def proxy(poolkit_server: DatabaseURL) -> t.Iterator[FaultProxy]:
    """A fault proxy in front of the test server, stopped (threads joined) afterwards."""
    with FaultProxy(poolkit_server.host, poolkit_server.port) as proxy:
        yield proxy


@pytest.fixture
def proxied_url(proxy: FaultProxy, database_url: str) -> str:
    """The session database's URL, through the proxy."""
    return proxy.url(database_url)


def pool_connection_ids(admin: t.Any, database: str) -> list[int]:
    """Server-side ids of every connection on *database* except the admin's own."""
    with admin.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST "
                    "WHERE DB = %s AND ID <> CONNECTION_ID()", (database,))
        return [row[0] for row in cur.fetchall()]


def kill_connections(admin: t.Any, database: str) -> int:
    """``KILL CONNECTION`` every connection on *database* but the admin's; returns how many."""
    killed = 0
    with admin.cursor() as cur:
        for cid in pool_connection_ids(admin, database):
            try:
                cur.execute(f"KILL CONNECTION {int(cid)}")
                killed += 1
            except Exception as error:  # it ended on its own meanwhile (1094: unknown thread)
                if getattr(error, "args", (None,))[0] != 1094:
                    raise
    return killed


def database_of(url: str) -> str:
    return parse_url(url).database


@dataclass
class Outcome:
    """One request: when it started and ended (monotonic), and its error, if any."""

    started: float
    ended: float
    error: str | None = None

    @property
    def took(self) -> float:
        return self.ended - self.started


@dataclass
class Load:
    """Requests sent by a few threads until stopped; outcomes recorded in start order."""

    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    parked: int = 0

    def pause(self, timeout: float = 10.0) -> None:
        """Let requests in flight finish and hold every thread before its next request."""
        self.gate.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.parked >= sum(th.is_alive() for th in self.threads):
                    return
            time.sleep(0.005)
        raise AssertionError(f"the load did not pause within {timeout} s")

    def resume(self) -> None:
        self.gate.set()

    def failed(self, since: float = 0.0, until: float = float("inf")) -> list[Outcome]:
        return [o for o in self.snapshot() if o.error and since <= o.started < until]

    def done(self, since: float = 0.0, until: float = float("inf")) -> list[Outcome]:
        return [o for o in self.snapshot() if since <= o.started < until]

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)

    def join(self, timeout: float = 15.0) -> None:
        """Wait for every thread to send all its requests (bounded), then stop the load."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.finish(max(1.0, deadline - time.monotonic()))

    def finish(self, timeout: float = 15.0) -> None:
        """Stop the load and join every thread (bounded); fail if one is stuck."""
        self.stop.set()
        self.gate.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [th.name for th in self.threads if th.is_alive()]
        assert not stuck, f"threads still running {timeout} s after stop: {stuck}"


def start_load(app: Flask, request: t.Callable[[t.Any, int, int], t.Any], *, threads: int,
               max_requests: int = 2000, max_seconds: float = 30.0,
               pause: float = 0.0) -> Load:
    """Call ``request(client, thread_no, n)`` in *threads* threads until ``load.stop``.

    A call that raises, or answers a status >= 400, counts as failed. Each thread stops after
    *max_requests* calls or *max_seconds*, whichever comes first.
    """
    load = Load()
    load.gate.set()

    def run(number: int) -> None:
        client = app.test_client()
        ends = time.monotonic() + max_seconds
        for n in range(max_requests):
            if not load.gate.is_set():
                with load.lock:
                    load.parked += 1
                while not load.gate.wait(0.01) and not load.stop.is_set():
                    if time.monotonic() > ends:
                        break
                with load.lock:
                    load.parked -= 1
            if load.stop.is_set() or time.monotonic() > ends:
                return
            started = time.monotonic()
            error: str | None = None
            try:
                response = request(client, number, n)
                status = getattr(response, "status_code", 200)
                if status >= 400:
                    error = f"HTTP {status}: {response.get_data(as_text=True)[:200]}"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            outcome = Outcome(started, time.monotonic(), error)
            with load.lock:
                load.outcomes.append(outcome)
            if pause:
                load.stop.wait(pause)

    for number in range(threads):
        thread = threading.Thread(target=run, args=(number,), name=f"load-{number}",
                                  daemon=True)
        load.threads.append(thread)
        thread.start()
    return load


def summary(outcomes: t.Sequence[Outcome]) -> str:
    """The distinct errors among *outcomes*, with counts, for assertion messages."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.error:
            counts[outcome.error] = counts.get(outcome.error, 0) + 1
    return "; ".join(f"{n}× {text}" for text, n in sorted(counts.items(), key=lambda i: -i[1]))
