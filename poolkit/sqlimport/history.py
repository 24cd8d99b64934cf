"""What ``flask initdb`` has applied: the ``poolkit_sql_history`` table, and its server lock.

One row per applied file (by name), with the SHA-256 of its bytes, when it was applied (UTC),
how long it took and how many statements it ran. A file whose checksum no longer matches is
*changed*: like Flyway's validate, that is an error unless the caller re-applies it on purpose.

The lock is the server's ``GET_LOCK('poolkit_initdb.<database>')``: it belongs to the session,
so two runs against one database never interleave, and a run that dies (killed, Ctrl-C,
lost connection) releases it with its session.
"""

from __future__ import annotations

import hashlib
import typing as t
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime

from ..errors import SqlFileError
from .files import SqlFile

TABLE = "poolkit_sql_history"

APPLIED, PENDING, CHANGED = "applied", "pending", "changed"

_CREATE = """CREATE TABLE IF NOT EXISTS {table} (
  file VARCHAR(255) NOT NULL PRIMARY KEY,
  checksum CHAR(64) NOT NULL,
  applied_at DATETIME(6) NOT NULL,
  duration_ms INT UNSIGNED NOT NULL,
  statements INT UNSIGNED NOT NULL
) DEFAULT CHARSET=utf8mb4"""


@dataclass(frozen=True)
class Applied:
    """One history row."""

    file: str
    checksum: str
    applied_at: datetime
    duration_ms: int
    statements: int


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

    def _run(self, sql: str, args: t.Sequence[t.Any] | None = None) -> list[tuple[t.Any, ...]]:
        cursor = self.raw.cursor()
        try:
            cursor.execute(sql, args)
            return list(cursor.fetchall() or ())
        finally:
            cursor.close()

    def ensure(self) -> None:
        """Create the table if it does not exist yet."""
        self._run(_CREATE.format(table=self.table))

    def load(self) -> dict[str, Applied]:
        """Every recorded file by name; empty when the table does not exist yet."""
        exists = self._run("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                           "AND TABLE_NAME = %s", (self.database, TABLE))
        if not exists:
            return {}
        rows = self._run(f"SELECT file, checksum, applied_at, duration_ms, statements "
                         f"FROM {self.table}")
        return {row[0]: Applied(row[0], row[1], row[2], int(row[3]), int(row[4]))
                for row in rows}

    def record(self, file: SqlFile, duration_ms: int, statements: int) -> None:
        """Record *file* as applied now (replacing an older row of the same name)."""
        self._run(f"REPLACE INTO {self.table} (file, checksum, applied_at, duration_ms, "
                  "statements) VALUES (%s, %s, UTC_TIMESTAMP(6), %s, %s)",
                  (file.name, file.checksum, duration_ms, statements))
        if not self.raw.get_autocommit():
            self.raw.commit()


def status(files: t.Iterable[SqlFile], applied: dict[str, Applied]) -> list[tuple[SqlFile, str]]:
    """Each file with ``applied``, ``pending`` or ``changed`` (checksum differs from history)."""
    result: list[tuple[SqlFile, str]] = []
    for file in files:
        row = applied.get(file.name)
        if row is None:
            result.append((file, PENDING))
        else:
            result.append((file, APPLIED if row.checksum == file.checksum else CHANGED))
    return result


def lock_name(database: str) -> str:
    """``poolkit_initdb.<database>``, hashed when longer than the server's 64 characters."""
    name = f"poolkit_initdb.{database}"
    if len(name) > 64:
        name = "poolkit_initdb." + hashlib.sha256(database.encode()).hexdigest()[:40]
    return name


@contextmanager
def server_lock(raw: t.Any, database: str, timeout: float) -> t.Iterator[None]:
    """Hold ``GET_LOCK`` for *database* on the session of *raw*, waiting up to *timeout* s."""
    name = lock_name(database)
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
    try:
        yield
    finally:
        cursor = raw.cursor()
        # If the session is gone (an interrupt closed it), the lock went with it.
        with suppress(Exception):
            cursor.execute("SELECT RELEASE_LOCK(%s)", (name,))
            cursor.fetchall()
        with suppress(Exception):
            cursor.close()
