"""The Flask extension: ``Poolkit(app)`` / ``init_app`` and the ``db`` proxy.

``db`` is a ``LocalProxy``, like ``request``: it stands for the current app context's
connection of the default pool, checked out on first use and returned in
``teardown_appcontext`` (rolled back first if a transaction or snapshot is still open).
"""

from __future__ import annotations

import logging
import math
import typing as t
import weakref
from contextlib import contextmanager
from pathlib import Path

import click
import werkzeug.local
from flask import (
    Flask,
    appcontext_pushed,
    current_app,
    g,
    has_app_context,
    has_request_context,
    request,
    stream_with_context,
)
from flask.cli import NoAppException, ScriptInfo
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.local import LocalProxy

from .config import DEFAULT_BIND, PoolkitConfig, load_config
from .discovery import AppCommandConfigError, register_commands, resolving_command
from .errors import ConfigError, ConnectionReturnedError, NoHostAvailableError, PoolTimeout
from .pool import Pool
from .pool.connection import Connection
from .pool.handles import skip_frames_of
from .routing import carry_write, is_replica_pool, no_host_response, route_read

logger = logging.getLogger("poolkit")

EXTENSION_KEY = "poolkit"
_G_KEY = "_poolkit_connections"
_TORN_DOWN_KEY = "_poolkit_torn_down"
_PINNED_KEY = "_poolkit_pinned"  # binds kept for a streamed body (stream_with_db)

_OUTSIDE_CONTEXT = (
    "Working outside of application context: poolkit.db needs an app context to know which "
    "app's pool to use. Inside a view it just works; in a script, thread or test, wrap the "
    "code in 'with app.app_context():' or use 'with pool.connection() as conn:'."
)


class PoolkitState:
    """Per-app state, stored in ``app.extensions["poolkit"]``."""

    def __init__(self, extension: Poolkit, config: PoolkitConfig, pools: dict[str, Pool],
                 root_path: str) -> None:
        self.extension = extension
        self.config = config
        self.pools = pools
        self.root_path = root_path

    def pool(self, bind: str = DEFAULT_BIND) -> Pool:
        """The pool named *bind*; a clear error lists the configured names."""
        try:
            return self.pools[bind]
        except KeyError:
            names = ", ".join(repr(n) for n in self.pools)
            raise ConfigError(f"no pool named {bind!r} (configured: {names}); add it to "
                              "POOLKIT_BINDS") from None

    @property
    def sql_dir(self) -> Path:
        """POOLKIT_SQL_DIR, else ``sql/`` beside the app, else ``./sql``."""
        if self.config.sql_dir:
            return Path(self.config.sql_dir)
        beside = Path(self.root_path) / "sql"
        return beside if beside.is_dir() else Path("sql")


def _state_of(app: Flask) -> PoolkitState:
    state = app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise RuntimeError(f"The Flask app {app.name!r} is not registered with Poolkit: call "
                           "Poolkit(app) or pool.init_app(app) first.")
    return t.cast(PoolkitState, state)


# A dropped db handle's ResourceWarning names the view's line, not the proxy's or ours.
skip_frames_of(werkzeug.local.__file__, __file__)


def _context_connection(bind: str = DEFAULT_BIND) -> Connection:
    # Threads sharing this app context (asyncio.to_thread, copied contexts) may get here at
    # once: setdefault (atomic for a dict) lets exactly one Connection win, and the Connection
    # checks out once under its own lock.
    if not has_app_context():
        raise RuntimeError(_OUTSIDE_CONTEXT)
    connections: dict[str, Connection] | None = g.get(_G_KEY)
    if connections is None:
        if g.get(_TORN_DOWN_KEY):
            # A thread sharing this context (copy_context().run) after teardown: a new
            # checkout here would never be returned.
            raise ConnectionReturnedError(
                "db was used after its app context was torn down (a thread that shares the "
                "request's context outlived it): give such work its own "
                "'with poolkit.connection() as conn:' or finish it before the view returns")
        connections = g.setdefault(_G_KEY, {})
    conn = connections.get(bind)
    if conn is not None and bind == DEFAULT_BIND and not _spent(conn):
        return conn
    state = _state_of(current_app)
    pool = state.pool(bind)
    if is_replica_pool(pool):  # issue 14: read-your-writes, lag and outage fallbacks
        return route_read(pool, connections, lambda: _context_connection(DEFAULT_BIND),
                          read_your_writes=state.config.read_your_writes,
                          replica=lambda: _new_connection(connections, bind, pool))
    if conn is None or _spent(conn):
        # A handle closed early in this context (db.close()) is spent; db names a new one,
        # returned at teardown like the first. (poolkit.stress puts stand-ins in g.)
        conn = _new_connection(connections, bind, pool)
    return conn


def _spent(conn: t.Any) -> bool:
    return isinstance(conn, Connection) and conn._returned


def _new_connection(connections: dict[str, Connection], bind: str, pool: Pool) -> Connection:
    """The context's handle for *bind*: the current one unless spent (returned early)."""
    current = connections.get(bind)
    if current is not None and not _spent(current):
        return current
    fresh = Connection(pool, binder=_context_connection)
    fresh.label = _holder_label()
    if current is None:  # another thread sharing this context may have been first
        return connections.setdefault(bind, fresh)
    carry_write(current)  # "this request wrote" outlives the handle (read-your-writes)
    connections[bind] = fresh
    return fresh


def _holder_label() -> str | None:
    """'view 'index'' or 'command 'flask cleanup'': named by PoolTimeout's message."""
    if has_request_context():
        endpoint = request.endpoint
        return f"view {endpoint!r}" if endpoint else f"request {request.path!r}"
    command = click.get_current_context(silent=True)
    if command is not None:
        return f"command {command.command_path!r}"
    return None


def _close_pools(pools: list[Pool]) -> None:
    for pool in pools:
        pool.close()


def _context_pushed(sender: Flask, **extra: t.Any) -> None:
    # stream_with_context pushes the torn-down context again around the generator: db is
    # usable there (and returned at the next teardown).
    g.pop(_TORN_DOWN_KEY, None)


def _teardown(exc: BaseException | None) -> None:
    setattr(g, _TORN_DOWN_KEY, True)
    connections: dict[str, Connection] | None = g.pop(_G_KEY, None)
    if not connections:
        return
    pinned: dict[str, Connection] = g.get(_PINNED_KEY) or {}
    if pinned:  # a streamed body still runs on these: it returns them (stream_with_db)
        g.setdefault(_G_KEY, {}).update(pinned)
    closing = [c for c in connections.values() if c not in pinned.values()]
    if closing:
        _close_all(closing)


class _StreamedBody:
    """A response body on a connection checked out before the response started."""

    def __init__(self, body: t.Iterator[t.Any], bind: str, conn: Connection) -> None:
        self._body = body
        self._bind = bind
        self._conn = conn
        self._closed = False

    def __iter__(self) -> _StreamedBody:
        return self

    def __next__(self) -> t.Any:
        try:
            return next(self._body)
        except BaseException:
            # The body ended (or failed): give the connection back now, not only when the
            # server calls close() (a test client that read .data never does).
            self.close()
            raise

    def close(self) -> None:
        """Called when the body ended, and by the WSGI server when it or the client is done."""
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if has_app_context():
                (g.get(_PINNED_KEY) or {}).pop(self._bind, None)
            self._conn.close()


def stream_with_db(body: t.Iterator[t.Any], bind: str = DEFAULT_BIND) -> t.Iterable[t.Any]:
    """A streamed response body that uses ``db``, checked out *now*, in the view.

    ``Response(stream_with_db(rows()))``: a busy pool raises ``PoolTimeout`` in the view,
    which answers ``503`` with ``Retry-After`` before any byte is sent (a checkout inside the
    body would come after the ``200`` and its headers). The body runs in the request's
    context (``stream_with_context``) on that same connection, returned when the body ends
    or the client goes away.
    """
    conn = _context_connection(bind).acquire()
    pinned = g.get(_PINNED_KEY)
    if pinned is None:
        pinned = g.setdefault(_PINNED_KEY, {})
    pinned[bind] = conn
    try:
        streamed = stream_with_context(body)
    except BaseException:
        pinned.pop(bind, None)
        raise
    return _StreamedBody(iter(streamed), bind, conn)


def _close_all(connections: list[Connection]) -> None:
    # Every bind is returned even when returning one raises (a connection_returned receiver
    # raising a BaseException): the error propagates once the rest are back.
    try:
        connections[0].close()
    finally:
        if len(connections) > 1:
            _close_all(connections[1:])


def _pool_timeout_response(error: PoolTimeout) -> t.Any:
    """PoolTimeout in a view: ``503 Service Unavailable`` with ``Retry-After``, not a bare 500.

    Registered unless the app has its own PoolTimeout handler; the 503 passes through
    ``handle_http_exception``, so the app's handler for 503 (or HTTPException) shapes the page.
    """
    logger.warning("poolkit: answered 503: %s", error)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    timeout = _state_of(app).pool().settings.timeout
    unavailable = ServiceUnavailable(
        "The database is busy right now. Please try again shortly.",
        retry_after=max(1, math.ceil(timeout)))
    unavailable.original_exception = error  # type: ignore[attr-defined]  # as Flask's 500
    response = app.make_response(app.handle_http_exception(unavailable))
    # An app's own 503 handler builds its page; the client still learns when to come back.
    response.headers.setdefault("Retry-After", str(unavailable.retry_after))
    return response


class AppConfigError(ConfigError, NoAppException):
    """A POOLKIT_* config error raised while ``flask`` loads the app: one line, exit 1.

    As a ``NoAppException`` Flask's CLI prints it as ``Error: …`` instead of a traceback (and
    still lists the commands under ``--help``); as a ``ConfigError`` code that catches those
    keeps working.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        NoAppException.__init__(self, message)


def _load_config(app: Flask) -> PoolkitConfig:
    try:
        return load_config(app.config)
    except ConfigError as error:
        context = click.get_current_context(silent=True)
        if context is not None and context.find_object(ScriptInfo) is not None:
            if resolving_command(context):
                raise AppCommandConfigError(str(error)) from None
            raise AppConfigError(str(error)) from None
        raise


#: The current app context's connection of the default pool (``db.using(name)`` for others).
db: Connection = t.cast(Connection, LocalProxy(_context_connection))


class Poolkit:
    """Pooled MySQL/MariaDB connections for one or more Flask apps."""

    def __init__(self, app: Flask | None = None) -> None:
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the app's POOLKIT_* config, build its pools and register teardown and commands."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'Poolkit' instance has already been registered on this Flask app. Import "
                "and use that instance instead.")
        config = _load_config(app)
        pools = {name: Pool(settings) for name, settings in config.pools.items()}
        app.extensions[EXTENSION_KEY] = PoolkitState(self, config, pools, app.root_path)
        app.teardown_appcontext(_teardown)
        appcontext_pushed.connect(_context_pushed, app)
        if PoolTimeout not in app.error_handler_spec[None][None]:
            app.register_error_handler(PoolTimeout, _pool_timeout_response)
        if NoHostAvailableError not in app.error_handler_spec[None][None]:  # issue 14
            app.register_error_handler(NoHostAvailableError, no_host_response)
        # An app that is dropped (tests, app factories) must not leave its connections open.
        weakref.finalize(app, _close_pools, list(pools.values()))
        register_commands(app, config.commands_dirs)
        for pool in pools.values():
            pool.prefill()
        if config.metrics:
            # Imported only when asked for; after prefill, so that a gunicorn --preload master
            # that never serves a request never writes multiprocess gauges.
            from .metrics import install

            install(config.metrics, pools.values())
        self._apps.add(app)

    def _state(self) -> PoolkitState:
        if has_app_context():
            return _state_of(current_app)
        apps = list(self._apps)
        if len(apps) == 1:
            return _state_of(apps[0])
        raise RuntimeError("this Poolkit serves several apps: use it inside an app context "
                           "('with app.app_context():') so it knows which one")

    def get_pool(self, bind: str = DEFAULT_BIND) -> Pool:
        """The :class:`Pool` named *bind* of the current app."""
        return self._state().pool(bind)

    @contextmanager
    def connection(self, bind: str = DEFAULT_BIND) -> t.Iterator[Connection]:
        """A connection outside a request (threads, scripts, CLI), returned when the block ends."""
        with self.get_pool(bind).connection() as conn:
            yield conn

    def stats(self, bind: str = DEFAULT_BIND) -> dict[str, float]:
        """The named pool's stats (see :mod:`poolkit.stats`)."""
        return self.get_pool(bind).stats()

    def close(self) -> None:
        """Close every pool of every app this extension serves."""
        for app in list(self._apps):
            for pool in _state_of(app).pools.values():
                pool.close()
