"""What the engine's parts share: its state, and closing a connection the pool lets go.

:class:`~poolkit.pool.engine.PooledEngine` is assembled from :class:`EngineState`, the
waiting line (:mod:`.waiting`) and the return path (:mod:`.returning`); this base declares
the state they all read and write under the engine's lock.
"""

from __future__ import annotations

import collections
import threading
import typing as t

from .. import signals
from ..config import PoolSettings
from ..stats import PoolStats
from .dbutils_compat import SteadyConnection
from .drivers import Driver
from .observer import Observer


class EngineState:
    """The engine's state (set by ``PooledEngine.__init__``) and its smallest shared steps."""

    settings: PoolSettings
    driver: Driver
    owner: object
    observer: Observer | None
    stats: PoolStats
    _mutex: threading.Lock
    _waiters: collections.deque[t.Any]  # waiting.Waiter, first come first served
    _idle: list[SteadyConnection]
    _lent: set[SteadyConnection]
    _dropped: collections.deque[SteadyConnection]
    _opening: int
    _pool_closed: bool
    _abandoned: bool
    _always_reset: bool
    _max: int
    _max_idle: int
    pipeline_rollback: bool
    _return_action: t.Callable[[t.Any], int]

    def _close_con(self, con: SteadyConnection, reason: str) -> None:
        """Close a connection the pool no longer counts (the socket count follows, via
        :meth:`_raw_closed`)."""
        con.close_raw()
        if reason not in ("close", "overflow"):
            with self._mutex:
                self.stats.discarded += 1
        if signals.connection_discarded.receivers:
            signals.send(signals.connection_discarded, self.owner, reason=reason)

    def gauges(self) -> dict[str, int]:
        """The pool's state now (call without holding the lock)."""
        idle = len(self._idle)
        in_use = len(self._lent)
        return {"size": idle + in_use + self._opening, "idle": idle, "in_use": in_use,
                "waiting": len(self._waiters), "opening": self._opening,
                "max_connections": self._max}
