"""The Flask extension: ``Poolkit(app)`` / ``init_app`` and the ``db`` proxy.

``db`` is a ``LocalProxy``, like ``request``: it stands for the current app context's
connection of the default pool, checked out on first use and returned in
``teardown_appcontext`` (rolled back first if a transaction or snapshot is still open).
"""

from __future__ import annotations

import typing as t
import weakref
from contextlib import contextmanager
from pathlib import Path

from flask import Flask, current_app, g, has_app_context
from werkzeug.local import LocalProxy

from .config import DEFAULT_BIND, PoolkitConfig, load_config
from .discovery import register_app_commands
from .errors import ConfigError
from .pool import Pool
from .pool.connection import Connection

EXTENSION_KEY = "poolkit"
_G_KEY = "_poolkit_connections"

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


def _context_connection(bind: str = DEFAULT_BIND) -> Connection:
    if not has_app_context():
        raise RuntimeError(_OUTSIDE_CONTEXT)
    connections: dict[str, Connection] | None = g.get(_G_KEY)
    if connections is None:
        connections = {}
        setattr(g, _G_KEY, connections)
    conn = connections.get(bind)
    if conn is None:
        pool = _state_of(current_app).pool(bind)
        conn = connections[bind] = Connection(pool, binder=_context_connection)
    return conn


def _close_pools(pools: list[Pool]) -> None:
    for pool in pools:
        pool.close()


def _teardown(exc: BaseException | None) -> None:
    connections: dict[str, Connection] | None = g.pop(_G_KEY, None)
    if connections:
        for conn in connections.values():
            conn.close()


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
        config = load_config(app.config)
        pools = {name: Pool(settings) for name, settings in config.pools.items()}
        app.extensions[EXTENSION_KEY] = PoolkitState(self, config, pools, app.root_path)
        app.teardown_appcontext(_teardown)
        # An app that is dropped (tests, app factories) must not leave its connections open.
        weakref.finalize(app, _close_pools, list(pools.values()))
        register_app_commands(app, config.commands_dirs)
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
