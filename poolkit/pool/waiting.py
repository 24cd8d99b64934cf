"""The engine's waiting line: borrowers that found the pool full, served first come, first
served; a returned connection (or a free slot) goes straight to the longest waiter, and a
waiter gives up after ``timeout`` with a :class:`~poolkit.errors.PoolTimeout` that names who
holds the connections (:mod:`.holders`).
"""

from __future__ import annotations

import threading
import time
import typing as t

from .. import signals
from ..errors import PoolClosedError, PoolTimeout
from .engine_state import EngineState
from .holders import describe_budget, describe_holders
from .observer import failed

NOTHING = object()  # a waiter not served yet
SLOT = object()  # a waiter may open a new connection
CLOSED = object()  # the pool closed while waiting


class Waiter:
    """One borrower waiting for a connection; served first come, first served."""

    __slots__ = ("con", "ready")

    def __init__(self) -> None:
        self.con: t.Any = NOTHING
        self.ready = threading.Lock()
        self.ready.acquire()  # released by the hand-off


class WaitingLine(EngineState):
    """The engine's line of waiters (methods called with or without the lock, as noted)."""

    def _pass_slot(self) -> None:
        # A free slot goes to the longest waiter, who opens a connection in it (mutex held);
        # during an outage each waiter then fails fast with the connect error.
        if self._waiters and not self._pool_closed:
            self._opening += 1
            self._hand_off(SLOT)

    def _wait(self, waiter: Waiter, deadline: float) -> t.Any:
        """Sleep until a returning borrower hands us its connection, or time out."""
        try:
            handed = waiter.ready.acquire(timeout=max(0.0, deadline - time.monotonic()))
        except BaseException:
            self._leave(waiter)
            raise
        with self._mutex:
            if not handed and waiter.con is NOTHING:
                self._waiters.remove(waiter)
                waiter.con = None
        if waiter.con is None:
            self._time_out(deadline - self.settings.timeout)
        if waiter.con is CLOSED:
            raise PoolClosedError(f"pool {self.settings.name!r} is closed")
        return waiter.con

    def _leave(self, waiter: Waiter) -> None:
        """An interrupted waiter leaves the line; what it was handed goes to the next one."""
        close = None
        with self._mutex:
            got, waiter.con = waiter.con, None
            if got is NOTHING:
                self._waiters.remove(waiter)
            elif got is SLOT:
                self._opening -= 1
                self._pass_slot()
            elif got is not CLOSED and got is not None:
                # A clean connection (reset by its returner): next waiter, else idle.
                self._lent.discard(got)
                if self._waiters:
                    self._lent.add(got)
                    self._hand_off(got)
                elif len(self._idle) < self._max_idle and not self._pool_closed:
                    self._idle.append(got)
                else:
                    close = got
        if close is not None:
            self._close_con(close, "overflow")

    def _time_out(self, start: float) -> t.NoReturn:
        waited = time.monotonic() - start
        with self._mutex:
            self.stats.timeouts += 1
        error = PoolTimeout(self._timeout_message(waited))
        observer = self.observer
        if observer is not None:
            try:
                observer.timed_out()
            except Exception:
                failed(observer, "timed_out")
        if signals.pool_timeout.receivers:
            signals.send(signals.pool_timeout, self.owner, wait_time=waited)
        raise error

    def _hand_off(self, con: t.Any) -> bool:
        """Give *con* (or a slot to open one) to the longest waiter; call with the mutex held."""
        if not self._waiters:
            return False
        waiter = self._waiters.popleft()
        waiter.con = con
        waiter.ready.release()
        return True

    def _timeout_message(self, waited: float) -> str:
        g = self.gauges()
        with self._mutex:
            lent = list(self._lent)
        server_max = next((getattr(con.raw, "poolkit_server_max", None) for con in lent
                           if con.raw is not None), None)
        holders = describe_holders(lent)
        return (f"pool {self.settings.name!r} ({self.settings.url.masked()}): no connection "
                f"free after {waited:.1f} s (size {g['size']}, in use {g['in_use']}, idle "
                f"{g['idle']}, waiting {g['waiting']}, max {g['max_connections']})"
                + (f"; {holders}" if holders else "")
                + f"; {describe_budget(self.owner, server_max)}. Raise "
                "POOLKIT_MAX_CONNECTIONS, return connections sooner, or find leaks with "
                "POOLKIT_LEAK_THRESHOLD")
