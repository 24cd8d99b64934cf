"""What ``flask initdb`` has applied: the ``poolkit_sql_history`` table, and its server lock.

One row per file (by name), with the SHA-256 of its bytes, when it ran (UTC), how long it took
and how many statements it applied. A file whose checksum no longer matches is *changed*: like
Flyway's validate, that is an error unless the caller re-applies it on purpose. A file that
stopped part-way (an error, Ctrl-C) gets a ``failed`` row: the line and statement where it
stopped, the error, how many statements were applied (and not undone: DDL commits) and the
digest of those statements, so that a rerun can resume after them if they are unchanged.

A file may drop the database that holds this table (``DROP DATABASE app; CREATE DATABASE
app``, as MySQL's world.sql and sakila do). The rows are kept in memory for the run: when a
write finds the table (or the database) gone, it re-creates them, writes every row back, and
says so in :attr:`History.restored`.

The lock is the server's ``GET_LOCK``: it belongs to the session, so two runs against one
database never interleave, and a run that dies (killed, Ctrl-C, lost connection) releases it
with its session. Lock names are server-wide and any account may take any name, so the name
holds a random token kept in the history table's comment: ``information_schema`` shows that
comment only to accounts with a privilege on the table, so an account without rights on the
app's database cannot guess the name and hold it to block every run.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import typing as t
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import SqlFileError
from ..pool.drivers import error_code
from .files import SqlFile
from .split import limit_statements
from .statement import WITHHELD

TABLE = "poolkit_sql_history"

APPLIED, PENDING, CHANGED, FAILED = "applied", "pending", "changed", "failed"

_CREATE = """CREATE TABLE IF NOT EXISTS {table} (
  file VARCHAR(255) NOT NULL PRIMARY KEY,
  checksum CHAR(64) NOT NULL,
  applied_at DATETIME(6) NOT NULL,
  duration_ms INT UNSIGNED NOT NULL,
  statements INT UNSIGNED NOT NULL,
  status VARCHAR(16) NOT NULL DEFAULT 'applied',
  total INT UNSIGNED NULL,
  failed_line INT UNSIGNED NULL,
  failed_at VARCHAR(1024) NULL,
  failed_statement TEXT NULL,
  error TEXT NULL,
  prefix_checksum CHAR(64) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT={comment}"""
#: Columns added since the first version of the table (added to an old table on ensure()).
_ADDED = {
    "status": "VARCHAR(16) NOT NULL DEFAULT 'applied'",
    "total": "INT UNSIGNED NULL",
    "failed_line": "INT UNSIGNED NULL",
    "failed_at": "VARCHAR(1024) NULL",
    "failed_statement": "TEXT NULL",
    "error": "TEXT NULL",
    "prefix_checksum": "CHAR(64) NULL",
}
_COLUMNS = ("file", "checksum", "applied_at", "duration_ms", "statements", *_ADDED)
_GONE = frozenset({1146, 1049})  # table, database doesn't exist


@dataclass(frozen=True)
class Applied:
    """One history row."""

    file: str
    checksum: str
    applied_at: datetime
    duration_ms: int
    statements: int
    status: str = APPLIED
    #: Failed rows: statements in the file (when counted), where it stopped, why.
    total: int | None = None
    failed_line: int | None = None
    #: ``name:line`` of the statement when it is in a sourced file.
    failed_at: str | None = None
    failed_statement: str | None = None
    error: str | None = None
    #: Digest of the applied statements (see apply.prefix_digest); None: cannot resume.
    prefix_checksum: str | None = None

    def progress(self) -> str:
        """``2 of 5 statements applied`` (``2 statements applied`` when the total is unknown)."""
        done = self.statements
        if self.total is not None:
            return f"{done} of {self.total} {plural(self.total, 'statement')} applied"
        return f"{done} {plural(done, 'statement')} applied"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def plural(n: int, word: str) -> str:
    """*word*, or *word* + ``s`` unless *n* is 1."""
    return word if n == 1 else word + "s"


def quote_ident(name: str) -> str:
    """A MySQL identifier in backticks (a backtick inside is doubled)."""
    return "`" + name.replace("`", "``") + "`"


class History:
    """The history table of *database*, read and written through a DB-API connection."""

    def __init__(self, raw: t.Any, database: str) -> None:
        self.raw = raw
        self.database = database
        # Qualified: an applied file may have switched databases (sakila runs USE sakila).
        self.table = f"{quote_ident(database)}.{quote_ident(TABLE)}"
        self.rows: dict[str, Applied] = {}
        #: Set when a write had to re-create what a file dropped (a message for the user).
        self.restored: str | None = None

    def _run(self, sql: str, args: t.Sequence[t.Any] | None = None) -> list[tuple[t.Any, ...]]:
        cursor = self.raw.cursor()
        try:
            cursor.execute(sql, args)
            return list(cursor.fetchall() or ())
        finally:
            cursor.close()

    def ensure(self) -> None:
        """Create the table if it does not exist yet, and add the columns of newer versions."""
        self._run(_CREATE.format(table=self.table, comment=_comment(
            _held_tokens.get(self.database) or secrets.token_hex(16))))
        have = {row[0] for row in self._run(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s", (self.database, TABLE))}
        for name, definition in _ADDED.items():
            if name not in have:
                self._run(f"ALTER TABLE {self.table} ADD COLUMN {name} {definition}")

    def load(self) -> dict[str, Applied]:
        """Every recorded file by name; empty when the table does not exist yet."""
        exists = self._run("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                           "AND TABLE_NAME = %s", (self.database, TABLE))
        if not exists:
            return {}
        have = {row[0] for row in self._run(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s", (self.database, TABLE))}
        columns = [name for name in _COLUMNS if name in have]
        rows = self._run(f"SELECT {', '.join(columns)} FROM {self.table}")
        self.rows = {}
        for row in rows:
            values = dict(zip(columns, row, strict=True))
            values["duration_ms"] = int(values["duration_ms"])
            values["statements"] = int(values["statements"])
            self.rows[row[0]] = Applied(**values)
        return dict(self.rows)

    def _write(self, row: Applied) -> None:
        values = [getattr(row, name) for name in _COLUMNS[3:]]
        sql = (f"REPLACE INTO {self.table} ({', '.join(_COLUMNS)}) VALUES "
               f"(%s, %s, UTC_TIMESTAMP(6), {', '.join(['%s'] * len(values))})")
        self._run("SET NAMES utf8mb4")  # a file may have left another character set
        try:
            self._run(sql, (row.file, row.checksum, *values))
        except Exception as error:
            if error_code(error) not in _GONE:
                raise
            self._restore()
            self._run(sql, (row.file, row.checksum, *values))
        self.rows[row.file] = row
        if not self.raw.get_autocommit():
            self.raw.commit()

    def _restore(self) -> None:
        """Re-create what a file dropped and write back every row this run knows."""
        name = quote_ident(self.database)
        dropped_database = not self._run(
            "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (self.database,))
        if dropped_database:
            self._run(f"CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4")
        self.ensure()
        for row in self.rows.values():
            values = [getattr(row, column) for column in _COLUMNS[2:]]
            self._run(f"REPLACE INTO {self.table} ({', '.join(_COLUMNS)}) VALUES "
                      f"(%s, %s, {', '.join(['%s'] * len(values))})",
                      (row.file, row.checksum, *values))
        what = f"database {self.database!r}" if dropped_database else f"the table {TABLE}"
        self.restored = (f"{what} was dropped by a file: re-created it and restored its "
                         f"{len(self.rows)} {plural(len(self.rows), 'record')}")

    def record(self, file: SqlFile, duration_ms: int, statements: int) -> None:
        """Record *file* as applied now (replacing an older row of the same name)."""
        self._write(Applied(file.name, file.checksum, _utcnow(), duration_ms, statements))

    def record_failed(self, file: SqlFile, duration_ms: int, statements: int, *,
                      total: int | None, line: int | None, failed_at: str | None,
                      statement: str | None, error: str, prefix_checksum: str | None) -> None:
        """Record that *file* stopped after applying *statements* statements.

        *statement* is :meth:`.Statement.excerpt`: for a statement that may carry a password
        it holds only its first words, and the server's message (which may quote the
        statement: ``near 'IDENTIFIED BY …'``) is not kept either, only the error's code."""
        if statement is not None and WITHHELD in statement:
            error = withhold_message(error)
        self._write(Applied(file.name, file.checksum, _utcnow(), duration_ms, statements,
                            FAILED, total, line, failed_at, statement, error[:4000],
                            prefix_checksum))


_ERROR_HEAD = re.compile(r"^.*?ERROR(?: \d+)?(?: \([0-9A-Z]{5}\))?")


def withhold_message(error: str) -> str:
    """*error* (``file:line: ERROR code (state): message``) without its message."""
    head = _ERROR_HEAD.match(error)
    kept = head.group() if head is not None else "error"
    return f"{kept}: (message withheld: the statement may carry a password)"


def status(files: t.Iterable[SqlFile], applied: dict[str, Applied]) -> list[tuple[SqlFile, str]]:
    """Each file with ``applied``, ``pending``, ``changed`` or ``failed``."""
    result: list[tuple[SqlFile, str]] = []
    for file in files:
        row = applied.get(file.name)
        if row is None or file.is_stdin:
            result.append((file, PENDING))
        elif row.status == FAILED:
            result.append((file, FAILED))
        else:
            result.append((file, APPLIED if row.checksum == file.checksum else CHANGED))
    return result


#: Tokens of the locks this process holds, by database: a history table that a file dropped
#: is re-created with the same token, so the lock's name stays the one held.
_held_tokens: dict[str, str] = {}
_TOKEN_PREFIX = "poolkit lock "


def _comment(token: str) -> str:
    return f"'{_TOKEN_PREFIX}{token}'"


def lock_name(database: str, token: str = "") -> str:
    """``poolkit_initdb.<database>`` without a token; with one (see :func:`run_lock_name`),
    ``poolkit_initdb.`` and a digest of both, within the server's 64 characters."""
    if token:
        digest = hashlib.sha256(f"{database}\0{token}".encode()).hexdigest()[:48]
        return f"poolkit_initdb.{digest}"
    name = f"poolkit_initdb.{database}"
    if len(name) > 64:
        name = "poolkit_initdb." + hashlib.sha256(database.encode()).hexdigest()[:40]
    return name


def _one(raw: t.Any, sql: str, args: t.Sequence[t.Any] | None = None) -> t.Any:
    cursor = raw.cursor()
    try:
        cursor.execute(sql, args)
        row = cursor.fetchone()
        cursor.fetchall()
    finally:
        cursor.close()
    return row[0] if row else None


def _read_token(raw: t.Any, database: str) -> str:
    comment = _one(raw, "SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE "
                        "TABLE_SCHEMA = %s AND TABLE_NAME = %s", (database, TABLE)) or ""
    return str(comment)[len(_TOKEN_PREFIX):] if str(comment).startswith(_TOKEN_PREFIX) else ""


def run_lock_name(raw: t.Any, database: str) -> str:
    """The name of initdb's lock for *database*, as an account with rights on its history table
    reads it (creating the table, or giving an older table its token, when needed)."""
    table = f"{quote_ident(database)}.{quote_ident(TABLE)}"
    History(raw, database).ensure()
    token = _read_token(raw, database)
    if not token:  # a table made before tokens: give it one (a race is settled in server_lock)
        cursor = raw.cursor()
        try:
            cursor.execute(f"ALTER TABLE {table} COMMENT = {_comment(secrets.token_hex(16))}")
        finally:
            cursor.close()
        token = _read_token(raw, database)
    return lock_name(database, token)


@contextmanager
def server_lock(raw: t.Any, database: str, timeout: float) -> t.Iterator[None]:
    """Hold initdb's lock for *database* on the session of *raw*, waiting up to *timeout* s.

    Its name is :func:`run_lock_name`'s; it is read again once the lock is held, and the lock
    taken again under the new name if another run gave an older table its token meanwhile.
    While it is held, the splitter refuses statements above the server's
    ``max_allowed_packet`` before reading them whole (see :func:`.split.limit_statements`)."""
    for _ in range(3):
        name = run_lock_name(raw, database)
        _take(raw, name, timeout)
        if run_lock_name(raw, database) == name:
            break
        _release(raw, name)
    token = _read_token(raw, database)
    _held_tokens[database] = token
    try:
        packet = _one(raw, "SELECT @@max_allowed_packet")
        # The run's statements are bounded by what this server accepts (read once).
        with limit_statements(int(packet) if packet else 1 << 24):
            yield
    finally:
        _held_tokens.pop(database, None)
        _release(raw, name)


def _take(raw: t.Any, name: str, timeout: float) -> None:
    cursor = raw.cursor()
    try:
        cursor.execute("SELECT GET_LOCK(%s, %s), IS_USED_LOCK(%s)", (name, timeout, name))
        row = cursor.fetchone()
    finally:
        cursor.close()
    if not row or row[0] != 1:
        holder = f" (held by connection id {row[1]})" if row and row[1] else ""
        raise SqlFileError(
            f"another initdb run holds the lock {name!r}{holder}: wait for it to finish, or "
            f"wait longer with --lock-timeout (waited {timeout:g} s)")


def _release(raw: t.Any, name: str) -> None:
    cursor = raw.cursor()
    # If the session is gone (an interrupt closed it), the lock went with it.
    with suppress(Exception):
        cursor.execute("SELECT RELEASE_LOCK(%s)", (name,))
        cursor.fetchall()
    with suppress(Exception):
        cursor.close()
