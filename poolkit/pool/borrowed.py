"""Objects a borrow hands out -- cursors and the driver's connection -- that die with it.

A pooled connection carries a generation number (``poolkit_gen``) that its pool advances at
every return. A :class:`BorrowedCursor` or :class:`BorrowedRaw` remembers the generation it
was handed out in and compares it before it touches the server: one attribute read and an
integer comparison, no lock. After the borrow ended it raises
:class:`~poolkit.errors.ConnectionReturnedError` and never reaches the next borrower's
session. Neither fails over: a lost connection raises (the pool discards it on return).
"""

from __future__ import annotations

import contextlib
import typing as t

from ..errors import ConnectionReturnedError
from .untracked import statement_changes_untracked_state

_STATE_CHANGED = 0x4000  # SERVER_SESSION_STATE_CHANGED: the pool resets at return


def mark_changed(raw: t.Any) -> None:
    """Count the session as changed: the pool resets it at return (mysqlclient: always)."""
    with contextlib.suppress(AttributeError):
        raw.poolkit_changed |= _STATE_CHANGED


class Borrow(t.Protocol):
    """What a handed-out object reports to the handle that borrowed the connection."""

    def _statement_ran(self) -> None: ...
    def _statement_failed(self, error: BaseException) -> None: ...


def _returned(what: str) -> ConnectionReturnedError:
    return ConnectionReturnedError(
        f"this {what} belongs to a connection that was already returned to the pool (its "
        "'with' block or app context ended): it would run on another borrower's session. "
        "Create cursors inside the block that uses them.")


class BorrowedCursor:
    """The driver's cursor, valid while its borrow lasts (DB-API: execute, fetch*, …)."""

    __slots__ = ("_borrow", "_con", "_cursor", "_gen")

    def __init__(self, cursor: t.Any, con: t.Any, borrow: Borrow) -> None:
        self._cursor = cursor
        self._con = con
        self._gen = con.poolkit_gen
        self._borrow = borrow

    def _live(self) -> t.Any:
        if self._con.poolkit_gen != self._gen:
            raise _returned("cursor")
        return self._cursor

    def execute(self, query: t.Any, args: t.Any = None) -> t.Any:
        cursor = self._live()
        self._borrow._statement_ran()
        raw = self._con.raw
        if isinstance(query, str):
            # The template's remembered verdict stands for the interpolated text (parameters
            # are quoted literals); the driver skips its own scan of this one statement.
            if statement_changes_untracked_state(query):
                mark_changed(raw)
            raw.poolkit_checked = True
        try:
            result = cursor.execute(query, args)
        except Exception as error:
            self._borrow._statement_failed(error)
            raise
        finally:
            raw.poolkit_checked = False
        self._con.count_use()
        return result

    def executemany(self, query: t.Any, args: t.Any) -> t.Any:
        cursor = self._live()
        self._borrow._statement_ran()
        try:
            result = cursor.executemany(query, args)
        except Exception as error:
            self._borrow._statement_failed(error)
            raise
        self._con.count_use()
        return result

    def callproc(self, name: str, args: t.Any = ()) -> t.Any:
        cursor = self._live()
        self._borrow._statement_ran()
        return cursor.callproc(name, args)

    def fetchone(self) -> t.Any:
        return self._live().fetchone()

    def fetchmany(self, size: int | None = None) -> t.Any:
        cursor = self._live()
        return cursor.fetchmany() if size is None else cursor.fetchmany(size)

    def fetchall(self) -> t.Any:
        return self._live().fetchall()

    def nextset(self) -> t.Any:
        return self._live().nextset()

    def scroll(self, value: int, mode: str = "relative") -> t.Any:
        return self._live().scroll(value, mode)

    def close(self) -> None:
        """Close the cursor; after the borrow this only forgets it (an unbuffered cursor's
        close would read the rest of its rows from the next borrower's socket)."""
        if self._con.poolkit_gen == self._gen:
            self._cursor.close()

    def __iter__(self) -> BorrowedCursor:
        return self

    def __next__(self) -> t.Any:
        row = self._live().fetchone()
        if row is None:
            raise StopIteration
        return row

    def __enter__(self) -> BorrowedCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> t.Any:
        # rowcount, description, lastrowid, arraysize, mogrify, … (no server round trip).
        return getattr(self._cursor, name)


class BorrowedRaw:
    """The driver's connection (``db.raw``), valid while its borrow lasts.

    Attribute reads and writes go to the driver's connection after the generation check;
    ``isinstance`` sees the driver's class. Its cursors are :class:`BorrowedCursor`.
    """

    __slots__ = ("_borrowed",)

    def __init__(self, raw: t.Any, con: t.Any, borrow: Borrow) -> None:
        object.__setattr__(self, "_borrowed", (raw, con, con.poolkit_gen, borrow))

    def __getattribute__(self, name: str) -> t.Any:
        # One lookup of our own per access (a __getattr__ fallback would first raise and
        # catch an AttributeError: ~20x slower).
        raw, con, gen, borrow = object.__getattribute__(self, "_borrowed")
        if name == "__class__":  # isinstance(db.raw, pymysql.Connection) holds
            return type(raw)
        if con.poolkit_gen != gen:
            raise _returned("driver connection (db.raw)")
        if name == "cursor":
            return lambda *args, **kwargs: BorrowedCursor(raw.cursor(*args, **kwargs), con,
                                                          borrow)
        return getattr(raw, name)

    def __setattr__(self, name: str, value: t.Any) -> None:
        raw, con, gen, _ = object.__getattribute__(self, "_borrowed")
        if con.poolkit_gen != gen:
            raise _returned("driver connection (db.raw)")
        setattr(raw, name, value)

    def __delattr__(self, name: str) -> None:
        raw, con, gen, _ = object.__getattribute__(self, "_borrowed")
        if con.poolkit_gen != gen:
            raise _returned("driver connection (db.raw)")
        delattr(raw, name)

    def __enter__(self) -> BorrowedRaw:
        return self

    def __exit__(self, *exc: object) -> None:
        """``with db.raw:`` does nothing (PyMySQL's would close the pooled connection)."""

    def __repr__(self) -> str:
        raw = object.__getattribute__(self, "_borrowed")[0]
        return f"<poolkit borrowed {raw!r}>"
