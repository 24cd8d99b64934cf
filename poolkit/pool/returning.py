"""The engine's return path: take a connection back and give it exactly what it needs.

Nothing when clean; the read snapshot's ``ROLLBACK`` written without waiting for its answer
(read at the next checkout); a full session reset when the session changed; closing when it
is broken or holds an unread result (see docs/pool.md). A connection of another process
(inherited across ``fork()``) is detached, never touched.
"""

from __future__ import annotations

import logging
import time
import typing as t

from .. import signals
from .dbutils_compat import SteadyConnection
from .drivers import DISCARD, REOPEN, RESET, ROLLBACK, UNREAD, Driver
from .observer import failed
from .pymysql_compat import send_rollback
from .waiting import WaitingLine

logger = logging.getLogger("poolkit")

# Connections inherited across fork() whose driver cannot close them silently: closing
# would send COM_QUIT on the parent's session, so the child keeps them referenced forever.
_ABANDONED: list[t.Any] = []

_DISCARD_REASONS = {DISCARD: "broken", UNREAD: "unread", REOPEN: "reset"}


class Returning(WaitingLine):
    """Return, reset and hand-back of dropped handles' connections."""

    def checkin(self, con: SteadyConnection) -> None:
        """Take a connection back: reset only what the borrower left behind, then keep it."""
        if con.poolkit_owner is not t.cast(object, self) or self._abandoned:
            detach(con, self.driver)  # another process's connection (fork): never touch it
            return
        if con not in self._lent:  # returned twice: it may be another borrower's by now
            logger.warning("poolkit: pool %r: a connection was returned twice; ignored",
                           self.settings.name)
            return
        con.poolkit_gen += 1  # every cursor and db.raw of the ended borrow is dead now
        raw = con.raw
        action = self._return_action(raw)
        if not action and con.in_transaction:  # DBUtils' begin() without commit
            action = ROLLBACK
        if self._always_reset and action < RESET:
            action = RESET
        reason: str | None = None
        if con.closed:
            reason = "broken"
        elif action:
            reason = self._clean(con, raw, action)
        now = raw.poolkit_last_used = time.monotonic()  # the alive-bypass window starts here
        with self._mutex:
            self._lent.discard(con)
            if reason is None and action:
                self.stats.resets += 1
            if reason is None and self._pool_closed:
                reason = "close"
            if reason is None and self._waiters:
                # Straight to the longest waiter (as HikariCP and psycopg_pool do): letting the
                # returning thread take it back again starves waiters into PoolTimeout.
                self._lent.add(con)
                self._hand_off(con)
            elif reason is None and len(self._idle) < self._max_idle:
                self._idle.append(con)
            else:
                reason = reason or "overflow"
                self._pass_slot()  # the closed connection's slot goes to a waiter
        if reason is not None:
            self._close_con(con, reason)
        observer = self.observer
        if observer is not None:
            try:
                observer.returned(now - con.poolkit_since)
            except Exception:
                failed(observer, "returned")
        if signals.connection_returned.receivers:
            signals.send(signals.connection_returned, self.owner,
                         held_time=now - con.poolkit_since)
        if self._dropped:
            self._drain_dropped()

    def checkin_dropped(self, con: SteadyConnection) -> None:
        """Take back the connection of a handle garbage-collected without ``close()``.

        A finalizer runs wherever the garbage collector happens to run -- possibly in this
        very thread while it holds the pool's lock (which is not reentrant). So the connection
        is queued, and returned now only when the lock is free (then no critical section of
        this thread was interrupted); else by the next checkout or return.
        """
        self._dropped.append(con)
        if self._mutex.acquire(blocking=False):
            self._mutex.release()
            self._drain_dropped()

    def _drain_dropped(self) -> None:
        while True:
            try:
                con = self._dropped.popleft()
            except IndexError:
                return
            with self._mutex:
                self.stats.dropped += 1
            self.checkin(con)

    def _clean(self, con: SteadyConnection, raw: t.Any, action: int) -> str | None:
        """Roll back or reset *raw*; the reason to discard it instead, if any."""
        if action > RESET:
            return _DISCARD_REASONS[action]
        try:
            if action == ROLLBACK:
                if self.pipeline_rollback:
                    send_rollback(raw)  # its answer is read at the next checkout
                    con.poolkit_pending = True
                else:
                    raw.rollback()
            else:
                self.driver.reset(raw)
        except Exception:
            return "broken"
        except BaseException:  # interrupted mid-protocol: the connection cannot be reused
            with self._mutex:
                self._lent.discard(con)
                self._pass_slot()
            self._close_con(con, "broken")
            raise
        finally:
            con.in_transaction = False
        return None


def detach(con: SteadyConnection, driver: Driver) -> None:
    """Drop *con* without a word to the server: its session belongs to another process."""
    if con.closed:
        return
    raw = con.raw
    con.detach()
    if not driver.detach(raw):
        _ABANDONED.append(raw)
