"""Prometheus: pool figures in ``prometheus_client``'s default registry, one process or many.

Names are OpenTelemetry's semantic conventions in Prometheus form (``db.client.connection.count``
→ ``db_client_connection_count``), labelled ``pool_name`` (and ``state`` for the count)::

    db_client_connection_count{pool_name, state="idle"|"used"}   gauge
    db_client_connection_max / _idle_max / _idle_min              gauge
    db_client_connection_pending_requests                         gauge
    db_client_connection_timeouts_total                           counter
    db_client_connection_create_time_seconds                      histogram
    db_client_connection_wait_time_seconds                        histogram
    db_client_connection_use_time_seconds                         histogram

One process: a collector reads every pool's ``stats()`` when the registry is scraped.

Several processes (gunicorn, uWSGI), ``PROMETHEUS_MULTIPROC_DIR`` set: a scrape reaches one
worker, which reads the other workers' figures from the files in that directory, so a collector
that reads ``stats()`` would only see its own process. Instead each worker writes its gauges
into its file from its first checkout on, every :data:`PUBLISH_INTERVAL` seconds and at each
scrape it serves; the gauges use ``multiprocess_mode="livesum"``: the sum over the live workers,
which is what the server sees (``max`` is then workers × pool, to compare with the server's
``max_connections``). Counters and histograms are summed over every worker, dead ones included.
The gunicorn ``child_exit`` hook must call ``prometheus_client.multiprocess.mark_process_dead``
so that a worker that exited leaves the gauges (see docs/deploy.md).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import typing as t
import weakref

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..pool.observer import Observer
from . import BUCKETS, gauges, host_connections, pool_name

if t.TYPE_CHECKING:
    from ..pool import Pool

#: Seconds between two writes of a worker's gauges in multiprocess mode.
PUBLISH_INTERVAL = 1.0

#: Gauge name → (help, key in :func:`poolkit.metrics.gauges`); the count has a ``state`` label.
_GAUGES = {
    "db_client_connection_max": ("The maximum number of open connections allowed.", "max"),
    "db_client_connection_idle_max": ("The maximum number of idle open connections allowed.",
                                      "idle.max"),
    "db_client_connection_idle_min": ("The minimum number of idle open connections allowed.",
                                      "idle.min"),
    "db_client_connection_pending_requests": (
        "The number of current pending requests for an open connection.", "pending_requests"),
}
_HOSTS = "poolkit_host_connections"
_HOSTS_HELP = ("Open connections of a pool with several hosts on each host, by the host's last "
               "known role.")
_ROLES = ("primary", "replica", "unknown")
_COUNT = "db_client_connection_count"
_COUNT_HELP = "The number of connections that are currently in the state given by 'state'."


def multiprocess_mode() -> bool:
    """True when prometheus_client writes to ``PROMETHEUS_MULTIPROC_DIR`` (decided at import)."""
    return values.ValueClass is not values.MutexValue


class _Instrumented(Observer):
    """One pool's histogram children and timeout counter: the pool's observer.

    The pool holds it (``Pool.add_observer``) and it holds the pool weakly, so an entry in
    :attr:`_Metrics.pools` lives as long as its pool and no other pool ever calls it.
    """

    __slots__ = ("__weakref__", "create", "name", "pool", "publisher", "timeouts", "use", "wait")

    def __init__(self, pool: Pool, name: str, metrics: _Metrics) -> None:
        self.pool = weakref.ref(pool)
        self.name = name
        self.create = metrics.create.labels(name)
        self.wait = metrics.wait.labels(name)
        self.use = metrics.use.labels(name)
        self.timeouts = metrics.timeouts.labels(name)
        self.publisher = metrics.publisher

    def opened(self, connect_time: float) -> None:
        self.create.observe(connect_time)

    def checked_out(self, wait_time: float) -> None:
        self.wait.observe(wait_time)
        publisher = self.publisher
        if publisher is not None and publisher.pending:
            publisher.start()

    def returned(self, held_time: float) -> None:
        self.use.observe(held_time)

    def timed_out(self) -> None:
        self.timeouts.inc()

    def __repr__(self) -> str:
        return f"<poolkit.metrics.prometheus observer {self.name!r}>"


class _Metrics:
    """This process's histograms, counter and instrumented pools (one instance, created once)."""

    def __init__(self) -> None:
        self.create = Histogram("db_client_connection_create_time_seconds",
                                "The time it took to create a new connection.", ["pool_name"],
                                buckets=BUCKETS)
        self.wait = Histogram("db_client_connection_wait_time_seconds",
                              "The time it took to obtain an open connection from the pool.",
                              ["pool_name"], buckets=BUCKETS)
        self.use = Histogram("db_client_connection_use_time_seconds",
                             "The time between borrowing a connection and returning it.",
                             ["pool_name"], buckets=BUCKETS)
        self.timeouts = Counter("db_client_connection_timeouts",
                                "The number of connection timeouts that have occurred trying "
                                "to obtain a connection from the pool.", ["pool_name"])
        # Keyed by id(pool); weakref.finalize drops the entry when the pool goes.
        self.pools: dict[int, _Instrumented] = {}
        self.gone: collections.deque[str] = collections.deque()  # names of pools gone
        self.lock = threading.Lock()
        self.publisher: _Publisher | None = None
        if multiprocess_mode():
            self.publisher = _Publisher(self)
        else:
            REGISTRY.register(PoolCollector(self))

    def add(self, pool: Pool) -> None:
        if self.gone:
            self._remove_gone()
        with self.lock:
            if id(pool) in self.pools:
                return
            taken = {entry.name for entry in self.pools.values() if entry.pool() is not None}
            base = name = pool_name(pool)
            n = 1
            while name in taken:  # two apps on the same bind and server in one process
                n += 1
                name = f"{base}#{n}"
            entry = self.pools[id(pool)] = _Instrumented(pool, name, self)
            weakref.finalize(pool, self._forget, id(pool), name)
        pool.add_observer(entry)

    def _forget(self, key: int, name: str) -> None:
        # A finalizer, which may run at any allocation (inside add(), or inside
        # prometheus_client under its own plain lock): it only notes the name; add() removes
        # the series later, outside any lock.
        self.pools.pop(key, None)
        self.gone.append(name)

    def _remove_gone(self) -> None:
        # A pool that is gone takes its series along: a later pool given the same name (an
        # app built again, a test) starts from zero instead of inheriting the old counts.
        while self.gone:
            name = self.gone.popleft()
            if any(entry.name == name for entry in list(self.pools.values())):
                continue
            for metric in (self.create, self.wait, self.use, self.timeouts):
                with contextlib.suppress(KeyError):
                    metric.remove(name)

    def live(self) -> list[tuple[str, Pool]]:
        out = []
        for entry in list(self.pools.values()):
            pool = entry.pool()
            if pool is not None:
                out.append((entry.name, pool))
        return out


class PoolCollector(Collector):
    """Reads every instrumented pool's gauges at scrape time (one-process mode)."""

    def __init__(self, metrics: _Metrics) -> None:
        self._metrics = metrics

    def _families(self) -> tuple[GaugeMetricFamily, dict[str, GaugeMetricFamily],
                                 GaugeMetricFamily]:
        count = GaugeMetricFamily(_COUNT, _COUNT_HELP, labels=["pool_name", "state"])
        others = {name: GaugeMetricFamily(name, text, labels=["pool_name"])
                  for name, (text, _) in _GAUGES.items()}
        hosts = GaugeMetricFamily(_HOSTS, _HOSTS_HELP, labels=["pool_name", "host", "role"])
        return count, others, hosts

    def describe(self) -> t.Iterable[Metric]:
        count, others, hosts = self._families()
        return [count, *others.values(), hosts]

    def collect(self) -> t.Iterable[Metric]:
        count, others, hosts = self._families()
        for name, pool in self._metrics.live():
            now = gauges(pool)
            count.add_metric([name, "idle"], now["count.idle"])
            count.add_metric([name, "used"], now["count.used"])
            for metric, (_, key) in _GAUGES.items():
                others[metric].add_metric([name], now[key])
            for host, role, connections in host_connections(pool):
                hosts.add_metric([name, host, role], connections)
        return [count, *others.values(), hosts]


class _Publisher:
    """Multiprocess mode: writes this worker's gauges into its file, from its first checkout on."""

    def __init__(self, metrics: _Metrics) -> None:
        self._metrics = metrics
        self.count = Gauge(_COUNT, _COUNT_HELP, ["pool_name", "state"],
                           multiprocess_mode="livesum")
        self.gauges = {name: Gauge(name, text, ["pool_name"], multiprocess_mode="livesum")
                       for name, (text, _) in _GAUGES.items()}
        self.hosts = Gauge(_HOSTS, _HOSTS_HELP, ["pool_name", "host", "role"],
                           multiprocess_mode="livesum")
        self.pending = True  # no thread yet in this process
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        # Threads do not survive fork(): the child starts its own at its first checkout. A
        # gunicorn --preload master that never checks out never writes (its pools are idle).
        self.pending = True
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if not self.pending:
                return
            self.pending = False
        self.publish()
        threading.Thread(target=self._run, name="poolkit-metrics", daemon=True).start()

    def _run(self) -> None:
        stop = threading.Event()  # created here: under gevent it is the patched Event
        pid = os.getpid()
        while not stop.wait(PUBLISH_INTERVAL) and os.getpid() == pid:
            self.publish()

    def publish(self) -> None:
        for name, pool in self._metrics.live():
            now = gauges(pool)
            self.count.labels(name, "idle").set(now["count.idle"])
            self.count.labels(name, "used").set(now["count.used"])
            for metric, (_, key) in _GAUGES.items():
                self.gauges[metric].labels(name).set(now[key])
            for host, role, connections in host_connections(pool):
                # Every role written (0 but the current one): the files of multiprocess
                # mode keep a series until it is overwritten, and a role change moves it.
                for each in _ROLES:
                    self.hosts.labels(name, host, each).set(connections if each == role else 0)


_metrics: _Metrics | None = None
_metrics_lock = threading.Lock()


def instrument(pools: t.Iterable[Pool]) -> None:
    """Report *pools* in prometheus_client's default registry (idempotent per pool)."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = _Metrics()
    for pool in pools:
        _metrics.add(pool)


def pool_label(pool: Pool) -> str | None:
    """The ``pool_name`` label of *pool* (None if it is not instrumented)."""
    entry = _metrics.pools.get(id(pool)) if _metrics is not None else None
    return entry.name if entry is not None else None


def exposition() -> tuple[bytes, str]:
    """The text a ``/metrics`` view returns, and its content type, in either mode.

    In multiprocess mode it writes this worker's gauges first and reads every worker's file
    through a fresh registry with a ``MultiProcessCollector`` (as prometheus_client advises).
    """
    if not multiprocess_mode():
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    publisher = _metrics.publisher if _metrics is not None else None
    if publisher is not None and not publisher.pending:  # this worker has served: be exact
        publisher.publish()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
