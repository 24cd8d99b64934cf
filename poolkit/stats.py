"""Pool statistics: counters (only grow) and gauges (the state now), with stable keys."""

from __future__ import annotations

import typing as t

#: Counters since the pool was created. Times are float seconds.
COUNTER_KEYS = (
    "checkouts", "timeouts", "connections_opened", "connections_closed", "connect_errors",
    "pings", "ping_failures", "resets", "discarded", "leaks", "dropped", "wait_time_total",
    "wait_time_max", "connect_time_total",
)
#: Gauges: the pool's state at the moment of the call.
GAUGE_KEYS = ("size", "idle", "in_use", "waiting", "opening", "max_connections")


class PoolStats:
    """Plain attribute counters, updated by the pool under its own lock (so they cost nothing)."""

    __slots__ = COUNTER_KEYS

    def __init__(self) -> None:
        self.checkouts = self.timeouts = 0
        self.connections_opened = self.connections_closed = self.connect_errors = 0
        self.pings = self.ping_failures = self.resets = self.discarded = self.leaks = 0
        self.dropped = 0
        self.wait_time_total = self.wait_time_max = self.connect_time_total = 0.0

    def snapshot(self, gauges: t.Mapping[str, int]) -> dict[str, float]:
        """One dict of every gauge and counter, in a stable key order."""
        values: dict[str, float] = {key: gauges[key] for key in GAUGE_KEYS}
        for key in COUNTER_KEYS:
            values[key] = getattr(self, key)
        return values
