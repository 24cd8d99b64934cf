"""The engine: DBUtils' ``PooledDB`` with the slow parts moved out of its lock.

``PooledDB`` opens, pings and rolls back connections while it holds the pool's lock, waits
for a free connection forever, hands out the oldest idle connection first and rolls back on
every return. This subclass keeps its connection class (``SteadyDBConnection`` failover,
through :mod:`poolkit.pool.dbutils_compat`) and changes these decisions:

* connects, pings, resets and signals happen outside the lock, so a burst of new
  connections opens in parallel and a slow signal receiver stalls only its own thread;
* waiters are served first come, first served (a returned connection is handed straight to
  the longest waiter) and give up after ``timeout`` seconds with
  :class:`~poolkit.errors.PoolTimeout`; a waiter interrupted by any exception leaves the
  line, and what was handed to it goes to the next waiter or the idle list;
* the idle cache is LIFO: the most recently used connection is the warmest and the one
  whose ping can be skipped (used less than ``ping_interval`` seconds ago);
* a returned connection gets exactly what it needs (see docs/pool.md): nothing when clean,
  a rollback for an open transaction or snapshot, a full session reset when the session
  changed, closing when it is broken or holds an unread result; it is retired at checkout
  when broken, past its lifetime or idle longer than ``idle_timeout`` or ``wait_timeout``;
* every connection knows the engine that issued it: after ``fork()`` the child's pool has a
  new engine, and a connection inherited from the parent is detached, never rolled back,
  reset or closed on the parent's socket.

The engine is assembled from its parts: the state they share (:mod:`.engine_state`), the
waiting line (:mod:`.waiting`) and the return path (:mod:`.returning`); checkout, health and
fork live here.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import typing as t

from dbutils.pooled_db import PooledDB

from .. import signals
from ..config import PoolSettings
from ..errors import PoolClosedError
from ..stats import PoolStats
from .creator import Creator
from .dbutils_compat import SteadyConnection
from .drivers import Driver, is_retry_safe
from .hosts import HostSelector
from .observer import Observer, failed
from .pymysql_compat import finish_pending, return_action
from .returning import Returning, detach
from .waiting import CLOSED, SLOT, Waiter

__all__ = ["PooledEngine", "detach"]


class PooledEngine(Returning, PooledDB):  # type: ignore[misc]
    """``PooledDB`` with a deadline, LIFO reuse and no I/O under the lock (see module doc)."""

    def __init__(self, settings: PoolSettings, driver: Driver, owner: object) -> None:
        self.settings = settings
        self.driver = driver
        self.owner = owner
        # The pool's observer (Pool.observer): read once per event, outside the lock.
        self.observer: Observer | None = None
        self.driver_kwargs = settings.driver_kwargs()
        self.hosts = HostSelector(  # issue 14: multi-host URLs, roles, replica lag
            settings.url, driver, self.driver_kwargs, max_replica_lag=settings.max_replica_lag,
            failover_timeout=settings.failover_timeout,
            allowed_states=settings.galera_allowed_states)
        self.stats = PoolStats()
        self._pid = os.getpid()
        # A plain lock (C-level enter/exit) on the hot path; each waiter sleeps on its own lock.
        self._mutex = threading.Lock()
        self._waiters: collections.deque[Waiter] = collections.deque()
        self._idle: list[SteadyConnection] = []
        self._lent: set[SteadyConnection] = set()  # checked out: len() is in_use
        # Returned by a garbage-collected handle; drained outside the lock (see checkin_dropped).
        self._dropped: collections.deque[SteadyConnection] = collections.deque()
        self._opening = 0
        self._pool_closed = False
        self._abandoned = False
        self._always_reset = settings.reset == "always"
        self._max = settings.max_connections
        self._max_idle = settings.max_cached
        self._max_usage = settings.max_usage
        # The read snapshot's ROLLBACK is written at return and its answer read at the next
        # checkout (PyMySQL only; mysqlclient has no way to split a command from its answer).
        self.pipeline_rollback = driver.name == "pymysql"
        # One call less per return: the driver's decision itself (see Driver.return_action).
        self._return_action = return_action if driver.name == "pymysql" else driver.return_action
        self._creator_fn = Creator(self)
        super().__init__(
            self._creator_fn, mincached=0, maxcached=settings.max_cached, maxshared=0,
            maxconnections=settings.max_connections, blocking=settings.blocking,
            maxusage=settings.max_usage or None, setsession=None,  # run by _Creator
            reset=False, failures=driver.failures, ping=(1, self._is_alive),
            isfatal=is_retry_safe,
        )

    def steady_connection(self) -> SteadyConnection:
        """A new steady connection (DBUtils failover) that reports to this engine."""
        return SteadyConnection(self, self._creator_fn, maxusage=self._max_usage,
                                failures=self.driver.failures, ping=(1, self._is_alive),
                                isfatal=is_retry_safe)

    # -- raw connection accounting (called by SteadyConnection, never under the lock) ------
    def _raw_stored(self, con: SteadyConnection, replaced: bool) -> None:
        with self._mutex:
            self.stats.connections_opened += 1
            if replaced:  # DBUtils' failover closed a broken connection and opened another
                self.stats.discarded += 1
            else:
                # A checkout's new connection: its reserved slot becomes a lent connection in
                # the same step that counts it opened (opened - closed == size - opening).
                self._opening -= 1
                self._lent.add(con)
        if replaced and signals.connection_discarded.receivers:
            signals.send(signals.connection_discarded, self.owner, reason="broken")

    def _raw_closed(self, con: SteadyConnection) -> None:
        with self._mutex:
            self.stats.connections_closed += 1

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

    def _retire_reason(self, con: SteadyConnection, now: float) -> str | None:
        raw = con.raw
        if con.closed or self.driver.is_broken(raw):
            return "broken"
        if now > raw.poolkit_expires:
            return "lifetime"
        if self._max_usage and con.usage >= self._max_usage:
            return "usage"
        idle = now - raw.poolkit_last_used
        wait_timeout = getattr(raw, "poolkit_wait_timeout", 0.0)
        if idle > self.settings.idle_timeout > 0 or (wait_timeout and idle > wait_timeout - 1):
            return "idle"
        return None

    # -- checkout -----------------------------------------------------------------------
    def checkout(self) -> SteadyConnection:
        """Check out a steady connection, waiting at most ``settings.timeout`` seconds."""
        if self._dropped:
            self._drain_dropped()
        con = None
        with self._mutex:
            idle = self._idle
            if idle and not self._waiters and not self._pool_closed:
                # Fast path: the warmest idle connection, used moments ago, needs no check.
                candidate = idle[-1]
                raw = candidate.raw
                now = time.monotonic()
                if (now - raw.poolkit_last_used < raw.poolkit_bypass
                        and now < raw.poolkit_expires
                        and not (self._max_usage and candidate.usage >= self._max_usage)):
                    con = idle.pop()
                    self._lent.add(con)
                    self.stats.checkouts += 1
        if con is None:
            return self._checkout_slow()
        if con.poolkit_pending:
            con = self._finish_pending(con)
        con.poolkit_since = now
        observer = self.observer
        if observer is not None:
            try:  # inline on the fast path: no extra call (see _observe_checked_out)
                observer.checked_out(0.0)
            except Exception:
                failed(observer, "checked_out")
            except BaseException:
                self.checkin(con)
                raise
        if signals.connection_checked_out.receivers:
            self._send_checked_out(con, 0.0)
        return con

    def _observe_checked_out(self, observer: Observer, con: SteadyConnection,
                             waited: float) -> None:
        try:
            observer.checked_out(waited)
        except Exception:
            failed(observer, "checked_out")
        except BaseException:  # KeyboardInterrupt in the observer: the caller never gets con
            self.checkin(con)
            raise

    def _send_checked_out(self, con: SteadyConnection, waited: float) -> None:
        try:
            signals.send(signals.connection_checked_out, self.owner, wait_time=waited)
        except BaseException:  # KeyboardInterrupt in a receiver: the caller never gets con
            self.checkin(con)
            raise

    def _checkout_slow(self) -> SteadyConnection:
        start = time.monotonic()
        deadline = start + (self.settings.timeout if self.settings.blocking else 0.0)
        retired: list[tuple[SteadyConnection, str]] = []
        con: SteadyConnection | None = None
        waiter: Waiter | None = None
        must_open = False
        with self._mutex:
            if self._pool_closed:
                raise PoolClosedError(f"pool {self.settings.name!r} is closed")
            idle = self._idle
            while idle and not self._waiters:
                candidate = idle.pop()
                reason = self._retire_reason(candidate, start)
                if reason is None:
                    con = candidate
                    break
                retired.append((candidate, reason))
            if con is not None:
                self._lent.add(con)
            elif not self._waiters and len(self._lent) + self._opening < self._max:
                self._opening += 1  # reserve a slot; the connect happens outside the lock
                must_open = True
            elif deadline > start:
                waiter = Waiter()  # wait in line: first come, first served
                self._waiters.append(waiter)
        # From here on an exception (a signal handler's included) must give back what this
        # borrower holds: the connection, the reserved slot, or its place in line.
        try:
            for old, reason in retired:
                self._close_con(old, reason)
            if waiter is not None:
                got = self._wait(waiter, deadline)
                if got is SLOT:
                    must_open = True
                else:
                    con = got
            elif con is None and not must_open:
                self._time_out(start)
            waited = time.monotonic() - start
            with self._mutex:
                stats = self.stats
                stats.wait_time_total += waited
                if waited > stats.wait_time_max:
                    stats.wait_time_max = waited
            if con is not None and ((con.poolkit_pending and not self._read_pending(con))
                                    or con.ping_check() is False):
                # Dead, and DBUtils could not reopen it: close it and open one in its slot.
                with self._mutex:
                    self._lent.discard(con)
                    self._opening += 1
                    must_open = True
                dead, con = con, None
                self._close_con(dead, "broken")
            if must_open:
                con = self.steady_connection()  # now lent (see _raw_stored)
                must_open = False
        except BaseException:
            self._give_up(con, must_open)
            raise
        assert con is not None
        con.poolkit_since = time.monotonic()
        with self._mutex:
            self.stats.checkouts += 1
        observer = self.observer
        if observer is not None:
            self._observe_checked_out(observer, con, waited)
        if signals.connection_checked_out.receivers:
            self._send_checked_out(con, waited)
        return con

    @staticmethod
    def _read_pending(con: SteadyConnection) -> bool:
        """Read the pipelined ROLLBACK's answer; False if the connection failed it."""
        con.poolkit_pending = False
        try:
            finish_pending(con.raw)
        except Exception:  # closed, killed, timed out: replaced, never the borrower's error
            return False
        return True

    def _finish_pending(self, con: SteadyConnection) -> SteadyConnection:
        """The fast path's :meth:`_read_pending`: a connection that fails it is replaced."""
        try:
            ok = self._read_pending(con)
        except BaseException:  # interrupted mid-read: the protocol state is unknown
            self._give_up(con, False)
            raise
        if ok:
            return con
        with self._mutex:
            self._lent.discard(con)
            self._opening += 1
        self._close_con(con, "broken")
        try:
            return self.steady_connection()  # now lent (see _raw_stored)
        except BaseException:
            self._give_up(None, True)
            raise

    def _give_up(self, con: SteadyConnection | None, must_open: bool) -> None:
        """A checkout failed or was interrupted: release its slot or connection."""
        with self._mutex:
            if must_open:
                self._opening -= 1
                self._pass_slot()
            if con is not None:  # interrupted mid-ping: the protocol state is unknown
                self._lent.discard(con)
                self._pass_slot()
        if con is not None:
            self._close_con(con, "broken")


    # -- return -------------------------------------------------------------------------

    # -- state --------------------------------------------------------------------------

    def close(self) -> None:
        """Close idle connections now; connections in use are closed when returned."""
        with self._mutex:
            self._pool_closed = True
            idle = self._idle
            self._idle = []
            while self._hand_off(CLOSED):
                pass
        for con in idle:
            self._close_con(con, "close")

    def abandon(self) -> None:
        """After fork(): detach every inherited connection without touching the parent's
        sockets. Runs in the (single-threaded) child, where a lock held by a parent thread
        at fork time would never be released: the lock is replaced, not taken."""
        self._mutex = threading.Lock()
        self._abandoned = self._pool_closed = True
        inherited = [*self._idle, *self._lent]
        self._idle = []
        self._lent = set()
        self._waiters.clear()
        for con in inherited:
            detach(con, self.driver)

    def __del__(self) -> None:
        if not getattr(self, "_abandoned", True) and getattr(self, "_pid", 0) == os.getpid():
            with contextlib.suppress(Exception):  # interpreter shutdown
                self.close()
