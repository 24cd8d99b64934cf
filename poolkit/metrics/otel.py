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
``Pool.stats()`` when the reader collects; the histograms record one value per signal. Each
process exports its own figures (its resource tells the workers apart), so several gunicorn
workers need nothing more.
"""

from __future__ import annotations

import threading
import typing as t
import weakref

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from .. import signals
from . import BUCKETS, gauges, pool_name

if t.TYPE_CHECKING:
    from ..pool import Pool

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"

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


class _Instruments:
    """The instruments of one meter and the pools they report."""

    def __init__(self, meter: metrics.Meter) -> None:
        # id(pool) → (pool, attributes, its receivers: alive as long as the entry)
        self.pools: dict[int, tuple[weakref.ref[Pool], dict[str, str], tuple[t.Any, ...]]] = {}
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
        meter.create_observable_counter(
            "db.client.connection.timeouts", callbacks=[self._timeouts], unit="{timeout}",
            description="The number of connection timeouts that have occurred trying to obtain "
                        "a connection from the pool.")

    def add(self, pool: Pool) -> None:
        if id(pool) in self.pools:
            return
        attributes = {POOL_NAME: pool_name(pool)}
        create, wait, use = self.create.record, self.wait.record, self.use.record

        def opened(sender: t.Any, connect_time: float = 0.0, **_: t.Any) -> None:
            create(connect_time, attributes)

        def checked_out(sender: t.Any, wait_time: float = 0.0, **_: t.Any) -> None:
            wait(wait_time, attributes)

        def returned(sender: t.Any, held_time: float = 0.0, **_: t.Any) -> None:
            use(held_time, attributes)

        # For this pool only, held weakly: the entry keeps them until the pool is collected,
        # then blinker drops them (see poolkit.metrics.prometheus._connect).
        self.pools[id(pool)] = (weakref.ref(pool), attributes, (opened, checked_out, returned))
        weakref.finalize(pool, self.pools.pop, id(pool), None)
        signals.connection_opened.connect(opened, sender=pool)
        signals.connection_checked_out.connect(checked_out, sender=pool)
        signals.connection_returned.connect(returned, sender=pool)

    def _live(self) -> list[tuple[Pool, dict[str, str]]]:
        out = []
        for ref, attributes, _ in list(self.pools.values()):
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
