"""Coalesce consecutive one-row INSERTs into one multi-row INSERT, as a dump's extended INSERT.

``mysqldump --skip-extended-insert`` and hand-written seed files send one ``INSERT`` per row;
the server parses, plans and logs each on its own, which costs about five times the work of
the same rows in one statement (MySQL's world dump: 0.20 s against 0.04 s). Inside a batch
(:mod:`.apply`), consecutive statements ``INSERT [IGNORE] INTO t [(cols)] VALUES (…)`` or
``REPLACE INTO …`` with the same bytes up to ``VALUES`` and nothing but literals in their rows
are sent as one statement.

The end state is the same as row after row only where a failed statement undoes itself, so a
run is coalesced only when the server says its table is transactional with no trigger, and
its AUTO_INCREMENT counter can be put back (:mod:`.facts`), asked when the batch is sent. If a
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

from .facts import NUMBERED, ServerFacts, Table, TableFacts, keeps_facts
from .statement import TABLE, Statement

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
_NULL = re.compile(rb"null", re.I)


def _unquote(name: bytes) -> str:
    text = name.decode("utf-8", "surrogateescape")
    return text[1:-1].replace("``", "`") if text[:1] == "`" else text


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


@dataclass(frozen=True, slots=True)
class Candidate:
    """An INSERT that may be coalesced with its neighbours of the same prefix."""

    prefix: bytes
    table: Table
    #: Its rows hold a NULL: coalesced only under a strict sql_mode (see the module doc).
    null: bool
    #: No column list and no first value the server would number: with the table's
    #: AUTO_INCREMENT column first, every id is written (a failure burns none).
    explicit_first: bool = False


class Coalescer:
    """Finds candidates in file order; whether one is coalesced is decided when its batch is
    sent, from the server (:mod:`.facts`): the table as the server resolves it, transactional,
    no trigger; ``NULL`` rows only while the session's ``sql_mode``, read back from the
    server, is strict (without ``STRICT_TRANS_TABLES``/``STRICT_ALL_TABLES`` a multi-row
    INSERT stores a column's implicit default where a one-row INSERT fails on a NULL for a
    NOT NULL column: the manual's "INSERT Statement")."""

    def __init__(self) -> None:
        #: The last candidate's (prefix, table): a dump's next row starts with the same bytes.
        self._last: tuple[bytes, Table] | None = None

    def candidate(self, sql: bytes) -> Candidate | None:
        """The candidate *sql* is, or None."""
        last = self._last
        if last is not None and sql.startswith(last[0]) and len(sql) <= MERGE_MAX_BYTES \
                and _ROWS.fullmatch(sql, len(last[0])) is not None:
            prefix, table = last
        else:
            found = insert_prefix(sql)
            if found is None:
                return None
            prefix, table = self._last = found
        cut = len(prefix)
        at = prefix.upper().rfind(b"VALUE")
        explicit = b"(" not in prefix and NUMBERED.search(sql, at) is None
        return Candidate(prefix, table, _NULL.search(sql, cut) is not None, explicit)


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


def settle_point(batch: t.Sequence[Statement], merge: t.Sequence[Candidate | None]) -> int:
    """1 + the index of the last statement of *batch* that may change what the server says
    about tables or the session (anything but DML) and has a run that may be coalesced after
    it (three or more candidates of one prefix); 0: none. The statements up to there are
    sent first, so that coalescing is decided on the server's state after them."""
    run_after = False
    index = len(batch) - 1
    while index >= 0:
        found = merge[index]
        if found is not None:
            start = index
            while start > 0 and (prev := merge[start - 1]) is not None and \
                    prev.prefix == found.prefix:
                start -= 1
            run_after = run_after or index - start >= 2
            index = start - 1
            continue
        if run_after and not keeps_facts(batch[index].sql):
            return index + 1
        index -= 1
    return 0


def proven(facts: ServerFacts, merge: t.Sequence[Candidate | None]) -> list[bytes | None]:
    """The prefixes of *merge* the server's answers prove safe to coalesce in a parallel
    load: a transactional table without triggers; with an AUTO_INCREMENT column only when
    the rows write every id (ids a failure burns could not be put back while other
    connections insert); NULL rows only under a strict mode."""
    chosen: list[bytes | None] = []
    for found in merge:
        table = facts.table(found.table) if found is not None else None
        ok = (found is not None and table is not None and table.safe
              and (not table.auto_increment or writes_ids(found, table))
              and (not found.null or facts.session()[0]))
        chosen.append(found.prefix if ok and found is not None else None)
    return chosen


def writes_ids(found: Candidate, table: TableFacts) -> bool:
    """Whether every row of *found* gives the table's AUTO_INCREMENT column a value: then a
    failed multi-row INSERT leaves the counter where row by row leaves it (the server moves
    it to a written id whether or not the statement is rolled back)."""
    return table.auto_first and found.explicit_first
