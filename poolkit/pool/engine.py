"""The engine: DBUtils' ``PooledDB`` with the slow parts moved out of its lock.

``PooledDB`` opens, pings and rolls back connections while it holds the pool's lock, waits
for a free connection forever, hands out the oldest idle connection first and rolls back on
every return. This subclass keeps its connection classes (``SteadyDBConnection`` failover,
``PooledDedicatedDBConnection``) and its idle cache, and changes four decisions:

* connects, pings and rollbacks happen outside the lock, so a burst of new connections
  opens in parallel instead of one after another;
* waiters are served first come, first served (a returned connection is handed straight to
  the longest waiter) and give up after ``timeout`` seconds with
  :class:`~poolkit.errors.PoolTimeout`;
* the idle cache is LIFO: the most recently used connection is the warmest and the one
  whose ping can be skipped (used less than ``ping_interval`` seconds ago);
* a connection is rolled back on return only when the driver says a transaction or a read
  snapshot may be open, and it is retired at checkout when it is broken, past its
  lifetime or idle longer than ``idle_timeout`` or the server's ``wait_timeout``.
"""

from __future__ import annotations

import collections
import contextlib
import random
import threading
import time
import typing as t

from dbutils.pooled_db import PooledDB, PooledDedicatedDBConnection

from .. import signals
from ..config import PoolSettings
from ..errors import PoolClosedError, PoolTimeout
from ..stats import PoolStats
from .drivers import Driver, is_retry_safe
from .hosts import HostSelector

_ABANDONED: list[t.Any] = []

_NOTHING = object()  # a waiter not served yet
_SLOT = object()  # a waiter may open a new connection
_CLOSED = object()  # the pool closed while waiting


class _Waiter:
    """One borrower waiting for a connection; served first come, first served."""

    __slots__ = ("con", "ready")

    def __init__(self) -> None:
        self.con: t.Any = _NOTHING
        self.ready = threading.Lock()
        self.ready.acquire()  # connections inherited across fork() that must never be closed


class _Creator:
    """The ``creator`` DBUtils calls for every new connection (also on failover)."""

    def __init__(self, engine: PooledEngine) -> None:
        self._engine = engine
        self.dbapi = engine.driver.module
        self.threadsafety = 1

    def __call__(self) -> t.Any:
        engine = self._engine
        started = time.monotonic()
        try:
            # issue 14: the host selector picks the host (and role) of multi-host URLs.
            raw = engine.hosts.connect(engine.settings.session)
        except Exception:
            engine.stats.connect_errors += 1
            raise
        now = time.monotonic()
        # No ping for a connection used moments ago -- but never past the server's wait_timeout.
        wait_timeout = raw.poolkit_wait_timeout
        raw.poolkit_bypass = min(engine.settings.ping_interval,
                                 wait_timeout - 1 if wait_timeout else float("inf"))
        lifetime = engine.settings.max_lifetime
        # Jitter spreads retirements so that connections opened together do not expire together.
        raw.poolkit_expires = (now + lifetime * (0.9 + 0.1 * random.random()) if lifetime
                               else float("inf"))
        engine.stats.connections_opened += 1
        engine.stats.connect_time_total += now - started
        if signals.connection_opened.receivers:
            signals.connection_opened.send(engine.owner, connect_time=now - started)
        return raw


class PooledEngine(PooledDB):  # type: ignore[misc]
    """``PooledDB`` with a deadline, LIFO reuse and no I/O under the lock (see module doc)."""

    def __init__(self, settings: PoolSettings, driver: Driver, owner: object) -> None:
        self.settings = settings
        self.driver = driver
        self.owner = owner
        self.driver_kwargs = settings.driver_kwargs()
        self.hosts = HostSelector(  # issue 14: multi-host URLs, roles, replica lag
            settings.url, driver, self.driver_kwargs, max_replica_lag=settings.max_replica_lag,
            failover_timeout=settings.failover_timeout)
        self.stats = PoolStats()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._opening = 0
        self._pool_closed = False
        self._abandoned = False
        self._always_reset = settings.reset == "always"
        self._idle_cache: list[t.Any] = []
        self._maxusage = settings.max_usage
        self._pymysql = driver.name == "pymysql"
        super().__init__(
            _Creator(self), mincached=0, maxcached=settings.max_cached, maxshared=0,
            maxconnections=settings.max_connections, blocking=settings.blocking,
            maxusage=settings.max_usage or None, setsession=None,  # run by _Creator
            reset=False, failures=driver.failures, ping=(1, self._is_alive),
            isfatal=is_retry_safe,
        )
        # A plain lock (C-level enter/exit) on the hot path; each waiter sleeps on its own lock.
        self._mutex = threading.Lock()
        self._lock = threading.Condition(self._mutex)  # PooledDB's attribute, for its methods

    # -- health -------------------------------------------------------------------------
    def _is_alive(self, raw: t.Any) -> bool:
        # HikariCP's alive-bypass: a connection used moments ago is alive; skip the round trip.
        if time.monotonic() - raw.poolkit_last_used < raw.poolkit_bypass:
            return True
        self.stats.pings += 1
        try:
            raw.ping(False)
        except Exception:
            self.stats.ping_failures += 1
            raise
        raw.poolkit_last_used = time.monotonic()
        return True

    def _retire_reason(self, con: t.Any, now: float) -> str | None:
        raw = con._con
        if con._closed or self.driver.is_broken(raw):
            return "broken"
        if now > raw.poolkit_expires:
            return "lifetime"
        if self._maxusage and con._usage >= self._maxusage:
            return "usage"
        idle = now - raw.poolkit_last_used
        wait_timeout = getattr(raw, "poolkit_wait_timeout", 0.0)
        if idle > self.settings.idle_timeout > 0 or (wait_timeout and idle > wait_timeout - 1):
            return "idle"
        return None

    # -- checkout -----------------------------------------------------------------------
    def checkout(self) -> t.Any:
        """Check out a steady connection, waiting at most ``settings.timeout`` seconds."""
        with self._mutex:
            idle = self._idle_cache
            if idle and not self._waiters and not self._pool_closed:
                # Fast path: the warmest idle connection, used moments ago, needs no check.
                con = idle[-1]
                raw = con._con
                now = time.monotonic()
                if (now - raw.poolkit_last_used < raw.poolkit_bypass
                        and now < raw.poolkit_expires
                        and not (self._maxusage and con._usage >= self._maxusage)):
                    idle.pop()
                    con.poolkit_since = now
                    con.poolkit_raw = raw
                    self._connections += 1
                    self.stats.checkouts += 1
                    if signals.connection_checked_out.receivers:
                        signals.connection_checked_out.send(self.owner, wait_time=0.0)
                    return con
        return self._checkout_slow()

    def _checkout_slow(self) -> t.Any:
        start = time.monotonic()
        deadline = start + (self.settings.timeout if self._blocking else 0.0)
        retired: list[tuple[t.Any, str]] = []
        con: t.Any = None
        waiter: _Waiter | None = None
        must_open = False
        with self._mutex:
            if self._pool_closed:
                raise PoolClosedError(f"pool {self.settings.name!r} is closed")
            idle = self._idle_cache
            while idle and not self._waiters:
                candidate = idle.pop()
                reason = self._retire_reason(candidate, start)
                if reason is None:
                    con = candidate
                    break
                retired.append((candidate, reason))
            if con is not None:
                self._connections += 1
            elif not self._waiters and (
                    self._connections + self._opening < self._maxconnections):
                self._opening += 1  # reserve a slot; the connect happens outside the lock
                must_open = True
            elif deadline > start:
                waiter = _Waiter()  # wait in line: first come, first served
                self._waiters.append(waiter)
        for old, reason in retired:
            self._discard(old, reason)
        if waiter is not None:
            con = self._wait(waiter, deadline)
            if con is _SLOT:
                con, must_open = None, True
        elif con is None and not must_open:
            self._time_out(start)
        waited = time.monotonic() - start
        with self._mutex:
            stats = self.stats
            stats.wait_time_total += waited
            if waited > stats.wait_time_max:
                stats.wait_time_max = waited
        if must_open:
            con = self._open()
        else:
            raw = con._con
            if con._ping_check() is False:  # dead, and DBUtils could not reopen it
                self._discard(con, "broken")
                with self._mutex:
                    self._connections -= 1
                    self._opening += 1
                con = self._open()
            elif con._con is not raw:  # the ping failed and DBUtils reopened it
                self._count_replaced()
        con.poolkit_since = time.monotonic()
        con.poolkit_raw = con._con
        with self._mutex:
            self.stats.checkouts += 1
        if signals.connection_checked_out.receivers:
            signals.connection_checked_out.send(self.owner, wait_time=waited)
        return con

    def _wait(self, waiter: _Waiter, deadline: float) -> t.Any:
        """Sleep until a returning borrower hands us its connection, or time out."""
        handed = waiter.ready.acquire(timeout=max(0.0, deadline - time.monotonic()))
        with self._mutex:
            if not handed and waiter.con is _NOTHING:
                self._waiters.remove(waiter)
                waiter.con = None
        if waiter.con is None:
            self._time_out(deadline - self.settings.timeout)
        if waiter.con is _CLOSED:
            raise PoolClosedError(f"pool {self.settings.name!r} is closed")
        return waiter.con

    def _time_out(self, start: float) -> t.NoReturn:
        waited = time.monotonic() - start
        with self._mutex:
            self.stats.timeouts += 1
            error = PoolTimeout(self._timeout_message(waited))
        if signals.pool_timeout.receivers:
            signals.pool_timeout.send(self.owner, wait_time=waited)
        raise error

    def _hand_off(self, con: t.Any) -> bool:
        """Give *con* (or a slot to open one) to the longest waiter; call with the mutex held."""
        if not self._waiters:
            return False
        waiter = self._waiters.popleft()
        waiter.con = con
        waiter.ready.release()
        return True

    def connection(self, shareable: bool = False) -> PooledDedicatedDBConnection:
        """``PooledDB``'s API: a wrapper that returns the connection on ``close()``."""
        return PooledDedicatedDBConnection(self, self.checkout())

    def _open(self) -> t.Any:
        """Open a new steady connection outside the lock (the caller reserved a slot)."""
        try:
            con = self.steady_connection()
        except BaseException:
            with self._mutex:
                self._opening -= 1
                if self._waiters:  # let the next waiter try (and fail fast) instead of sleeping
                    self._opening += 1
                    self._hand_off(_SLOT)
            raise
        with self._mutex:
            self._opening -= 1
            self._connections += 1
        return con

    def _timeout_message(self, waited: float) -> str:
        g = self.gauges()
        return (f"pool {self.settings.name!r} ({self.settings.url.masked()}): no connection "
                f"free after {waited:.1f} s (size {g['size']}, in use {g['in_use']}, idle "
                f"{g['idle']}, waiting {g['waiting']}, max {g['max_connections']}); raise "
                "POOLKIT_MAX_CONNECTIONS, return connections sooner, or find leaks with "
                "POOLKIT_LEAK_THRESHOLD")

    # -- return -------------------------------------------------------------------------
    def checkin(self, con: t.Any) -> None:
        """Take a connection back: roll back only if needed, then keep it or close it."""
        raw = con._con
        reason: str | None = None
        reset = False
        if raw is not con.poolkit_raw:  # replaced by a failover while checked out
            self._count_replaced()
        if self._pymysql:  # inlined Driver.is_broken / needs_reset: this runs on every return
            broken = raw.poolkit_broken or raw._sock is None
            dirty = raw.server_status & 1  # SERVER_STATUS_IN_TRANS, read snapshots included
        else:
            broken = self.driver.is_broken(raw)
            dirty = self.driver.needs_reset(raw)
        if self._abandoned:
            reason = "fork"
        elif broken or con._closed:
            reason = "broken"
        elif dirty or self._always_reset or con._transaction:
            try:
                raw.rollback()
                reset = True
            except Exception:
                reason = "broken"
            con._transaction = False
        now = raw.poolkit_last_used = time.monotonic()  # the alive-bypass window starts here
        with self._mutex:
            self._connections -= 1
            if reset:
                self.stats.resets += 1
            if reason is None and self._pool_closed:
                reason = "close"
            if reason is None and self._waiters:
                # Straight to the longest waiter (as HikariCP and psycopg_pool do): letting the
                # returning thread take it back again starves waiters into PoolTimeout.
                self._connections += 1
                self._hand_off(con)
            elif reason is None and len(self._idle_cache) < self._maxcached:
                self._idle_cache.append(con)
            else:
                reason = reason or "overflow"
                if self._waiters and not self._pool_closed:
                    self._opening += 1  # the closed connection's slot goes to a waiter
                    self._hand_off(_SLOT)
        if reason is not None:
            self._discard(con, reason)
        if signals.connection_returned.receivers:
            signals.connection_returned.send(self.owner, held_time=now - con.poolkit_since)

    cache = checkin  # what PooledDedicatedDBConnection.close() calls

    def _count_replaced(self) -> None:
        # DBUtils' failover closed a broken connection and opened another in its place.
        with self._mutex:
            self.stats.connections_closed += 1
            self.stats.discarded += 1
        if signals.connection_discarded.receivers:
            signals.connection_discarded.send(self.owner, reason="broken")

    def _discard(self, con: t.Any, reason: str) -> None:
        if reason == "fork":
            _forget(con)
        else:
            con._close()
        with self._mutex:
            self.stats.connections_closed += 1
            if reason not in ("close", "overflow"):
                self.stats.discarded += 1
        if signals.connection_discarded.receivers:
            signals.connection_discarded.send(self.owner, reason=reason)

    # -- state --------------------------------------------------------------------------
    def gauges(self) -> dict[str, int]:
        """The pool's state now (call without holding the lock)."""
        idle = len(self._idle_cache)
        in_use: int = self._connections
        return {"size": idle + in_use + self._opening, "idle": idle, "in_use": in_use,
                "waiting": len(self._waiters), "opening": self._opening,
                "max_connections": self._maxconnections}

    def close(self) -> None:
        """Close idle connections now; connections in use are closed when returned."""
        with self._mutex:
            self._pool_closed = True
            idle: list[t.Any] = self._idle_cache
            self._idle_cache = []
            while self._hand_off(_CLOSED):
                pass
        for con in idle:
            self._discard(con, "close")

    def abandon(self) -> None:
        """After fork(): drop every inherited connection without touching the parent's sockets.

        Runs in the (single-threaded) child, where a lock held by a parent thread at fork time
        would never be released: the locks are replaced, not taken.
        """
        self._mutex = threading.Lock()
        self._lock = threading.Condition(self._mutex)
        self._abandoned = self._pool_closed = True
        idle: list[t.Any] = self._idle_cache
        self._idle_cache = []
        for con in idle:
            _forget(con)

    def __del__(self) -> None:
        if not getattr(self, "_abandoned", True):
            with contextlib.suppress(Exception):  # interpreter shutdown
                self.close()


def _forget(con: t.Any) -> None:
    # Close our file descriptor without sending COM_QUIT (which would end the parent's
    # session); drivers without a silent close are kept referenced forever instead.
    raw = con._con
    con._closed = True
    force_close = getattr(raw, "_force_close", None)
    if force_close is not None:
        force_close()
    else:
        _ABANDONED.append(raw)
