"""Which files can run as one transaction, so that a failure undoes them entirely.

MySQL commits implicitly before and after DDL (the manual's list of "Statements That Cause an
Implicit Commit"), so only a file of plain DML can be undone: every statement is ``INSERT``,
``REPLACE``, ``UPDATE`` or ``DELETE`` on one table, or a ``SELECT``, and every table written
uses a transactional engine (InnoDB, …). ``SET``, ``USE``, ``LOCK TABLES``, ``CALL`` (a
procedure may do anything) and anything else make the file run statement by statement.
"""

from __future__ import annotations

import re
import typing as t

from .facts import ServerFacts, Table, reaches_only_its_table
from .files import SqlFile
from .split import split_file
from .statement import NAME, TABLE, first_word

#: Files up to this size are scanned to decide whether they can run as one transaction.
TRANSACTION_MAX_BYTES = 64 * 1024 * 1024

_TARGET = {
    b"INSERT": re.compile(rb"INSERT\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE)\s+)*"
                          rb"(?:INTO\s+)?" + TABLE, re.I),
    b"REPLACE": re.compile(rb"REPLACE\s+(?:(?:LOW_PRIORITY|DELAYED)\s+)*(?:INTO\s+)?" + TABLE,
                           re.I),
    b"UPDATE": re.compile(rb"UPDATE\s+(?:(?:LOW_PRIORITY|IGNORE)\s+)*" + TABLE +
                          rb"\s+(?:(?:AS\s+)?" + NAME + rb"\s+)?SET\b", re.I),
    b"DELETE": re.compile(rb"DELETE\s+(?:(?:LOW_PRIORITY|QUICK|IGNORE)\s+)*FROM\s+" + TABLE +
                          rb"(?:\s+(?:WHERE|ORDER|LIMIT|RETURNING)\b|\s*$)", re.I),
}


def _unquote(name: bytes) -> str:
    text = name.decode("utf-8", "replace")
    return text[1:-1].replace("``", "`") if text.startswith("`") else text


def transactional(raw: t.Any, file: SqlFile, database: str, *, comments: bool = False,
                  facts: ServerFacts | None = None) -> set[Table] | None:
    """The tables *file* writes when it can run as one transaction, else None: every
    statement is ``INSERT``/``REPLACE``/``UPDATE``/``DELETE`` (one table each) or ``SELECT``
    with literal values only (:func:`.facts.reaches_only_its_table`), and the server says
    every table written is transactional with no trigger and no sequence default.

    Nothing on the manual's list of statements that commit implicitly can pass; a file over
    :data:`TRANSACTION_MAX_BYTES`, or standard input, is not scanned (None).
    """
    if file.is_stdin or file.size > TRANSACTION_MAX_BYTES:
        return None
    tables: set[Table] = set()
    for stmt in split_file(file.path, comments=comments):
        if stmt.path != file.path:  # a sourced file: its content is not this file's checksum
            return None
        word = first_word(stmt.sql)
        if word == b"SELECT":
            if re.search(rb"\bINTO\b", stmt.sql, re.I) or not reaches_only_its_table(stmt.sql):
                return None
            continue
        found = target(stmt.sql)
        if found is None or not reaches_only_its_table(stmt.sql):
            return None
        tables.add((found[0] or database, found[1]))
    if not tables:
        return None
    facts = facts or ServerFacts(raw)
    if not all(facts.table(table).safe for table in tables):
        return None
    return tables


_DML = frozenset(_TARGET)
_AUTOCOMMIT = re.compile(rb"SET\b[^;]*\bautocommit\b", re.I)


def target(stmt_sql: bytes) -> tuple[str | None, str] | None:
    """(schema or None for the current database, table) that a one-table DML statement
    writes, or None when it is not one."""
    pattern = _TARGET.get(first_word(stmt_sql))
    found = pattern.match(stmt_sql.lstrip()) if pattern is not None else None
    if found is None:
        return None
    if found.group(2) is None:
        return None, _unquote(found.group(1))
    return _unquote(found.group(1)), _unquote(found.group(2))


class GroupCommit:
    """Which batches of DML may run inside one transaction: one commit instead of one per
    statement (with ``innodb_flush_log_at_trx_commit=1``, one log flush each).

    A batch qualifies when every statement is ``INSERT``/``REPLACE``/``UPDATE``/``DELETE`` of
    one table with literal values only, the server says each table is transactional with no
    trigger (:class:`.facts.ServerFacts`, asked when the batch is sent), and the file is not
    managing transactions or locks itself (``START TRANSACTION``, ``BEGIN``, ``XA``,
    ``SAVEPOINT``, ``LOCK TABLES``, ``SET autocommit`` switch this off: for the rest of the
    file, or until ``UNLOCK TABLES``). If one statement fails, the batch is rolled back whole
    (its AUTO_INCREMENT counters put back, :class:`.facts.Counters`), so the statements
    before it in that batch count as not applied: the end state is the plain path's.
    """

    def __init__(self, raw: t.Any, facts: ServerFacts | None = None) -> None:
        self.raw = raw
        self.facts = facts or ServerFacts(raw)
        self.locked = False
        self.manual = False
        # The same two flags, but as of the last statement read (batches are formed ahead of
        # sending them): see wrappable.
        self._reading_locked = False
        self._reading_manual = False

    def wrappable(self, stmt_sql: bytes) -> bool:
        """Note *stmt_sql*, read in file order; whether it is DML that a batch may wrap.

        Once the file manages its own transactions (``SET autocommit``, ``BEGIN`` …) or holds
        ``LOCK TABLES``, nothing is: its DML then shares batches with the statements around
        it (``SET autocommit=0`` … ``COMMIT`` goes as one run of round trips, not split at
        every switch between DML and the rest; the server runs them in order either way).
        """
        word = first_word(stmt_sql)
        if word in _DML:
            return not (self._reading_locked or self._reading_manual) and \
                target(stmt_sql) is not None and reaches_only_its_table(stmt_sql)
        if word == b"LOCK":
            self._reading_locked = True
        elif word == b"UNLOCK":
            self._reading_locked = False
        elif word in (b"START", b"BEGIN", b"XA", b"SAVEPOINT") or _AUTOCOMMIT.match(stmt_sql):
            self._reading_manual = True
        return False

    def sent(self, stmt_sql: bytes) -> None:
        """Note a statement that was sent (in file order)."""
        word = first_word(stmt_sql)
        if word in _DML:
            return
        if word == b"LOCK":
            self.locked = True
        elif word == b"UNLOCK":
            self.locked = False
        elif word in (b"START", b"BEGIN", b"XA", b"SAVEPOINT") or _AUTOCOMMIT.match(stmt_sql):
            self.manual = True

    def targets(self, batch: t.Sequence[bytes]) -> list[Table] | None:
        """The tables these statements write, or None when one is not one-table DML."""
        found = [target(sql) for sql in batch]
        return None if any(f is None for f in found) else [f for f in found if f is not None]

    def allowed(self, batch: t.Sequence[bytes]) -> bool:
        """Whether these statements (about to be sent together) may share one transaction."""
        if self.locked or self.manual or len(batch) < 2:
            return False
        tables = self.targets(batch)
        if tables is None or not all(reaches_only_its_table(sql) for sql in batch):
            return False
        if not all(self.facts.table(table).safe for table in set(tables)):
            return False
        return not self.facts.session()[1]
