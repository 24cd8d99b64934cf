"""OpenTelemetry: pool figures through opentelemetry-api's meter, semantic-convention names.

Instruments of the meter ``poolkit`` (the global MeterProvider unless one is given):

=========================================  ==========================  ==============
``db.client.connection.count``             observable up-down counter  ``{connection}``
``db.client.connection.max``               observable up-down counter  ``{connection}``
``db.client.connection.idle.max``          observable up-down counter  ``{connection}``
``db.client.connection.idle.min``          observable up-down counter  ``{connection}``
``db.client.connection.pending_requests``  observable up-down counter  ``{request}``
``db.client.connection.timeouts``          observable counter          ``{timeout}``
``db.client.connection.create_time``       histogram                   ``s``
``db.client.connection.wait_time``         histogram                   ``s``
``db.client.connection.use_time``          histogram                   ``s``
=========================================  ==========================  ==============

Attributes: ``db.client.connection.pool.name`` (``default@127.0.0.1:3306``) and, on the count,
``db.client.connection.state`` (``idle`` or ``used``). The observable instruments read
``Pool.stats()`` when the reader collects; the histograms record one value per event, from
the pool's observer (:mod:`poolkit.pool.observer`). Each
process exports its own figures (its resource tells the workers apart), so several gunicorn
workers need nothing more.
"""

from __future__ import annotations

import threading
import typing as t
import weakref

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from ..pool.observer import Observer
from . import BUCKETS, gauges, host_connections, pool_name

if t.TYPE_CHECKING:
    from ..pool import Pool

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
HOST = "server.address"  # OpenTelemetry's name for the server a client talks to
ROLE = "poolkit.host.role"

#: Instrument name → (unit, description, key in :func:`poolkit.metrics.gauges`).
_UP_DOWN = {
    "db.client.connection.max": ("{connection}",
                                 "The maximum number of open connections allowed.", "max"),
    "db.client.connection.idle.max": (
        "{connection}", "The maximum number of idle open connections allowed.", "idle.max"),
    "db.client.connection.idle.min": (
        "{connection}", "The minimum number of idle open connections allowed.", "idle.min"),
    "db.client.connection.pending_requests": (
        "{request}", "The number of current pending requests for an open connection.",
        "pending_requests"),
}


class _Recorder(Observer):
    """One pool's observer: records its three histograms with the pool's attributes."""

    __slots__ = ("_create", "_use", "_wait", "attributes")

    def __init__(self, instruments: _Instruments, attributes: dict[str, str]) -> None:
        self.attributes = attributes
        self._create = instruments.create.record
        self._wait = instruments.wait.record
        self._use = instruments.use.record

    def opened(self, connect_time: float) -> None:
        self._create(connect_time, self.attributes)

    def checked_out(self, wait_time: float) -> None:
        self._wait(wait_time, self.attributes)

    def returned(self, held_time: float) -> None:
        self._use(held_time, self.attributes)

    # timed_out: the timeouts counter is observable, read from Pool.stats() at collection.

    def __repr__(self) -> str:
        return f"<poolkit.metrics.otel observer {self.attributes[POOL_NAME]!r}>"


class _Instruments:
    """The instruments of one meter and the pools they report."""

    def __init__(self, meter: metrics.Meter) -> None:
        # id(pool) → (pool, attributes); the pool holds its _Recorder (Pool.add_observer)
        self.pools: dict[int, tuple[weakref.ref[Pool], dict[str, str]]] = {}
        self._lock = threading.Lock()
        self.create = meter.create_histogram(
            "db.client.connection.create_time", unit="s",
            description="The time it took to create a new connection.",
            explicit_bucket_boundaries_advisory=BUCKETS)
        self.wait = meter.create_histogram(
            "db.client.connection.wait_time", unit="s",
            description="The time it took to obtain an open connection from the pool.",
            explicit_bucket_boundaries_advisory=BUCKETS)
        self.use = meter.create_histogram(
            "db.client.connection.use_time", unit="s",
            description="The time between borrowing a connection and returning it.",
            explicit_bucket_boundaries_advisory=BUCKETS)
        meter.create_observable_up_down_counter(
            "db.client.connection.count", callbacks=[self._count], unit="{connection}",
            description="The number of connections that are currently in the state described "
                        "by the state attribute.")
        for name, (unit, text, key) in _UP_DOWN.items():
            meter.create_observable_up_down_counter(
                name, callbacks=[self._gauge(key)], unit=unit, description=text)
        meter.create_observable_up_down_counter(
            "poolkit.host.connections", callbacks=[self._hosts], unit="{connection}",
            description="Open connections of a pool with several hosts on each host, by the "
                        "host's last known role.")
        meter.create_observable_counter(
            "db.client.connection.timeouts", callbacks=[self._timeouts], unit="{timeout}",
            description="The number of connection timeouts that have occurred trying to obtain "
                        "a connection from the pool.")

    def add(self, pool: Pool) -> None:
        with self._lock:
            if id(pool) in self.pools:
                return
            attributes = {POOL_NAME: pool_name(pool)}
            self.pools[id(pool)] = (weakref.ref(pool), attributes)
            weakref.finalize(pool, self.pools.pop, id(pool), None)
        pool.add_observer(_Recorder(self, attributes))

    def _live(self) -> list[tuple[Pool, dict[str, str]]]:
        out = []
        for ref, attributes in list(self.pools.values()):
            pool = ref()
            if pool is not None:
                out.append((pool, attributes))
        return out

    def _count(self, options: CallbackOptions) -> t.Iterable[Observation]:
        for pool, attributes in self._live():
            now = gauges(pool)
            yield Observation(now["count.idle"], {**attributes, STATE: "idle"})
            yield Observation(now["count.used"], {**attributes, STATE: "used"})

    def _gauge(self, key: str) -> t.Callable[[CallbackOptions], t.Iterable[Observation]]:
        def callback(options: CallbackOptions) -> t.Iterable[Observation]:
            for pool, attributes in self._live():
                yield Observation(gauges(pool)[key], attributes)
        return callback

    def _hosts(self, options: CallbackOptions) -> t.Iterable[Observation]:
        for pool, attributes in self._live():
            for host, role, connections in host_connections(pool):
                yield Observation(connections, {**attributes, HOST: host, ROLE: role})

    def _timeouts(self, options: CallbackOptions) -> t.Iterable[Observation]:
        for pool, attributes in self._live():
            yield Observation(pool.stats()["timeouts"], attributes)


#: id(provider) → (provider, its instruments); the provider is kept so that its id stays unique.
_instruments: dict[int, tuple[MeterProvider | None, _Instruments]] = {}
_lock = threading.Lock()


def instrument(pools: t.Iterable[Pool], meter_provider: MeterProvider | None = None) -> None:
    """Report *pools* through the ``poolkit`` meter of *meter_provider* (default: the global one).

    The global provider may be set later: opentelemetry-api's proxy meter forwards to it.
    """
    from .. import __version__

    with _lock:
        key = id(meter_provider)
        entry = _instruments.get(key)
        if entry is None:
            meter = metrics.get_meter("poolkit", __version__, meter_provider=meter_provider)
            entry = _instruments[key] = (meter_provider, _Instruments(meter))
        instruments = entry[1]
    for pool in pools:
        instruments.add(pool)
