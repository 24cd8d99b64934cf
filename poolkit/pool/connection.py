"""The connection a borrower sees: DB-API compatible, plus ``query``/``execute``/``transaction``.

A :class:`Connection` checks out its pooled connection on first use and gives it back on
:meth:`close`; the pool rolls it back first if a transaction or read snapshot is still open,
so nothing is ever committed implicitly.

``cursor()`` hands out DBUtils' failover cursors. The helpers (``query``, ``execute``, …) run
on the driver's cursor directly, which is several times cheaper, with the same failover rule:
a statement is re-run on a fresh connection only when the driver marked the failure
retry-safe (see :func:`poolkit.pool.drivers.is_retry_safe`).
"""

from __future__ import annotations

import itertools
import typing as t
from contextlib import contextmanager, suppress

from .drivers import is_retry_safe

if t.TYPE_CHECKING:
    from .pool import Pool

Row = dict[str, t.Any]
Params = t.Sequence[t.Any] | t.Mapping[str, t.Any] | None

_savepoints = itertools.count(1)


class Connection:
    """A pooled connection, checked out lazily and returned by :meth:`close`."""

    __slots__ = ("_binder", "_con", "_depth", "_pool", "wrote")

    def __init__(self, pool: Pool, binder: t.Callable[[str], Connection] | None = None) -> None:
        self._pool = pool
        self._con: t.Any = None  # DBUtils' SteadyDBConnection while checked out
        self._binder = binder
        self._depth = 0
        #: True once this handle ran anything but the read helpers (query, query_one, scalar):
        #: read-your-writes then sends the request's replica reads to the primary (issue 14).
        self.wrote = False

    # -- life cycle -----------------------------------------------------------------------
    def _acquire(self) -> t.Any:
        con = self._con
        if con is None:
            con = self._con = self._pool._checkout()
        return con

    def acquire(self) -> Connection:
        """Check out now rather than on first use (surfaces PoolTimeout early)."""
        self._acquire()
        return self

    @property
    def checked_out(self) -> bool:
        """True while this object holds a pooled connection."""
        return self._con is not None

    def close(self) -> None:
        """Give the connection back to the pool (rolled back there if still dirty)."""
        con = self._con
        if con is not None:
            self._con = None
            self._depth = 0
            self._pool._checkin(con)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- DB-API ---------------------------------------------------------------------------
    def cursor(self, dict: bool = False) -> t.Any:
        """A DB-API cursor (DBUtils failover cursor); ``dict=True`` gives rows as dicts."""
        con = self._acquire()
        self.wrote = True  # issue 14: what a cursor runs is unknown: assume a write
        if dict:
            return con.cursor(self._pool.driver.dict_cursor)
        return con.cursor()

    def commit(self) -> None:
        """Commit the current transaction."""
        self.wrote = True  # issue 14
        self._acquire().commit()

    def rollback(self) -> None:
        """Roll back the current transaction."""
        self._acquire().rollback()

    @property
    def raw(self) -> t.Any:
        """The driver's own connection (no failover, no bookkeeping): use with care."""
        return self._acquire()._con

    def __getattr__(self, name: str) -> t.Any:
        # Anything else DBUtils or the driver offers (begin, ping, insert_id, escape, …).
        con = self._acquire()
        try:
            return getattr(con, name)
        except AttributeError:
            return getattr(con._con, name)

    # -- conveniences ---------------------------------------------------------------------
    def _execute(self, sql: str, args: Params, cursor_class: t.Any = None) -> t.Any:
        con = self._con or self._acquire()
        cursor = con._con.cursor(cursor_class)
        try:
            cursor.execute(sql, args)
        except con._failures as error:
            cursor.close()
            if con._transaction or not is_retry_safe(error):
                raise
            cursor = self._reconnect(con, error).cursor(cursor_class)
            cursor.execute(sql, args)
        con._usage += 1
        return cursor

    @staticmethod
    def _reconnect(con: t.Any, error: BaseException) -> t.Any:
        # The statement cannot have taken effect (the driver said so): re-run it once on a
        # fresh connection, as DBUtils' failover does for its own cursors.
        try:
            fresh = con._create()
        except Exception:
            raise error from None
        con._close()
        con._store(fresh)
        return fresh

    def query(self, sql: str, args: Params = None) -> list[Row]:
        """Run a SELECT and return every row as a dict."""
        cursor = self._execute(sql, args, self._pool.driver.dict_cursor)
        rows = cursor.fetchall()
        cursor.close()
        return rows if isinstance(rows, list) else list(rows)

    def query_one(self, sql: str, args: Params = None) -> Row | None:
        """Run a SELECT and return its first row as a dict, or None."""
        cursor = self._execute(sql, args, self._pool.driver.dict_cursor)
        row = cursor.fetchone()
        cursor.close()
        return t.cast(Row | None, row)

    def scalar(self, sql: str, args: Params = None) -> t.Any:
        """Run a SELECT and return the first column of its first row, or None."""
        cursor = self._execute(sql, args)
        row = cursor.fetchone()
        cursor.close()
        return row[0] if row else None

    def execute(self, sql: str, args: Params = None) -> int:
        """Run one statement and return the number of affected rows."""
        self.wrote = True  # issue 14
        cursor = self._execute(sql, args)
        count = cursor.rowcount
        cursor.close()
        return int(count)

    def executemany(self, sql: str, seq: t.Iterable[Params]) -> int:
        """Run one statement for each parameter set; returns the affected rows."""
        self.wrote = True  # issue 14
        cursor = self._acquire().cursor()
        try:
            return int(cursor.executemany(sql, list(seq)) or 0)
        finally:
            cursor.close()

    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`transaction`."""
        return self._depth > 0

    @contextmanager
    def transaction(self) -> t.Iterator[Connection]:
        """``BEGIN`` … ``COMMIT`` (``ROLLBACK`` if the block raises); nesting uses savepoints."""
        con = self._acquire()
        if self._depth:
            name = f"poolkit_sp_{next(_savepoints)}"
            self.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self.execute(f"ROLLBACK TO SAVEPOINT {name}")
                raise
            else:
                self.execute(f"RELEASE SAVEPOINT {name}")
            finally:
                self._depth -= 1
            return
        # BEGIN as a statement, not the driver's begin(): on a connection that died while idle
        # it is then re-run on a fresh one when the driver marks that retry-safe.
        self.execute("BEGIN")
        con._transaction = True  # what DBUtils' begin() marks: no transparent failover inside
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            # A dead connection cannot roll back (the server already did); keep the caller's
            # error, not the rollback's InterfaceError. The pool discards it on return.
            with suppress(Exception):
                con.rollback()
            raise
        self._depth = 0
        con.commit()

    def using(self, bind: str) -> Connection:
        """The connection of the named pool (POOLKIT_BINDS) in the same app context."""
        if self._binder is None:
            raise RuntimeError(f"use pool.connection({bind!r}) outside an app context")
        return self._binder(bind)

    def __repr__(self) -> str:
        state = "checked out" if self._con is not None else "idle"
        return f"<poolkit.Connection pool={self._pool.name!r} {state}>"
