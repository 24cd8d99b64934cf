"""One named pool: settings in, :class:`~poolkit.pool.connection.Connection` out.

``Pool`` owns a :class:`~poolkit.pool.engine.PooledEngine` (DBUtils' ``PooledDB`` underneath),
replaces it in a forked child, watches for leaked connections and reports stats.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import traceback
import typing as t
import weakref

from .. import signals
from ..config import PoolSettings
from .connection import Connection
from .drivers import Driver, get_driver
from .engine import PooledEngine
from .holders import POOLS, record_holder
from .hosts import HostSelector
from .observer import Observer, combine, without

logger = logging.getLogger("poolkit")
_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep

_pools: weakref.WeakSet[Pool] = POOLS
_observers_lock = threading.Lock()  # add_observer / remove_observer: read, combine, write


def _after_fork_in_child() -> None:
    global _observers_lock
    _observers_lock = threading.Lock()  # a parent thread may have held it at fork time
    for pool in list(_pools):
        if pool._pid != os.getpid():
            pool._after_fork()


# gunicorn --preload, uWSGI without lazy-apps: a pool created before fork() is detected in the
# child by its pid and replaced there, so the hot path carries no pid check.
os.register_at_fork(after_in_child=_after_fork_in_child)


class _Borrow:
    """One checkout, as the leak watch sees it."""

    __slots__ = ("reported", "since", "stack")

    def __init__(self, since: float, stack: list[traceback.FrameSummary]) -> None:
        self.since = since
        self.stack = stack
        self.reported = False


class Pool:
    """A pool of MySQL/MariaDB connections built from :class:`~poolkit.config.PoolSettings`."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.driver: Driver = get_driver(settings.url.driver)
        self._pid = os.getpid()
        self._engine = PooledEngine(settings, self.driver, self)
        # Leak watch: one entry per borrow (not per connection, which is re-borrowed).
        self._borrowed: dict[int, _Borrow] = {}
        self._borrows = itertools.count()
        self._leak_lock = threading.Lock()
        self._leak_watch: threading.Thread | None = None
        self._stop = threading.Event()
        self._checkout: t.Callable[[], t.Any]
        self._engine_checkout: t.Callable[[], t.Any]
        self._checkin: t.Callable[[t.Any], None]
        self._bind_engine()
        if settings.leak_threshold is not None:
            self._start_leak_watch(settings.leak_threshold)
        _pools.add(self)

    def prefill(self) -> None:
        """Open ``min_cached`` connections now (called at init_app; errors propagate)."""
        held = [self._checkout() for _ in range(self.settings.min_cached)]
        for con in held:
            self._checkin(con)

    # -- borrowing ------------------------------------------------------------------------
    def _bind_engine(self) -> None:
        # The hot path calls the engine directly (through the hosts' borrow re-check, a no-op
        # for one plain host); the leak watch wraps it when enabled.
        self._engine_checkout = self._engine.hosts.guard(self._engine.checkout,
                                                          self._engine.checkin)
        if self.settings.leak_threshold is None:
            self._checkout = self._engine_checkout
            self._checkin = self._engine.checkin
        else:
            self._checkout = self._checkout_watched
            self._checkin = self._checkin_watched

    def _checkout_watched(self) -> t.Any:
        con = self._engine_checkout()
        # The borrower's frames only: how many poolkit frames sit above varies by entry point.
        stack = [f for f in traceback.extract_stack() if not f.filename.startswith(_HERE)]
        key = con.poolkit_borrow = next(self._borrows)
        self._borrowed[key] = _Borrow(time.monotonic(), stack)
        return con

    def _checkin_watched(self, con: t.Any) -> None:
        borrow = self._borrowed.pop(getattr(con, "poolkit_borrow", -1), None)
        threshold = self.settings.leak_threshold
        if borrow is not None and threshold is not None:
            held = time.monotonic() - borrow.since
            if held >= threshold:  # held too long, and returned before the watch saw it
                self._report_leak(borrow, held, threshold)
        self._engine.checkin(con)

    def _checkin_dropped(self, con: t.Any) -> None:
        """Take back a connection whose handle was garbage-collected without ``close()``.

        The same reset and fork safety as :meth:`_checkin`, counted in ``stats()["dropped"]``;
        safe to call from a finalizer (see :meth:`PooledEngine.checkin_dropped`).
        """
        self._borrowed.pop(getattr(con, "poolkit_borrow", -1), None)
        self._engine.checkin_dropped(con)

    def connection(self) -> Connection:
        """``with pool.connection() as conn:`` — returned to the pool whatever happens.

        Without ``with``, call ``conn.close()`` to give it back.
        """
        conn = Connection(self)
        con = conn._con = self._checkout()
        record_holder(con, conn._where, None)
        return conn

    checkout = connection  # the name for code that closes the connection itself

    # -- observers (see poolkit.pool.observer) ---------------------------------------------
    @property
    def observer(self) -> Observer | None:
        """This pool's :class:`~poolkit.pool.observer.Observer` (None: one attribute check)."""
        return self._engine.observer

    @observer.setter
    def observer(self, observer: Observer | None) -> None:
        self._engine.observer = observer

    def add_observer(self, observer: Observer) -> None:
        """Call *observer* too, after the observers already added (poolkit.metrics uses this)."""
        with _observers_lock:
            self._engine.observer = combine(self._engine.observer, observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop calling *observer* (no error if it was not added)."""
        with _observers_lock:
            self._engine.observer = without(self._engine.observer, observer)

    # -- state ----------------------------------------------------------------------------
    @property
    def hosts(self) -> HostSelector:
        """The pool's hosts: role, lag and connections of each (issue 14)."""
        return self._engine.hosts

    def stats(self) -> dict[str, float]:
        """Gauges and counters with stable keys (see :mod:`poolkit.stats`)."""
        engine = self._engine
        values = engine.stats.snapshot(engine.gauges())
        if engine.hosts.routed:  # issue 14: a multi-host / role-routed pool
            values.update(engine.hosts.counters)
        return values

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._stop.is_set()

    def close(self) -> None:
        """Close idle connections; connections in use close when they come back."""
        self._stop.set()
        self._engine.close()

    def _after_fork(self) -> None:
        # gunicorn --preload / uWSGI without lazy-apps: the child inherited the parent's
        # sockets. Detach them (never send COM_QUIT on them) and start an empty engine. The
        # child runs this single-threaded: locks and events a parent thread may have held at
        # fork time are replaced, never taken.
        old = self._engine
        self._pid = os.getpid()
        self._engine = PooledEngine(self.settings, self.driver, self)
        self._engine.observer = old.observer  # the child's pool is observed as the parent's
        self._bind_engine()
        self._borrowed.clear()
        self._leak_lock = threading.Lock()  # a parent thread may have held it at fork time
        self._stop = threading.Event()
        old.abandon()
        if self.settings.leak_threshold is not None:
            self._start_leak_watch(self.settings.leak_threshold)

    # -- leaks ----------------------------------------------------------------------------
    def _start_leak_watch(self, threshold: float) -> None:
        interval = max(0.05, min(threshold / 2, 5.0))
        thread = threading.Thread(target=self._watch_leaks, args=(threshold, interval),
                                  name=f"poolkit-leaks-{self.name}", daemon=True)
        self._leak_watch = thread
        thread.start()

    def _watch_leaks(self, threshold: float, interval: float) -> None:
        while not self._stop.wait(interval):
            now = time.monotonic()
            for borrow in list(self._borrowed.values()):
                held = now - borrow.since
                if held >= threshold and not borrow.reported:
                    self._report_leak(borrow, held, threshold)

    def _report_leak(self, borrow: _Borrow, held: float, threshold: float) -> None:
        # The watch thread and the returning borrower may both see it: report once.
        with self._leak_lock:
            if borrow.reported:
                return
            borrow.reported = True
            with self._engine._mutex:
                self._engine.stats.leaks += 1
        text = "".join(traceback.format_list(borrow.stack))
        logger.warning("poolkit: connection of pool %r held for %.1f s (more than "
                       "POOLKIT_LEAK_THRESHOLD=%g); borrowed at:\n%s",
                       self.name, held, threshold, text)
        if signals.connection_leaked.receivers:
            signals.send(signals.connection_leaked, self, held_time=held, stack=text)

    def __repr__(self) -> str:
        return f"<poolkit.Pool {self.name!r} {self.settings.url.masked()}>"
