"""One named pool: settings in, :class:`~poolkit.connection.Connection` out.

``Pool`` owns a :class:`~poolkit.pooled.PooledEngine` (DBUtils' ``PooledDB`` underneath),
replaces it in a forked child, watches for leaked connections and reports stats.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import typing as t
from contextlib import contextmanager

from . import signals
from .config import PoolSettings
from .connection import Connection
from .drivers import Driver, get_driver
from .pooled import PooledEngine

logger = logging.getLogger("poolkit")


class Pool:
    """A pool of MySQL/MariaDB connections built from :class:`~poolkit.config.PoolSettings`."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.driver: Driver = get_driver(settings.url.driver)
        self._pid = os.getpid()
        self._engine = PooledEngine(settings, self.driver, self)
        self._borrowed: dict[int, tuple[float, list[traceback.FrameSummary]]] = {}
        self._leak_watch: threading.Thread | None = None
        self._stop = threading.Event()
        if settings.leak_threshold is not None:
            self._start_leak_watch(settings.leak_threshold)

    def prefill(self) -> None:
        """Open ``min_cached`` connections now (called at init_app; errors propagate)."""
        held = [self._checkout() for _ in range(self.settings.min_cached)]
        for pooled in held:
            self._checkin(pooled, 0.0)

    # -- borrowing ------------------------------------------------------------------------
    def _checkout(self) -> t.Any:
        if os.getpid() != self._pid:
            self._after_fork()
        pooled = self._engine.connection()
        if self._leak_watch is not None:
            self._borrowed[id(pooled)] = (time.monotonic(), traceback.extract_stack()[:-3])
        return pooled

    def _checkin(self, pooled: t.Any, checked_out_at: float) -> None:
        if self._leak_watch is not None:
            self._borrowed.pop(id(pooled), None)
        pooled.close()
        if signals.connection_returned.receivers:
            signals.connection_returned.send(self, held_time=time.monotonic() - checked_out_at)

    def checkout(self) -> Connection:
        """A checked-out :class:`Connection`; call its ``close()`` to give it back."""
        return Connection(self).acquire()

    @contextmanager
    def connection(self) -> t.Iterator[Connection]:
        """``with pool.connection() as conn:`` — returned to the pool whatever happens."""
        conn = self.checkout()
        try:
            yield conn
        finally:
            conn.close()

    # -- state ----------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        """Gauges and counters with stable keys (see :mod:`poolkit.stats`)."""
        engine = self._engine
        return engine.stats.snapshot(engine.gauges())

    def close(self) -> None:
        """Close idle connections; connections in use close when they come back."""
        self._stop.set()
        self._engine.close()

    def _after_fork(self) -> None:
        # gunicorn --preload / uWSGI without lazy-apps: the child inherited the parent's
        # sockets. Forget them (never send COM_QUIT on them) and start an empty engine.
        old = self._engine
        self._pid = os.getpid()
        self._engine = PooledEngine(self.settings, self.driver, self)
        self._borrowed.clear()
        old.abandon()
        if self.settings.leak_threshold is not None:
            self._stop = threading.Event()
            self._start_leak_watch(self.settings.leak_threshold)

    # -- leaks ----------------------------------------------------------------------------
    def _start_leak_watch(self, threshold: float) -> None:
        interval = max(0.05, min(threshold / 2, 5.0))
        thread = threading.Thread(target=self._watch_leaks, args=(threshold, interval),
                                  name=f"poolkit-leaks-{self.name}", daemon=True)
        self._leak_watch = thread
        thread.start()

    def _watch_leaks(self, threshold: float, interval: float) -> None:
        reported: set[int] = set()
        while not self._stop.wait(interval):
            now = time.monotonic()
            borrowed = dict(self._borrowed)
            reported &= set(borrowed)
            for key, (since, stack) in borrowed.items():
                held = now - since
                if held >= threshold and key not in reported:
                    reported.add(key)
                    self._engine.stats.leaks += 1
                    text = "".join(traceback.format_list(stack))
                    logger.warning("poolkit: connection of pool %r held for %.1f s (more than "
                                   "POOLKIT_LEAK_THRESHOLD=%g); borrowed at:\n%s",
                                   self.name, held, threshold, text)
                    if signals.connection_leaked.receivers:
                        signals.connection_leaked.send(self, held_time=held, stack=text)

    def __repr__(self) -> str:
        return f"<poolkit.Pool {self.name!r} {self.settings.url.masked()}>"
