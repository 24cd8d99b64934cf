"""What the server says about the tables a shortcut writes, and the counters it must keep.

A shortcut (coalescing one-row INSERTs, one commit for a batch, a file as one transaction)
equals the plain path only where a failed statement leaves nothing behind: the table is
transactional, no trigger on it may write elsewhere, no column draws on a sequence, and an
AUTO_INCREMENT counter that a rolled-back batch advanced is put back. Each of those is asked
of the server, for the table *as the server resolves the name* at that moment (``SHOW CREATE
TABLE``: a temporary table first, names compared as the server compares them), never read
from the file's text. Answers are kept until a statement that is not DML is sent (any DDL,
``SET``, ``USE`` … may change them); the session's ``sql_mode`` and transaction state are read
back from the server the same way, never parsed from ``SET`` text.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

from ..pool.drivers import error_code
from .scan import code_spans
from .statement import first_word

#: (schema or None for the current database, table), unquoted.
Table = tuple[str | None, str]

_DML = frozenset({b"INSERT", b"REPLACE", b"UPDATE", b"DELETE", b"SELECT"})
_ENGINE = re.compile(r"\)\s*ENGINE=(\w+)[^\n]*\Z")
_COUNTER = re.compile(r"\bAUTO_INCREMENT=(\d+)")
_AUTO_COLUMN = re.compile(r"^\s+`(?:[^`]|``)+` [^\n]*\bAUTO_INCREMENT\b", re.M)
_SEQUENCE_USE = re.compile(r"\b(?:nextval|lastval|setval)\s*\(|\bNEXT\s+VALUE\s+FOR\b", re.I)
# In a DML statement's code (outside literals): a call or subquery, a variable, a SELECT.
_NOT_LITERAL = re.compile(rb"[\w$`]\s*\(|@|\bSELECT\b|\bNEXT\s+VALUE\b|\bPREVIOUS\s+VALUE\b",
                          re.I)
#: A row whose first value the server numbers when that column is AUTO_INCREMENT: NULL,
#: DEFAULT or 0 (conservative: a match inside a string literal only counts it as numbered).
NUMBERED = re.compile(rb"(?:VALUES?|\))\s*,?\s*\(\s*(?:NULL|DEFAULT|[-+]?0+(?:\.0*)?|'0*')\s*[,)]",
                      re.I)
_VALUES_AT = re.compile(rb"\bVALUES?\s*(?=\()", re.I)


@dataclass(frozen=True, slots=True)
class TableFacts:
    """What a shortcut needs to know about one table."""

    #: Exists, transactional engine, no trigger, no column drawing on a sequence.
    safe: bool
    #: Has an AUTO_INCREMENT column (a rolled-back batch may have advanced its counter).
    auto_increment: bool
    #: That column is the table's first (rows without a column list give it first).
    auto_first: bool = False


_UNSAFE = TableFacts(False, False)


def quote(table: Table) -> str:
    schema, name = table
    named = "`" + name.replace("`", "``") + "`"
    return named if schema is None else "`" + schema.replace("`", "``") + "`." + named


def keeps_facts(sql: bytes) -> bool:
    """Whether *sql* leaves tables, triggers and the session's mode as they were (DML)."""
    return first_word(sql) in _DML


def reaches_only_its_table(sql: bytes) -> bool:
    """Whether a DML statement's effects are its own table's rows only: literal values, no
    function, subquery or variable that could write elsewhere or read session state (a
    trigger is the table's, see :class:`ServerFacts`). Decided on the splitter's own
    tokens: what is inside literals does not count."""
    body = sql
    if first_word(sql) in (b"INSERT", b"REPLACE"):
        found = _VALUES_AT.search(sql, 0, 4096)
        if found is None:  # INSERT … SELECT, INSERT … SET
            return False
        body = sql[found.end():]
    if _NOT_LITERAL.search(body) is None:  # not even inside literals: none in the code
        return True
    return not any(_NOT_LITERAL.search(body, a, b) for a, b in code_spans(body))


class ServerFacts:
    """Answers from the server over the DB-API connection *raw* (nothing else in flight)."""

    def __init__(self, raw: t.Any) -> None:
        self.raw = raw
        self.tables: dict[Table, TableFacts] = {}
        self._session: tuple[bool, bool] | None = None
        self._transactional: frozenset[str] | None = None

    def _rows(self, sql: str, args: t.Sequence[t.Any] | None = None
              ) -> list[tuple[t.Any, ...]]:
        cursor = self.raw.cursor()
        try:
            cursor.execute(sql, args)
            return list(cursor.fetchall() or ())
        finally:
            cursor.close()

    def sent(self, sql: bytes) -> None:
        """Note a statement that was sent: anything but DML forgets every answer."""
        if not keeps_facts(sql):
            self.forget()

    def forget(self) -> None:
        self.tables.clear()
        self._session = None

    def _engines(self) -> frozenset[str]:
        if self._transactional is None:
            self._transactional = frozenset(
                str(row[0]).upper() for row in self._rows(
                    "SELECT ENGINE FROM information_schema.ENGINES WHERE TRANSACTIONS = 'YES'"))
        return self._transactional

    def show_create(self, table: Table) -> str | None:
        """``SHOW CREATE TABLE`` as the server resolves *table* now (None: no such table)."""
        try:
            found = self._rows(f"SHOW CREATE TABLE {quote(table)}")
        except Exception as error:  # no such table, or not locked by LOCK TABLES: unknown
            code = error_code(error)
            if code is not None and code < 2000:
                return None
            raise
        if not found or len(found[0]) < 2:
            return None
        value = found[0][1]
        return value.decode() if isinstance(value, bytes) else str(value)

    def table(self, table: Table) -> TableFacts:
        """The facts of *table* (kept until a statement other than DML is sent)."""
        known = self.tables.get(table)
        if known is not None:
            return known
        create = self.show_create(table)
        facts = _UNSAFE
        if create is not None and create.startswith(("CREATE TABLE", "CREATE TEMPORARY TABLE")):
            engine = _ENGINE.search(create)
            transactional = engine is not None and engine.group(1).upper() in self._engines()
            auto = _AUTO_COLUMN.search(create)
            first = create.find("\n  `")
            facts = TableFacts(transactional and not _SEQUENCE_USE.search(create)
                               and not self._triggers(table), auto is not None,
                               auto is not None and auto.start() == first + 1)
        self.tables[table] = facts
        return facts

    def _triggers(self, table: Table) -> bool:
        # Compared case-insensitively: any trigger on a table of that name counts.
        schema, name = table
        return bool(self._rows(
            "SELECT 1 FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = "
            "COALESCE(%s, DATABASE()) AND LOWER(EVENT_OBJECT_TABLE) = LOWER(%s) LIMIT 1",
            (schema, name)))

    def session(self) -> tuple[bool, bool]:
        """(the session's sql_mode is strict, a transaction of the file's own is open or
        autocommit is off), as the server reports them now."""
        if self._session is None:
            row = self._rows("SELECT @@sql_mode, @@autocommit, @@in_transaction")[0]
            mode = (row[0].decode() if isinstance(row[0], bytes) else str(row[0])).upper()
            strict = "STRICT_TRANS_TABLES" in mode or "STRICT_ALL_TABLES" in mode
            self._session = (strict, not int(row[1]) or bool(int(row[2])))
        return self._session

    def counter(self, table: Table) -> int | None:
        """The table's AUTO_INCREMENT counter now (read fresh: rows move it)."""
        create = self.show_create(table)
        if create is None:
            return None
        found = _COUNTER.search(create[create.rfind(")"):])
        return int(found.group(1)) if found else 1


class Counters:
    """AUTO_INCREMENT counters to put back when a batch (or a file run as one transaction)
    is rolled back: InnoDB does not return the ids a rolled-back statement drew, so rows
    re-sent after it would get other ids than a row-by-row load gives them."""

    def __init__(self, facts: ServerFacts) -> None:
        self.facts = facts
        self.saved: dict[Table, int] = {}

    def remember(self, tables: t.Iterable[Table]) -> None:
        """Read the counter of each AUTO_INCREMENT table of *tables* not saved yet."""
        for table in tables:
            if table not in self.saved and self.facts.table(table).auto_increment:
                value = self.facts.counter(table)
                if value is not None:
                    self.saved[table] = value

    def restore(self) -> None:
        """Put every saved counter back (after the rollback; an implicit commit, so never
        inside a transaction of the file's own) and forget them."""
        for table, value in self.saved.items():
            self.facts._rows(f"ALTER TABLE {quote(table)} AUTO_INCREMENT = {int(value)}")
        self.saved.clear()

    def clear(self) -> None:
        self.saved.clear()
