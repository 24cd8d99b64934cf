"""The ``creator`` DBUtils calls for every new raw connection: connect, then the pool's marks.

Each raw connection gets its alive-bypass window (no ping within ``ping_interval`` of its last
use, never past the server's ``wait_timeout``) and its retirement time (``max_lifetime`` with
jitter, so that connections opened together do not expire together).
"""

from __future__ import annotations

import random
import threading
import time
import typing as t

from .. import signals
from ..config import PoolSettings
from ..stats import PoolStats
from .drivers import Driver
from .hosts import HostSelector
from .observer import Observer, failed


class Engine(t.Protocol):
    """What the creator needs of the engine it opens connections for (no import of it)."""

    settings: PoolSettings
    driver: Driver
    hosts: HostSelector
    stats: PoolStats
    owner: object
    observer: Observer | None
    _mutex: threading.Lock


class Creator:
    """The ``creator`` DBUtils calls for every new connection (also on failover)."""

    def __init__(self, engine: Engine) -> None:
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
            with engine._mutex:
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
        with engine._mutex:
            engine.stats.connect_time_total += now - started
        observer = engine.observer
        if observer is not None:
            try:
                observer.opened(now - started)
            except Exception:
                failed(observer, "opened")
        if signals.connection_opened.receivers:
            signals.send(signals.connection_opened, engine.owner, connect_time=now - started)
        return raw
