"""The connection a borrower sees: DB-API compatible, plus ``query``/``execute``/``transaction``.

A :class:`Connection` checks out its pooled connection on first use and gives it back on
:meth:`close`; the pool rolls it back first if a transaction or read snapshot is still open,
so nothing is ever committed implicitly.
"""

from __future__ import annotations

import itertools
import time
import typing as t
from contextlib import contextmanager

if t.TYPE_CHECKING:
    from .pool import Pool

Row = dict[str, t.Any]
Params = t.Sequence[t.Any] | t.Mapping[str, t.Any] | None

_savepoints = itertools.count(1)


class Connection:
    """A pooled connection, checked out lazily and returned by :meth:`close`."""

    __slots__ = ("_binder", "_depth", "_pool", "_pooled", "checked_out_at")

    def __init__(self, pool: Pool, binder: t.Callable[[str], Connection] | None = None) -> None:
        self._pool = pool
        self._pooled: t.Any = None
        self._binder = binder
        self._depth = 0
        self.checked_out_at = 0.0

    # -- life cycle -----------------------------------------------------------------------
    def _acquire(self) -> t.Any:
        pooled = self._pooled
        if pooled is None:
            pooled = self._pooled = self._pool._checkout()
            self.checked_out_at = time.monotonic()
        return pooled

    def acquire(self) -> Connection:
        """Check out now rather than on first use (surfaces PoolTimeout early)."""
        self._acquire()
        return self

    @property
    def checked_out(self) -> bool:
        """True while this object holds a pooled connection."""
        return self._pooled is not None

    def close(self) -> None:
        """Give the connection back to the pool (rolled back there if still dirty)."""
        pooled, self._pooled = self._pooled, None
        self._depth = 0
        if pooled is not None:
            self._pool._checkin(pooled, self.checked_out_at)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- DB-API ---------------------------------------------------------------------------
    def cursor(self, dict: bool = False) -> t.Any:
        """A DB-API cursor; ``dict=True`` gives rows as dicts."""
        pooled = self._acquire()
        if dict:
            return pooled.cursor(self._pool.driver.dict_cursor)
        return pooled.cursor()

    def commit(self) -> None:
        """Commit the current transaction."""
        self._acquire().commit()

    def rollback(self) -> None:
        """Roll back the current transaction."""
        self._acquire().rollback()

    @property
    def raw(self) -> t.Any:
        """The driver's own connection (no failover, no bookkeeping): use with care."""
        return self._acquire()._con._con

    def __getattr__(self, name: str) -> t.Any:
        # Anything else DB-API or the driver offers (escape, insert_id, ping, …).
        return getattr(self._acquire(), name)

    # -- conveniences ---------------------------------------------------------------------
    def query(self, sql: str, args: Params = None) -> list[Row]:
        """Run a SELECT and return every row as a dict."""
        cursor = self._acquire().cursor(self._pool.driver.dict_cursor)
        try:
            cursor.execute(sql, args)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def query_one(self, sql: str, args: Params = None) -> Row | None:
        """Run a SELECT and return its first row as a dict, or None."""
        rows = self.query(sql, args)
        return rows[0] if rows else None

    def scalar(self, sql: str, args: Params = None) -> t.Any:
        """Run a SELECT and return the first column of its first row, or None."""
        cursor = self._acquire().cursor()
        try:
            cursor.execute(sql, args)
            row = cursor.fetchone()
            return row[0] if row else None
        finally:
            cursor.close()

    def execute(self, sql: str, args: Params = None) -> int:
        """Run one statement and return the number of affected rows."""
        cursor = self._acquire().cursor()
        try:
            return int(cursor.execute(sql, args))
        finally:
            cursor.close()

    def executemany(self, sql: str, seq: t.Iterable[Params]) -> int:
        """Run one statement for each parameter set; returns the affected rows."""
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
        pooled = self._acquire()
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
        pooled.begin()  # marks the steady connection: no transparent failover inside
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            pooled.rollback()
            raise
        self._depth = 0
        pooled.commit()

    def using(self, bind: str) -> Connection:
        """The connection of the named pool (POOLKIT_BINDS) in the same app context."""
        if self._binder is None:
            raise RuntimeError(f"use pool.connection({bind!r}) outside an app context")
        return self._binder(bind)

    def __repr__(self) -> str:
        state = "checked out" if self._pooled is not None else "idle"
        return f"<poolkit.Connection pool={self._pool.name!r} {state}>"
