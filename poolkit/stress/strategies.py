"""The three connection strategies ``flask pool-stress`` compares, behind one interface.

* ``global``: one PyMySQL connection opened once and shared by every thread, with no lock —
  what the classic lesson warns against;
* ``per-view``: ``pymysql.connect(...)`` with the URL's arguments and the driver's defaults
  inside every request, closed at its end (pgbench ``-C``, Django without persistent
  connections);
* ``pooled``: poolkit's pool, through the extension's ``db``.

``Strategy.connection()`` gives one request's connection with poolkit's API (``query``,
``scalar``, ``execute``, ``transaction``, ``cursor``…), so the same view code runs on all three.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import typing as t
from contextlib import contextmanager

import pymysql

from ..pool.connection import Connection
from ..pool.pool import Pool
from ..pool.pymysql_compat import force_close, shutdown_socket
from ..url import DatabaseURL
from ._private import context_connection

#: Read/write timeout (seconds) of the shared global connection: a thread whose reply was
#: eaten by another thread gives up instead of waiting forever.
GLOBAL_IO_TIMEOUT = 2.0


class RawConnection:
    """poolkit's connection API over a plain PyMySQL connection, opened on first use."""

    __slots__ = ("_con", "_depth", "_open", "_release")
    #: Read by the extension's ``db`` resolver (see ``_private``): this handle is never spent,
    #: ``close()`` only ends the request's use of the driver connection.
    _returned = False

    def __init__(self, open_: t.Callable[[], t.Any],
                 release: t.Callable[[t.Any], None] | None = None) -> None:
        self._open = open_
        self._release = release
        self._con: t.Any = None
        self._depth = 0

    @property
    def raw(self) -> t.Any:
        """The driver's connection (opened now if needed)."""
        con = self._con
        if con is None:
            con = self._con = self._open()
        return con

    def close(self) -> None:
        """End of the request: per-view closes its connection, global keeps it."""
        con, self._con = self._con, None
        if con is not None and self._release is not None:
            self._release(con)

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cursor(self, dict: bool = False) -> t.Any:
        """A driver cursor; ``dict=True`` gives rows as dicts."""
        return self.raw.cursor(pymysql.cursors.DictCursor if dict else None)

    def commit(self) -> None:
        """Commit the current transaction."""
        self.raw.commit()

    def rollback(self) -> None:
        """Roll back the current transaction."""
        self.raw.rollback()

    def _execute(self, sql: str, args: t.Any, dict: bool = False) -> t.Any:
        cursor = self.cursor(dict)
        cursor.execute(sql, args)
        return cursor

    def query(self, sql: str, args: t.Any = None) -> list[dict[str, t.Any]]:
        """Every row of a SELECT, as dicts."""
        with self._execute(sql, args, dict=True) as cursor:
            return list(cursor.fetchall())

    def query_one(self, sql: str, args: t.Any = None) -> dict[str, t.Any] | None:
        """The first row of a SELECT as a dict, or None."""
        with self._execute(sql, args, dict=True) as cursor:
            return t.cast("dict[str, t.Any] | None", cursor.fetchone())

    def scalar(self, sql: str, args: t.Any = None) -> t.Any:
        """The first column of the first row, or None."""
        with self._execute(sql, args) as cursor:
            row = cursor.fetchone()
        return row[0] if row else None

    def execute(self, sql: str, args: t.Any = None) -> int:
        """Run one statement; the number of affected rows."""
        with self._execute(sql, args) as cursor:
            return int(cursor.rowcount)

    def executemany(self, sql: str, seq: t.Iterable[t.Any]) -> int:
        """Run one statement per parameter set; the affected rows."""
        with self.cursor() as cursor:
            return int(cursor.executemany(sql, list(seq)) or 0)

    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`transaction`."""
        return self._depth > 0

    @contextmanager
    def transaction(self) -> t.Iterator[RawConnection]:
        """BEGIN … COMMIT, ROLLBACK if the block raises (nested blocks join the outer one)."""
        if self._depth:
            yield self
            return
        self.raw.begin()
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            self.raw.rollback()
            raise
        self._depth = 0
        self.raw.commit()

    def using(self, bind: str) -> Connection:
        """Another bind's pooled connection (only the default bind follows the strategy)."""
        return context_connection(bind)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.raw, name)


class Strategy:
    """How connections are obtained; :meth:`connection` gives one request's connection."""

    name: t.ClassVar[str] = ""
    #: True when ``db`` already resolves to this strategy through the extension.
    via_extension: t.ClassVar[bool] = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened = 0
        self._connect_time = 0.0
        self._connect_cpu = 0.0

    def request_connection(self) -> t.Any:
        """A new connection object for one request; the caller must ``close()`` it."""
        raise NotImplementedError

    @contextmanager
    def connection(self) -> t.Iterator[t.Any]:
        """``with strategy.connection() as conn:`` — one request's connection."""
        conn = self.request_connection()
        try:
            yield conn
        finally:
            conn.close()

    def connect_figures(self) -> tuple[int, float, float | None]:
        """Connections opened so far, seconds spent opening them, and CPU seconds if known."""
        with self._lock:
            return self._opened, self._connect_time, self._connect_cpu

    def _connect(self, kwargs: dict[str, t.Any]) -> t.Any:
        started, cpu = time.perf_counter(), time.thread_time()
        con = pymysql.connect(**kwargs)
        spent, cpu = time.perf_counter() - started, time.thread_time() - cpu
        with self._lock:
            self._opened += 1
            self._connect_time += spent
            self._connect_cpu += cpu
        return con

    def pool_figures(self) -> tuple[int, float, int] | None:
        """Checkouts, seconds waited for a connection and timeouts so far; None without a pool."""
        return None

    def abort(self) -> None:
        """Unblock threads stuck on a socket (the run is over)."""

    def close(self) -> None:
        """Release what the strategy holds."""


class GlobalStrategy(Strategy):
    """One connection shared by every thread, with no lock around its use."""

    name = "global"

    def __init__(self, url: DatabaseURL) -> None:
        super().__init__()
        kwargs = url.connect_kwargs()
        for key in ("read_timeout", "write_timeout"):
            kwargs[key] = min(kwargs.get(key) or GLOBAL_IO_TIMEOUT, GLOBAL_IO_TIMEOUT)
        self._kwargs = kwargs
        self._con: t.Any = None
        self._reopen = threading.Lock()

    def _shared(self) -> t.Any:
        con = self._con
        if con is None or not con.open:
            # Once a mix-up has killed the connection it is reopened, as an app calling
            # ping(reconnect=True) would do. The lock only keeps 16 threads from reopening
            # it 16 times; the connection itself is used with no lock at all.
            with self._reopen:
                con = self._con
                if con is None or not con.open:
                    con = self._con = self._connect(self._kwargs)
        return con

    def request_connection(self) -> RawConnection:
        return RawConnection(self._shared)

    def abort(self) -> None:
        shutdown_socket(self._con)

    def close(self) -> None:
        con, self._con = self._con, None
        if con is not None and con.open:
            try:
                con.close()
            except Exception:  # a corrupted protocol state: drop the socket
                force_close(con)


def _close(con: t.Any) -> None:
    con.close()


class PerViewStrategy(Strategy):
    """``pymysql.connect(...)`` with the driver's defaults in every request, closed at its end."""

    name = "per-view"

    def __init__(self, url: DatabaseURL) -> None:
        super().__init__()
        self._kwargs = url.connect_kwargs()

    def request_connection(self) -> RawConnection:
        return RawConnection(lambda: self._connect(self._kwargs), _close)


class PooledStrategy(Strategy):
    """poolkit's pool: the app's own, or one of *pool_size* on the same settings."""

    name = "pooled"

    def __init__(self, app_pool: Pool, pool_size: int) -> None:
        super().__init__()
        settings = app_pool.settings
        self.own_pool = pool_size != settings.max_connections
        if self.own_pool:
            settings = dataclasses.replace(
                settings, name=f"{settings.name}-stress", max_connections=pool_size,
                max_cached=pool_size, min_cached=min(settings.min_cached, pool_size))
            self.pool = Pool(settings)
        else:
            self.pool = app_pool
        self._base = self._counters()

    @property
    def via_extension(self) -> bool:  # type: ignore[override]
        return not self.own_pool

    def _counters(self) -> tuple[int, float]:
        stats = self.pool.stats()
        return int(stats["connections_opened"]), float(stats["connect_time_total"])

    def request_connection(self) -> Connection:
        return Connection(self.pool, binder=context_connection)

    def connect_figures(self) -> tuple[int, float, float | None]:
        opened, spent = self._counters()
        if opened < self._base[0]:  # the pool rebuilt its engine after fork(): counts restart
            self._base = (0, 0.0)
        return opened - self._base[0], spent - self._base[1], None

    def pool_figures(self) -> tuple[int, float, int] | None:
        stats = self.pool.stats()
        return int(stats["checkouts"]), float(stats["wait_time_total"]), int(stats["timeouts"])

    def close(self) -> None:
        if self.own_pool:
            self.pool.close()


def make_strategy(name: str, app_pool: Pool, pool_size: int) -> Strategy:
    """The strategy called *name* for the database of *app_pool*."""
    url = app_pool.settings.url
    if name == "global":
        return GlobalStrategy(url)
    if name == "per-view":
        return PerViewStrategy(url)
    if name == "pooled":
        return PooledStrategy(app_pool, pool_size)
    raise ValueError(f"unknown strategy {name!r}")
