"""The connection a borrower sees: DB-API compatible, plus ``query``/``execute``/``transaction``.

A :class:`Connection` checks out its pooled connection on first use and gives it back on
:meth:`close`; the pool rolls it back first if a transaction or read snapshot is still open,
so nothing is ever committed implicitly.

A handle is good for one borrow. Once returned it refuses further use with
:class:`~poolkit.errors.ConnectionReturnedError` instead of quietly checking out another
connection that nobody would return. A handle dropped without :meth:`close` is given back when
it is garbage collected, with a ``ResourceWarning`` naming the line that checked it out.

Threads may share one handle (``asyncio.to_thread`` inside a view shares the app context and
so ``db``): its first use checks out exactly once, and each call (``query``, ``execute``,
``commit``, a ``transaction``'s ``BEGIN``/``COMMIT`` …) runs whole under the handle's lock, so
the threads take turns on the one connection and its protocol stays intact. DB-API cursors
and ``raw`` are not guarded: do not share those between threads.

``cursor()`` and ``raw`` hand out objects that die with the borrow
(:mod:`poolkit.pool.borrowed`). A borrow never moves to another server session: only the
helpers' (``query``, ``execute``, …) first statement of a borrow is re-run on a fresh
connection, when the driver marked its failure retry-safe (see
:func:`poolkit.pool.drivers.is_retry_safe`); after that a lost connection raises.

``transaction()`` is all or nothing: it refuses to start (:class:`TransactionError`) while
the borrow has uncommitted writes of its own (``BEGIN`` would commit them), and a block whose
transaction the server ended (a deadlock, a lock wait timeout that rolled back, a lost
connection) re-raises that error at every enclosing block's end: nothing of it is committed.
"""

from __future__ import annotations

import itertools
import sys
import threading
import types
import typing as t
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path

from ..errors import ConnectionReturnedError, TransactionError
from .borrowed import BorrowedCursor, BorrowedRaw, mark_changed
from .drivers import error_code, is_retry_safe
from .handles import (
    PoolLike,
    _borrower,
    _deferred,
    _describe,
    _getframe,
    _give_back_deferred,
    _inside_pool,
)
from .holders import record_holder
from .untracked import statement_changes_untracked_state
from .writes import may_write

_IN_TRANS = 0x0001


Row = dict[str, t.Any]
Params = t.Sequence[t.Any] | t.Mapping[str, t.Any] | None

_savepoints = itertools.count(1)

_INSIDE_BLOCK = ("db.{call}() inside db.transaction() would end the block's transaction half way: "
                 "the block commits when it ends and rolls back when it raises")


class Connection:
    """A pooled connection, checked out lazily and returned by :meth:`close`."""

    __slots__ = ("_binder", "_con", "_depth", "_dirty", "_doomed", "_lock", "_pool", "_ran",
                 "_returned", "_where", "label", "wrote")

    def __init__(self, pool: PoolLike,
                 binder: t.Callable[[str], Connection] | None = None) -> None:
        self._pool = pool
        self._con: t.Any = None  # DBUtils' SteadyDBConnection while checked out
        self._binder = binder
        self._depth = 0
        self._ran = False  # a statement ran: no transparent re-run on another session now
        self._dirty = False  # statements since the last commit/rollback may have written
        self._doomed: BaseException | None = None  # the error that ended the transaction
        self._returned = False
        self._lock = threading.Lock()
        self._where: tuple[types.CodeType, int] | None = _borrower()
        #: True once this handle ran anything but the read helpers (query, query_one, scalar):
        #: read-your-writes then sends the request's replica reads to the primary (issue 14).
        self.wrote = False
        #: Who borrows (the Flask endpoint or command, set by the extension): PoolTimeout's
        #: message names it beside the borrow's file:line.
        self.label: str | None = None

    # -- life cycle -----------------------------------------------------------------------
    def _acquire(self) -> t.Any:
        # Callers hold self._lock: threads sharing this handle check out once.
        con = self._con
        if con is None:
            if self._returned:
                raise ConnectionReturnedError(self._returned_message())
            con = self._con = self._pool._checkout()
            record_holder(con, self._where, self.label)
            if _deferred:
                _give_back_deferred()
        return con

    def _returned_message(self) -> str:
        return (f"this connection of pool {self._pool.name!r} was already returned to the pool "
                "(its 'with' block or app context ended): check out a new one with "
                "pool.connection(), or in a streaming response use db inside a generator "
                "wrapped in flask.stream_with_context() instead of a connection kept from the "
                "view")

    def acquire(self) -> Connection:
        """Check out now rather than on first use (surfaces PoolTimeout early)."""
        with self._lock:
            self._acquire()
        return self

    @property
    def checked_out(self) -> bool:
        """True while this object holds a pooled connection."""
        return self._con is not None

    @property
    def returned(self) -> bool:
        """True once :meth:`close` gave the connection back: the handle is then spent."""
        return self._returned

    def close(self) -> None:
        """Give the connection back to the pool (rolled back there if still dirty).

        The handle is spent afterwards; closing again does nothing.
        """
        with self._lock:
            self._returned = True
            con = self._con
            if con is None:
                return
            self._con = None
            self._depth = 0
        self._pool._checkin(con)
        if _deferred:
            _give_back_deferred()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        con = self._con
        if con is None or sys.is_finalizing():
            return
        self._con = None
        pool = self._pool
        try:
            if _inside_pool(_getframe(1)):
                _deferred.append((pool, con))
            else:
                pool._checkin_dropped(con)
        finally:
            warnings.warn(
                f"a connection of pool {pool.name!r} checked out at {_describe(self._where)} "
                "was never returned: poolkit returned it when its handle was garbage "
                "collected. Use 'with pool.connection() as conn:' or call conn.close().",
                ResourceWarning, stacklevel=2)

    # -- DB-API ---------------------------------------------------------------------------
    def cursor(self, dict: bool = False) -> BorrowedCursor:
        """A DB-API cursor valid for this borrow; ``dict=True`` gives rows as dicts."""
        with self._lock:
            con = self._acquire()
            self.wrote = True  # issue 14: what a cursor runs is unknown: assume a write
        raw = con.raw
        cursor = raw.cursor(self._pool.driver.dict_cursor) if dict else raw.cursor()
        return BorrowedCursor(cursor, con, self)

    def commit(self) -> None:
        """Commit the current transaction (not inside :meth:`transaction`: its end commits)."""
        self.wrote = True  # issue 14
        with self._lock:
            con = self._acquire()
            if self._doomed is not None and self._depth:
                raise self._doomed  # the server already rolled the transaction back
            if self._depth:
                raise TransactionError(_INSIDE_BLOCK.format(call="commit"))
            self._ran = True
            con.raw.commit()  # the driver's: DBUtils' would reopen on a failure
            con.in_transaction = False
            self._dirty = False

    def rollback(self) -> None:
        """Roll back the current transaction (inside :meth:`transaction`, raise instead)."""
        with self._lock:
            con = self._acquire()
            if self._depth:
                raise TransactionError(_INSIDE_BLOCK.format(call="rollback"))
            self._ran = True
            try:
                con.raw.rollback()
            finally:
                con.in_transaction = False
                self._dirty = False

    def ping(self) -> None:
        """Check that the server answers (raises if the connection is lost; never reconnects:
        a borrow keeps its session)."""
        with self._lock:
            self._acquire().raw.ping(False)

    @property
    def raw(self) -> t.Any:
        """The driver's own connection for this borrow (no bookkeeping): use with care."""
        with self._lock:
            con = self._acquire()
            self._ran = self._dirty = True
        return BorrowedRaw(con.raw, con, self)

    def __getattr__(self, name: str) -> t.Any:
        # Anything else the driver or DBUtils offers (begin, insert_id, escape, …). Never
        # private or special names: copy/pickle probes (__deepcopy__ …) must not check
        # out, and an unset slot must not recurse.
        if name.startswith("_") or name == "dbapi_connection":
            raise AttributeError(name)
        with self._lock:
            con = self._acquire()
        try:
            return getattr(con.raw, name)
        except AttributeError:
            return getattr(con, name)

    # -- what handed-out objects report (see poolkit.pool.borrowed) -----------------------
    def _statement_ran(self) -> None:
        self._ran = self._dirty = True

    def _statement_failed(self, error: BaseException) -> None:
        """A statement failed: inside a transaction block, did the server end it?"""
        if not self._depth or self._doomed is not None:
            return
        code = error_code(error)
        if code == 1213 or self._pool.driver.is_broken(self._con.raw):
            self._doomed = error  # a deadlock rolls back the whole transaction
            return
        if code in (1205, 1180, 1181, 1614, 4031):  # may have ended it: ask the server
            with suppress(Exception):
                cur = self._con.raw.cursor()
                cur.execute("SELECT @@in_transaction")
                row = cur.fetchone()
                cur.close()
                if row and not row[0]:
                    self._doomed = error

    # -- conveniences ---------------------------------------------------------------------
    def _execute(self, sql: str, args: Params, cursor_class: t.Any = None) -> t.Any:
        # Callers hold self._lock until they are done with the cursor.
        con = self._con or self._acquire()
        raw = con.raw
        first = not self._ran
        self._ran = True
        # The template's verdict (cached) stands for the interpolated text: parameters are
        # quoted literals. The driver's own check is skipped for this one statement.
        if statement_changes_untracked_state(sql):
            mark_changed(raw)
        cursor = raw.cursor(cursor_class)
        raw.poolkit_checked = True
        try:
            cursor.execute(sql, args)
        except Exception as error:
            cursor.close()
            # Only a borrow's first statement may move to a fresh session: nothing of this
            # one's session (USE, SET, a transaction) can be lost by then.
            if not (first and isinstance(error, con.failures) and is_retry_safe(error)):
                self._statement_failed(error)
                raise
            cursor = self._reconnect(con, error).cursor(cursor_class)
            cursor.execute(sql, args)
        finally:
            raw.poolkit_checked = False
        con.count_use()
        return cursor

    @staticmethod
    def _reconnect(con: t.Any, error: BaseException) -> t.Any:
        # The statement cannot have taken effect (the driver said so): re-run it once on a
        # fresh connection, as DBUtils' failover does for its own cursors.
        try:
            return con.reconnect()
        except Exception:
            raise error from None

    def query(self, sql: str, args: Params = None) -> list[Row]:
        """Run a SELECT and return every row as a dict."""
        if not self.wrote and may_write(sql):  # RETURNING, NEXTVAL, FOR UPDATE …
            self.wrote = True
        with self._lock:
            cursor = self._execute(sql, args, self._pool.driver.dict_cursor)
            rows = cursor.fetchall()
            cursor.close()
        return rows if isinstance(rows, list) else list(rows)

    def query_one(self, sql: str, args: Params = None) -> Row | None:
        """Run a SELECT and return its first row as a dict, or None."""
        if not self.wrote and may_write(sql):  # RETURNING, NEXTVAL, FOR UPDATE …
            self.wrote = True
        with self._lock:
            cursor = self._execute(sql, args, self._pool.driver.dict_cursor)
            row = cursor.fetchone()
            cursor.close()
        return t.cast(Row | None, row)

    def scalar(self, sql: str, args: Params = None) -> t.Any:
        """Run a SELECT and return the first column of its first row, or None."""
        if not self.wrote and may_write(sql):  # RETURNING, NEXTVAL, FOR UPDATE …
            self.wrote = True
        with self._lock:
            cursor = self._execute(sql, args)
            row = cursor.fetchone()
            cursor.close()
        return row[0] if row else None

    def execute(self, sql: str, args: Params = None) -> int:
        """Run one statement and return the number of affected rows."""
        self.wrote = True  # issue 14
        with self._lock:
            cursor = self._execute(sql, args)
            self._dirty = True
            count = cursor.rowcount
            cursor.close()
        return int(count)

    def executemany(self, sql: str, seq: t.Iterable[Params]) -> int:
        """Run one statement for each parameter set; returns the affected rows."""
        params = list(seq)
        self.wrote = True  # issue 14
        with self._lock:
            con = self._acquire()
            self._ran = self._dirty = True
            if statement_changes_untracked_state(sql):
                mark_changed(con.raw)
            cursor = con.raw.cursor()
            try:
                count = int(cursor.executemany(sql, params) or 0)
            except Exception as error:
                self._statement_failed(error)
                raise
            finally:
                cursor.close()
            con.count_use()
            return count

    def executescript(self, sql: str | bytes, *, name: str | None = None) -> int:
        """Run every statement of *sql* as the ``mariadb`` client would; returns how many ran.

        initdb's splitter reads it (``DELIMITER``, comments, strings); a failure raises with
        ``name:line``. Committed at the end unless inside :meth:`transaction`.
        """
        from ..script import executescript  # the splitter is imported on first use

        self.wrote = True
        return executescript(self, sql, name=name)

    def executefile(self, path: str | Path) -> int:
        """:meth:`executescript` on a file (``.gz``/``.bz2``/``.xz`` too), streamed."""
        from ..script import executefile

        self.wrote = True
        return executefile(self, path)

    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`transaction`."""
        return self._depth > 0

    @contextmanager
    def transaction(self) -> t.Iterator[Connection]:
        """``BEGIN`` … ``COMMIT`` (``ROLLBACK`` if the block raises); nesting uses savepoints.

        Raises :class:`TransactionError` when the borrow already wrote outside a block and
        has not committed (``BEGIN`` would commit that implicitly). If the server ends the
        transaction inside the block (deadlock …), the block re-raises that error at its end
        even when the code inside caught it: nothing of the transaction is committed.
        """
        with self._lock:
            con = self._acquire()
            depth = self._depth
            if not depth and self._dirty and self._open_transaction(con.raw):
                raise TransactionError(
                    "db.transaction() would commit the statements this borrow ran before it "
                    "(autocommit is off: they are an open transaction): call db.commit() or "
                    "db.rollback() first, or put them inside the transaction() block")
            self._depth += 1
        if depth:
            yield from self._nested()
            return
        # BEGIN as a statement, not the driver's begin(): on a connection that died while idle
        # it is then re-run on a fresh one when the driver marks that retry-safe.
        try:
            self.execute("BEGIN")
        except BaseException:
            self._depth = 0
            raise
        con = self._con
        con.in_transaction = True  # what DBUtils' begin() marks: no failover inside
        self._doomed = None
        try:
            yield self
            doomed = self._doomed
            if doomed is not None:
                raise doomed
        except BaseException:
            self._depth = 0
            self._doomed = None
            # A dead connection cannot roll back (the server already did); keep the caller's
            # error, not the rollback's InterfaceError. The pool discards it on return.
            with self._lock, suppress(Exception):
                self._dirty = False
                con.rollback()
            raise
        self._depth = 0
        with self._lock:
            try:
                con.raw.commit()
            except BaseException:
                # A refused COMMIT (a Galera certification conflict, a lost connection) ended
                # the transaction on the server: nothing of it stays open on this borrow.
                with suppress(Exception):
                    con.rollback()
                raise
            finally:
                con.in_transaction = False
                self._dirty = False

    def _nested(self) -> t.Iterator[Connection]:
        name = f"poolkit_sp_{next(_savepoints)}"
        try:
            self.execute(f"SAVEPOINT {name}")
        except BaseException:
            self._depth -= 1
            raise
        try:
            yield self
            if self._doomed is not None:
                raise self._doomed
        except BaseException as error:
            if self._doomed is None:
                try:
                    self.execute(f"ROLLBACK TO SAVEPOINT {name}")
                except Exception:
                    # The savepoint is gone: the server ended the whole transaction.
                    self._doomed = error
            raise
        else:
            self.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth -= 1

    @staticmethod
    def _open_transaction(raw: t.Any) -> bool:
        status = getattr(raw, "server_status", None)  # PyMySQL's, kept right by the pool
        return status is None or bool(status & _IN_TRANS)

    def using(self, bind: str) -> Connection:
        """The connection of the named pool (POOLKIT_BINDS) in the same app context."""
        if self._binder is None:
            raise RuntimeError(f"use pool.connection({bind!r}) outside an app context")
        return self._binder(bind)

    def __repr__(self) -> str:
        state = ("checked out" if self._con is not None
                 else "returned" if self._returned else "idle")
        return f"<poolkit.Connection pool={self._pool.name!r} {state}>"
