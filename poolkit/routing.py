"""Read routing for replica binds: which pool serves ``db.using("replica")`` in this request.

A bind whose URL says ``target=replica`` is a *replica bind*. Its reads go to the replicas,
except when

* the request already wrote on the default pool and ``POOLKIT_READ_YOUR_WRITES`` is on (the
  default): the replica may not have the write yet, so the read goes to the primary. "The
  request wrote" is a fact of the app context, not of one handle: a handle closed early
  (``db.close()``) hands it on through :func:`carry_write`, so the next handle's reads still
  go to the primary;
* no replica is in bounds: every replica lags more than ``POOLKIT_MAX_REPLICA_LAG`` seconds,
  does not replicate, or cannot be reached. The read goes to the primary and the replica
  pool's ``stats()["replica_fallbacks"]`` counts it.

"The primary" is the app's default pool (``POOLKIT_DATABASE_URL``). When the default pool is
itself a replica pool there is nothing to fall back to: no replica in bounds is
:class:`~poolkit.errors.NoHostAvailableError` (a 503 in a view), as for any other target.
"""

from __future__ import annotations

import logging
import math
import typing as t

from flask import current_app, g, has_app_context
from werkzeug.exceptions import ServiceUnavailable

from .config import DEFAULT_BIND
from .errors import NoHostAvailableError
from .pool.writes import may_write as may_write

if t.TYPE_CHECKING:
    from .pool import Pool
    from .pool.connection import Connection

logger = logging.getLogger("poolkit")

#: flask.g key: True once a handle of the default pool in this app context wrote.
_WROTE_KEY = "_poolkit_wrote"


def carry_write(conn: t.Any) -> None:
    """Remember in the app context that *conn* (a handle about to be replaced) wrote."""
    if getattr(conn, "wrote", False) and has_app_context():
        setattr(g, _WROTE_KEY, True)


def request_wrote(connections: t.Mapping[str, t.Any]) -> bool:
    """True when this app context wrote on the default pool, through any of its handles."""
    main = connections.get(DEFAULT_BIND)
    if main is not None and getattr(main, "wrote", False):  # stress stand-ins: no flag
        return True
    return bool(has_app_context() and g.get(_WROTE_KEY, False))


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
    if pool.name == DEFAULT_BIND:
        return _default_replica(pool, replica)
    if read_your_writes and request_wrote(connections):
        return primary()
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


def _default_replica(pool: Pool, replica: t.Callable[[], Connection]) -> Connection:
    # The default pool reads from replicas: no primary to fall back on. Check out now, so that
    # "no replica" is NoHostAvailableError (503) here, never a fall back into this function.
    conn = replica()
    if not getattr(conn, "checked_out", True):
        try:
            conn.acquire()
        except NoHostAvailableError:
            conn.close()
            raise
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
