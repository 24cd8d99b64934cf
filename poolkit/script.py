"""Run a multi-statement SQL script on one connection: sqlite3's ``executescript`` for MySQL.

The script is split by ``flask initdb``'s splitter (:mod:`poolkit.sqlimport.split`), so it
reads exactly as the ``mariadb`` client reads it: ``DELIMITER`` blocks (triggers, procedures),
``#``, ``--`` and ``/* */`` comments, quotes that hide a ``;``, executable comments ``/*!…*/``.
Each statement is sent on its own, as the client sends it, and its results are read and
discarded. A statement the server refuses stops the script with a :class:`ScriptError` that
names the script and the statement's own line (``schema.sql:12: ERROR 1064 (42000): …``); the
driver's error is its ``__cause__``.

Writes are committed when the script ends (the client runs in autocommit; DDL commits anyway),
unless ``commit=False`` or the script runs inside ``db.transaction()``, which then decides.
After a failure, what the script wrote since its last DDL statement is rolled back.
"""

from __future__ import annotations

import contextlib
import typing as t
from pathlib import Path

from .errors import Error, SqlFileError

if t.TYPE_CHECKING:  # the splitter is imported on first use: `import poolkit` stays light
    from .sqlimport.outcome import StatementError
    from .sqlimport.statement import Statement

#: Shown as the script's name in messages when none is given.
DEFAULT_NAME = "<script>"


class ScriptError(SqlFileError):
    """A statement of a script failed; the message names the script's name and line."""

    def __init__(self, failure: StatementError, shown: str) -> None:
        super().__init__(failure.headline(shown))
        #: Where and why: path, line, server error code, SQLSTATE, message, statement.
        self.failure = failure


def executescript(connection: t.Any, sql: str | bytes, *, name: str | None = None,
                  commit: bool | None = None) -> int:
    """Run every statement of *sql* on *connection*; returns how many ran.

    *connection* is a :class:`poolkit.Connection` (``db``, ``pool.connection()``) or a driver
    connection. *name* is what messages call the script (a file name); ``source FILE`` lines
    resolve beside it. *commit*: ``None`` commits unless inside ``connection.transaction()``.
    """
    from .sqlimport.split import split_bytes

    data = sql.encode("utf-8") if isinstance(sql, str) else sql
    path = Path(name) if name is not None else None
    statements = split_bytes(data, path=path)
    return _run(connection, statements, name or DEFAULT_NAME, commit)


def executefile(connection: t.Any, path: str | Path, *, commit: bool | None = None) -> int:
    """Run the SQL file at *path* (``.gz``/``.bz2``/``.xz`` too), streaming; returns the count."""
    from .sqlimport.split import split_file

    return _run(connection, split_file(path), str(path), commit)


def _run(connection: t.Any, statements: t.Iterable[Statement], name: str,
         commit: bool | None) -> int:
    from .sqlimport.outcome import locate

    raw = getattr(connection, "raw", connection)  # a poolkit Connection, or the driver's own
    if commit is None:
        commit = not getattr(connection, "in_transaction", False)
    count = 0
    cursor = raw.cursor()
    try:
        for statement in statements:
            try:
                cursor.execute(statement.sql)
                while cursor.nextset():  # a CALL's result sets; nothing else has more
                    pass
            except Error as error:  # the driver's (see poolkit.errors.adopt_driver_errors)
                if commit:
                    _rollback(raw)
                failure = locate(error, statement, statement.path or Path(name))
                shown = name if statement.path is None else str(statement.path)
                raise ScriptError(failure, shown) from error
            count += 1
    finally:
        cursor.close()
    if commit:
        raw.commit()
    return count


def _rollback(raw: t.Any) -> None:
    with contextlib.suppress(Exception):  # a connection that is gone was rolled back
        raw.rollback()
