"""Coalesce consecutive one-row INSERTs into one multi-row INSERT, as a dump's extended INSERT.

``mysqldump --skip-extended-insert`` and hand-written seed files send one ``INSERT`` per row;
the server parses, plans and logs each on its own, which costs about five times the work of
the same rows in one statement (MySQL's world dump: 0.20 s against 0.04 s). Inside a batch
(:mod:`.apply`), consecutive statements ``INSERT [IGNORE] INTO t [(cols)] VALUES (…)`` or
``REPLACE INTO …`` with the same bytes up to ``VALUES`` and nothing but literals in their rows
are sent as one statement.

The end state is the same as row after row only where a failed statement undoes itself, so a
run is coalesced only when its table is transactional: declared ``ENGINE=InnoDB`` by a
``CREATE TABLE`` earlier in the file (:class:`TableEngines`), or checked by the caller (a
batch that :class:`.transaction.GroupCommit` wraps, a file that runs as one transaction). If a
coalesced statement fails, the server has undone all of its rows; the caller sends them again
one by one, so the error names the exact row's ``file:line`` and the rows before it count as
applied, as with the client. The last statement of a run is sent on its own, so that
``LAST_INSERT_ID()`` afterwards is the one a row-by-row load leaves (not the first id of the
multi-row statement). Rows with functions (``NOW()``, ``LAST_INSERT_ID()``), variables,
``ON DUPLICATE KEY UPDATE`` or ``SELECT`` are never coalesced.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

from .statement import TABLE, first_word

#: Statements up to this size are candidates; bigger ones are extended INSERTs already.
MERGE_MAX_BYTES = 16 * 1024
#: Error codes after which the server may have undone more than the failed statement (the
#: whole transaction): the rows are not sent again.
NOT_REPLAYED = frozenset({1205, 1213, 1180, 1181, 1317, 1927})

_PREFIX = re.compile(rb"(?:INSERT(?:\s+IGNORE)?|REPLACE)\s+INTO\s+" + TABLE +
                     rb"\s*(?:\([^()'\"]*\)\s*)?VALUES?\s*(?=\()", re.I)
_LITERAL = (rb"(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
            rb"|NULL|TRUE|FALSE|DEFAULT|0x[0-9A-Fa-f]+|[xXbB]'[0-9A-Fa-f]*'"
            rb"|_[A-Za-z0-9]+\s*(?:'(?:[^'\\]|\\.)*'|0x[0-9A-Fa-f]+))")
# Doubled quotes inside a literal parse as two adjacent literals: "'a''b'" is 'a' then 'b'.
_VALUE = _LITERAL + rb"(?:" + _LITERAL + rb")*"
_TUPLE = rb"\(\s*" + _VALUE + rb"(?:\s*,\s*" + _VALUE + rb")*\s*\)"
_ROWS = re.compile(_TUPLE + rb"(?:\s*,\s*" + _TUPLE + rb")*\s*", re.I)
_ENGINE = re.compile(rb"\bENGINE\s*=?\s*`?(\w+)", re.I)
_CREATE = re.compile(rb"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?TABLE\s+"
                     rb"(?:IF\s+NOT\s+EXISTS\s+)?" + TABLE + rb"\s*\(", re.I)
# CREATE statements that leave tables as they were.
_CREATE_OTHER = re.compile(rb"(?:\s|/\*M?!\d*)*CREATE\s+(?:OR\s+REPLACE\s+)?"
                           rb"(?:ALGORITHM\s*=\s*\w+\s+)?(?:DEFINER\s*=\s*\S+\s+)?"
                           rb"(?:SQL\s+SECURITY\s+\w+\s+)?(?:UNIQUE\s+)?"
                           rb"(?:VIEW|TRIGGER|PROCEDURE|FUNCTION|EVENT|INDEX)\b", re.I)
_STORAGE_ENGINE = re.compile(rb"storage_engine", re.I)
_MODE_WORD = re.compile(rb"sql_mode", re.I)
# An assignment to the session's sql_mode (not to @old_sql_mode, not a read of @@sql_mode).
_MODE_SET = re.compile(rb"(?:@@(?:SESSION\.|LOCAL\.)?|(?<![\w@.$]))sql_mode\s*:?=\s*"
                       rb"('[^']*'|\"[^\"]*\"|[^,;*]+)", re.I)
_NULL = re.compile(rb"null", re.I)
_EXEC_OPEN = re.compile(rb"^\s*/\*M?!\d*\s*")
#: Statements that leave every table's engine as it was.
_KEEPS_ENGINES = frozenset({b"INSERT", b"REPLACE", b"UPDATE", b"DELETE", b"SELECT", b"SET",
                            b"COMMIT", b"LOCK", b"UNLOCK", b"START", b"BEGIN", b"SAVEPOINT",
                            b"RELEASE", b"ROLLBACK", b"SHOW", b"DO", b"FLUSH", b"ANALYZE",
                            b"TRUNCATE"})
_TRANSACTIONAL = frozenset({b"INNODB"})

Table = tuple[bytes | None, bytes]


def _unquote(name: bytes) -> bytes:
    return name[1:-1].replace(b"``", b"`").lower() if name[:1] == b"`" else name.lower()


def _table(found: re.Match[bytes]) -> Table:
    if found.group(2) is None:
        return None, _unquote(found.group(1))
    return _unquote(found.group(1)), _unquote(found.group(2))


def insert_prefix(sql: bytes) -> tuple[bytes, Table] | None:
    """(the bytes up to ``VALUES``, the table) of a literal-only ``INSERT``/``REPLACE``, or
    None. Two statements with the same prefix may be sent as one: ``prefix + rows1 + "," +
    rows2``."""
    if len(sql) > MERGE_MAX_BYTES or sql[:1] not in b"IiRr":
        return None
    found = _PREFIX.match(sql)
    if found is None or _ROWS.fullmatch(sql, found.end()) is None:
        return None
    return sql[:found.end()], _table(found)


def merge(statements: t.Sequence[bytes], prefix: bytes) -> bytes:
    """One INSERT with the rows of *statements* (all with *prefix*), in their order."""
    cut = len(prefix)
    return prefix + b",".join(sql[cut:].rstrip() for sql in statements)


class Coalescer:
    """What the file has said so far that decides coalescing, read in file order.

    Tables: ``CREATE TABLE t (…) ENGINE=InnoDB`` (or with no ``ENGINE`` while the default is
    known to be InnoDB) makes *t* transactional; any statement that may change tables
    (``DROP``, ``ALTER``, ``RENAME``, ``USE`` …) forgets everything; DML, ``SET``, ``COMMIT``,
    locks and ``CREATE VIEW``/``TRIGGER``/``PROCEDURE``/… keep it (a ``SET`` of
    ``default_storage_engine`` forgets the default).

    ``sql_mode``: without ``STRICT_TRANS_TABLES``/``STRICT_ALL_TABLES`` a multi-row INSERT
    stores a column's implicit default where a one-row INSERT fails on a NULL for a NOT NULL
    column (the manual's "INSERT Statement"), so rows with ``NULL`` are coalesced only while
    the mode is known to be strict (the session's at the start, or a quoted ``SET sql_mode``).
    """

    def __init__(self, default_engine: bytes | None = None, sql_mode: bytes | None = None
                 ) -> None:
        self.default = default_engine.upper() if default_engine else None
        self.known: dict[Table, bool] = {}
        self.strict = sql_mode is not None and _strict(sql_mode)
        #: The last candidate's (prefix, table): a dump's next row starts with the same bytes.
        self._last: tuple[bytes, Table] | None = None

    def note(self, sql: bytes) -> None:
        """Take *sql* into account (statements in file order, as read)."""
        if self._last is not None and sql.startswith(self._last[0]):
            return  # another row of the last INSERT's table: nothing changes
        word = first_word(sql)
        if word in _KEEPS_ENGINES:
            if word == b"SET":
                if _STORAGE_ENGINE.search(sql):
                    self.default = None
                if _MODE_WORD.search(sql):
                    self._set_mode(sql)
            return
        found = _CREATE.match(_EXEC_OPEN.sub(b"", sql, count=1)) if word == b"CREATE" else None
        if found is None:
            if word != b"CREATE" or _CREATE_OTHER.match(sql) is None:
                self.known.clear()
            return
        # Every ENGINE in the statement must say InnoDB (a column or a comment could say more).
        engines = {m.group(1).upper() for m in _ENGINE.finditer(sql, found.end())}
        self.known[_table(found)] = engines <= _TRANSACTIONAL if engines else \
            self.default in _TRANSACTIONAL

    def _set_mode(self, sql: bytes) -> None:
        for assigned in _MODE_SET.finditer(sql):
            value = assigned.group(1)
            self.strict = value[:1] in (b"'", b'"') and _strict(value)

    def transactional(self, table: Table) -> bool:
        """Whether the file made *table* a transactional table (False when unknown)."""
        return self.known.get(table, False)

    def candidate(self, sql: bytes) -> tuple[bytes, bool] | None:
        """(prefix, whether the file made its table transactional) of an INSERT that may be
        coalesced with its neighbours of the same prefix, or None."""
        last = self._last
        if last is not None and sql.startswith(last[0]) and len(sql) <= MERGE_MAX_BYTES \
                and _ROWS.fullmatch(sql, len(last[0])) is not None:
            prefix, table = last
        else:
            found = insert_prefix(sql)
            if found is None:
                return None
            prefix, table = self._last = found
        if not self.strict and _NULL.search(sql, len(prefix)) is not None:
            return None
        return prefix, self.transactional(table)


def _strict(mode: bytes) -> bool:
    mode = mode.upper()
    return b"STRICT_" in mode or b"TRADITIONAL" in mode


@dataclass(frozen=True, slots=True)
class Piece:
    """One statement sent for ``count`` consecutive statements of a batch."""

    sql: bytes
    count: int


def pieces(batch: t.Sequence[bytes], prefixes: t.Sequence[bytes | None]) -> list[Piece]:
    """*batch* as the statements to send: runs of two or more statements with the same
    prefix (None: not coalesced) merged, except each run's last statement."""
    out: list[Piece] = []
    i, n = 0, len(batch)
    while i < n:
        prefix = prefixes[i]
        j = i + 1
        if prefix is not None:
            while j < n and prefixes[j] == prefix:
                j += 1
        if j - i > 2:  # rows i .. j-2 together, row j-1 alone (LAST_INSERT_ID)
            out.append(Piece(merge(batch[i:j - 1], prefix or b""), j - 1 - i))
            out.append(Piece(batch[j - 1], 1))
        else:
            out.extend(Piece(sql, 1) for sql in batch[i:j])
        i = j
    return out
