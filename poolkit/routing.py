"""Read routing for replica binds: which pool serves ``db.using("replica")`` in this request.

A bind whose URL says ``target=replica`` is a *replica bind*. Its reads go to the replicas,
except when

* the request already wrote on the default pool and ``POOLKIT_READ_YOUR_WRITES`` is on (the
  default): the replica may not have the write yet, so the read goes to the primary;
* no replica is in bounds: every replica lags more than ``POOLKIT_MAX_REPLICA_LAG`` seconds,
  does not replicate, or cannot be reached. The read goes to the primary and the replica
  pool's ``stats()["replica_fallbacks"]`` counts it.

"The primary" is the app's default pool (``POOLKIT_DATABASE_URL``).
"""

from __future__ import annotations

import logging
import math
import typing as t

from flask import current_app
from werkzeug.exceptions import ServiceUnavailable

from .config import DEFAULT_BIND
from .errors import NoHostAvailableError

if t.TYPE_CHECKING:
    from .pool import Pool
    from .pool.connection import Connection

logger = logging.getLogger("poolkit")


def is_replica_pool(pool: Pool) -> bool:
    """True for a pool whose URL asks for replicas (``target=replica``)."""
    return pool.settings.url.target == "replica"


def route_read(pool: Pool, connections: t.Mapping[str, Connection],
               primary: t.Callable[[], Connection], *, read_your_writes: bool,
               replica: t.Callable[[], Connection]) -> Connection:
    """The connection that serves a read on the replica bind *pool* in this request.

    *connections* are the request's connections so far, *primary* gives the default pool's
    and *replica* the replica bind's (both created on demand).
    """
    if read_your_writes:
        main = connections.get(DEFAULT_BIND)
        if main is not None and getattr(main, "wrote", False):  # stress stand-ins: no flag
            return main
    current = connections.get(pool.name)
    if current is not None and getattr(current, "checked_out", True):
        return current  # one replica connection for the rest of the request
    if not pool.hosts.replicas_in_bounds():
        why = ("every replica is past POOLKIT_MAX_REPLICA_LAG or not replicating"
               if pool.hosts.max_replica_lag is not None else "no host is a replica")
        return _fall_back(pool, primary, why)
    conn = replica()
    try:
        conn.acquire()
    except NoHostAvailableError as error:
        conn.close()
        return _fall_back(pool, primary, str(error))
    return conn


def _fall_back(pool: Pool, primary: t.Callable[[], Connection], why: str) -> Connection:
    if pool.hosts.count("replica_fallbacks") == 1 or logger.isEnabledFor(logging.DEBUG):
        logger.warning("poolkit: pool %r reads from the primary: %s", pool.name, why)
    return primary()


def no_host_response(error: NoHostAvailableError) -> t.Any:
    """NoHostAvailableError in a view: ``503 Service Unavailable`` with ``Retry-After``.

    No server of the wanted role answers: a failover in progress or an outage, which a client
    or load balancer should retry, not a bug (500). Registered unless the app has its own
    handler; the 503 goes through ``handle_http_exception`` so the app's 503 page applies.
    """
    logger.warning("poolkit: answered 503: %s", error)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    timeout = app.extensions["poolkit"].pool().settings.failover_timeout
    unavailable = ServiceUnavailable(
        "The database is unavailable right now (failover in progress?). Please try again "
        "shortly.", retry_after=max(1, math.ceil(timeout)))
    unavailable.original_exception = error  # type: ignore[attr-defined]  # as Flask's 500
    return app.handle_http_exception(unavailable)
