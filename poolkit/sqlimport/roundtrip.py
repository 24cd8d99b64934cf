"""Send SQL and read its results through the driver: one round trip, or a pipeline.

PyMySQL gets its own path (:mod:`..pool.pymysql_compat`): a multi-statement batch is sent and
its results are read later, while the next batch is split, and rows can come back as the
server's bytes. Other drivers (mysqlclient) go through a DB-API cursor.
"""

from __future__ import annotations

import contextlib
import re
import typing as t

from ..pool import pymysql_compat
from .statement import Statement, first_word

#: Statements sent alone: their results cannot be told apart from the next statement's.
_ALONE = frozenset({b"CALL", b"EXECUTE", b"LOAD", b"DELIMITER"})

# A statement that opens with a comment executed only from version 10.0.0 on (six digits):
# on an older server it is an empty statement, which the server refuses inside a batch.
_NEW_VERSION_COMMENT = re.compile(rb"\s*/\*M?!\d{6}")

Runner = t.Callable[[bytes, t.Callable[[t.Any], None]], None]


def runner(raw: t.Any, raw_values: bool) -> tuple[Runner, t.Callable[[t.Any], t.Any]]:
    """(send SQL and hand each result to a callback, result -> (names, rows) or None).

    With *raw_values*, rows are the server's bytes (PyMySQL), as the client prints them; only
    for the file's statements: history and engine look-ups in between read Python values.
    """
    if pymysql_compat.is_pymysql(raw):
        def run(sql: bytes, on_result: t.Callable[[t.Any], None]) -> None:
            if not raw_values:
                pymysql_compat.run_statements(raw, sql, on_result)
                return
            with pymysql_compat.raw_values(raw):
                pymysql_compat.run_statements(raw, sql, on_result)

        return run, pymysql_compat.result_rows

    def run_cursor(sql: bytes, on_result: t.Callable[[t.Any], None]) -> None:
        cursor = raw.cursor()
        try:
            cursor.execute(sql)
            on_result(cursor)
            while cursor.nextset():
                on_result(cursor)
        finally:
            cursor.close()

    def rows(cursor: t.Any) -> tuple[list[str], list[tuple[t.Any, ...]]] | None:
        if not cursor.description:
            return None
        return [str(c[0]) for c in cursor.description], list(cursor.fetchall())

    return run_cursor, rows


Begin = t.Callable[[bytes], None]
Collect = t.Callable[[t.Callable[[t.Any], None]], None]


def pipeline(raw: t.Any, raw_values: bool) -> tuple[Begin, Collect]:
    """(send SQL, read its results): the server runs a batch while the next one is split.

    PyMySQL only; other drivers send and read in one call, at collect time.
    """
    if pymysql_compat.is_pymysql(raw):
        def collect(on_result: t.Callable[[t.Any], None]) -> None:
            if not raw_values:
                pymysql_compat.read_statements(raw, on_result)
                return
            with pymysql_compat.raw_values(raw):
                pymysql_compat.read_statements(raw, on_result)

        return lambda sql: pymysql_compat.send_statements(raw, sql), collect
    run, _ = runner(raw, raw_values)
    held: list[bytes] = []

    def hold(sql: bytes) -> None:
        held.append(sql)

    def run_held(on_result: t.Callable[[t.Any], None]) -> None:
        run(held.pop(), on_result)

    return hold, run_held


def batchable(stmt: Statement, comments: bool) -> bool:
    """Whether *stmt* may share a round trip: exactly one result, and ``;\\n`` cannot be
    swallowed by it (an open ``/*!`` comment, or a kept ``--``/``#`` comment on its last line)."""
    if not stmt.plain or first_word(stmt.sql) in _ALONE:
        return False
    sql = stmt.sql
    if _NEW_VERSION_COMMENT.match(sql):  # may be empty for this server: a 1064 in a batch
        return False
    if b"/*" in sql and sql.rfind(b"/*") > sql.rfind(b"*/"):
        return False
    if comments:
        last = sql[sql.rfind(b"\n") + 1:]
        if b"#" in last or b"--" in last:
            return False
    return True


def session_defaults(run: Runner, rows_of: t.Callable[[t.Any], t.Any]
                      ) -> tuple[bytes | None, bytes | None]:
    """The session's ``default_storage_engine`` and ``sql_mode`` (None: not known)."""
    found: list[bytes | None] = []

    def on_result(res: t.Any) -> None:
        shown = rows_of(res)
        if shown is not None and shown[1]:
            found.extend(v if isinstance(v, bytes) or v is None else str(v).encode()
                         for v in shown[1][0])

    with contextlib.suppress(Exception):
        run(b"SELECT @@default_storage_engine, @@sql_mode", on_result)
    return (found[0], found[1]) if len(found) == 2 else (None, None)


def drop(raw: t.Any) -> None:
    """Close the socket without a COM_QUIT: the reply state is unknown (mysqlclient: close)."""
    with contextlib.suppress(Exception):
        if pymysql_compat.is_pymysql(raw):
            pymysql_compat.force_close(raw)
        else:
            raw.close()
