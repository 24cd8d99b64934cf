"""Pool metrics under OpenTelemetry's semantic-convention names, for Prometheus or OpenTelemetry.

``POOLKIT_METRICS = "prometheus"`` (``pip install 'poolkit[metrics]'``) or ``"opentelemetry"``
(opentelemetry-api, with the SDK the app already configures). Each backend lives in its own
module and is imported only when chosen: with the key unset, neither this package nor
``prometheus_client`` nor ``opentelemetry`` is imported.

Both backends report the same figures per pool (``pool_name`` is the bind name and the
server, ``default@127.0.0.1:3306``; for a pool with several hosts the whole host list,
``default@db1:3306,db2:3306``, since its connections may be on any of them):

* gauges read from :meth:`poolkit.Pool.stats` when the metrics are collected (nothing is paid
  per checkout): connections by state (idle, used), max, idle max, idle min, pending requests;
* a counter of :class:`~poolkit.errors.PoolTimeout`;
* three histograms, one observation per event, fed by an observer set on each instrumented
  pool (:meth:`poolkit.Pool.add_observer`, not :mod:`poolkit.signals`: no blinker dispatch, and
  pools that are not instrumented pay nothing): the time to open a connection
  (``opened``), to obtain one (``checked_out``, the idle-cache fast path included: 0 s) and
  how long it was held (``returned``);
* for a pool with several hosts or a ``target``, the open connections on each host, labelled
  with the host and its last known role (``poolkit_host_connections`` /
  ``poolkit.host.connections``): after a failover it shows where the connections really are.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from ..pool import Pool

#: Histogram bounds in seconds: a checkout served from the idle cache waits 0 s, a connect on
#: loopback takes ~1 ms, a request holds a connection for ~1 ms to seconds.
BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
           2.5, 5.0, 10.0, 30.0)


def pool_name(pool: Pool) -> str:
    """``<bind>@<host>:<port>`` (or ``<bind>@<unix socket>``): unique per server in an app."""
    url = pool.settings.url
    socket = url.options.get("unix_socket")
    if socket:
        return f"{pool.name}@{socket}"
    if len(url.hosts) > 1:
        return f"{pool.name}@{url.host_list()}"
    return f"{pool.name}@{url.host}:{url.port}"


def host_connections(pool: Pool) -> list[tuple[str, str, int]]:
    """``(host, role, open connections)`` per host of a routed pool (no I/O); ``[]`` otherwise."""
    hosts = pool.hosts
    if not hosts.routed:
        return []
    return [(entry["host"], entry["role"] or "unknown", int(entry["connections"]))
            for entry in hosts.describe()]


def gauges(pool: Pool) -> dict[str, float]:
    """The pool's gauge values now, by semantic-convention name (without the prefix)."""
    stats = pool.stats()
    settings = pool.settings
    return {"count.idle": stats["idle"], "count.used": stats["in_use"],
            "max": stats["max_connections"], "idle.max": settings.max_cached,
            "idle.min": settings.min_cached, "pending_requests": stats["waiting"]}


def install(backend: str, pools: t.Iterable[Pool]) -> None:
    """Report *pools* through *backend* (``init_app`` calls this when POOLKIT_METRICS is set)."""
    if backend == "prometheus":
        from . import prometheus

        prometheus.instrument(pools)
    else:
        from . import otel

        otel.instrument(pools)
