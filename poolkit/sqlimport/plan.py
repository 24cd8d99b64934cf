"""Plan a parallel load: recognise dump-shaped SQL and group its statements into per-table units.

A mysqldump / mariadb-dump file is a session prelude (``SET NAMES``, ``TIME_ZONE``,
``SQL_MODE``, ``FOREIGN_KEY_CHECKS=0``, …, mostly inside ``/*!40101 … */``), then per table
``DROP TABLE IF EXISTS``, ``CREATE TABLE``, ``LOCK TABLES``, ``INSERT``\\ s, ``UNLOCK TABLES`` and
that table's triggers, then events, routines and the final views, then the epilogue that
restores the session. :func:`plan` reads statements in file order (streaming, constant memory)
and labels each one with a :class:`Step`:

``session``
    A simple ``SET`` (literals, ``@var``, ``@@var`` on the right) or ``USE``: part of the
    session every connection must have before its next statement. The executor replays the
    session log on each connection lazily, in file order, so every connection's session is the
    one a serial load would have at that point.
``ordered``
    A statement of a table unit, run in file order on the unit's own connection.
``rows``
    A plain ``INSERT`` into a unit's InnoDB table with a primary key while the unit's session
    is the shared one: any connection may run it, in any order (the rows' identity is their
    key; CHECKSUM TABLE is order-independent). Not while the session would make MariaDB
    bulk-load the table under a lock held until ``COMMIT`` (``autocommit``, ``unique_checks``
    and ``foreign_key_checks`` all 0): then its rows stay on the unit's connection
    (:func:`.parallel.bulk_insert_locks`).
``skip``
    ``LOCK TABLES``/``UNLOCK TABLES`` of a unit whose rows are spread over connections: a
    table locked by one connection would block the others; the lock changes no data.
``barrier``
    Anything else. It waits for all earlier work and runs alone, and later work waits for it;
    consecutive barriers run in order on one connection. Views, routines and events (after
    every table in a dump) are barriers, and so is everything the planner does not know.

``COMMIT`` is part of the session log too: each connection commits its own earlier work
before its next job and at the end of the file (``SET AUTOCOMMIT=0`` dumps such as sakila's
data: every connection holds part of the transaction).

Units open at ``DROP TABLE IF EXISTS t`` while ``FOREIGN_KEY_CHECKS`` is 0 (as in every dump),
so a unit runs in any order relative to the others and can be re-run from its start. A data-only
dump (``--no-create-info``, sakila's data file) opens a *data* unit at a table's first
``INSERT``/``LOCK TABLES``; it cannot be re-run (its rows would be duplicates), which the
result of a failed load says. A ``SET`` between a unit's statements belongs to the unit when a
definition follows it (``CREATE TABLE``/``VIEW``/``TRIGGER``: dumps save, set and restore
``character_set_client`` and ``sql_mode`` around them), otherwise to the shared session.
A statement that may change the session in ways the planner cannot replay (``SET`` with a
subquery or a function, ``CALL``, ``SELECT … INTO @v``, ``START TRANSACTION``, ``ROLLBACK``)
makes the rest of the file serial.
"""

from __future__ import annotations

import os
import re
import typing as t
from dataclasses import dataclass

from ..errors import SqlFileError
from .facts import NUMBERED, reaches_only_its_table
from .files import SNIFF_SIZE, SqlFile
from .statement import Statement

SESSION = "session"
ORDERED = "ordered"
ROWS = "rows"
SKIP = "skip"
BARRIER = "barrier"

#: The head of a statement examined to classify it (the rest is data).
HEAD_BYTES = 2048

_NAME = r"(?:`(?:[^`]|``)+`|[\w$]+)"
_QNAME = rf"(?:{_NAME}\s*\.\s*)?({_NAME})"
_EXEC_OPEN = re.compile(rb"/\*M?!\d*")
_PLAIN_COMMENT = re.compile(rb"/\*(?!M?!).*?\*/|(?:--[ \t]|#)[^\n]*", re.S)
_SPACES = re.compile(r"\s+")

_DROP_TABLE = re.compile(rf"DROP TABLE IF EXISTS {_QNAME}$", re.I)
_CREATE_TABLE = re.compile(rf"CREATE TABLE (?:IF NOT EXISTS )?{_QNAME} ?\(", re.I)
_LOCK = re.compile(rf"LOCK TABLES {_QNAME} WRITE$", re.I)
_UNLOCK = re.compile(r"UNLOCK TABLES$", re.I)
_KEYS = re.compile(rf"ALTER TABLE {_QNAME} (?:DISABLE|ENABLE) KEYS$", re.I)
# INSERT … SELECT reads other tables: not a unit's statement.
_INSERT = re.compile(rf"(INSERT|REPLACE)( IGNORE)? INTO {_QNAME}(?: ?\([^()]*\))? ?VALUES?\b", re.I)
_DROP_VIEW = re.compile(rf"DROP VIEW IF EXISTS {_QNAME}$", re.I)
_CREATE_VIEW = re.compile(rf"CREATE (?:ALGORITHM=\w+ )?(?:DEFINER=\S+ )?(?:SQL SECURITY \w+ )?"
                          rf"VIEW {_QNAME} AS ", re.I)
_TRIGGER = re.compile(rf"CREATE (?:DEFINER=\S+ )?TRIGGER (?:IF NOT EXISTS )?{_QNAME} "
                      rf"(?:BEFORE|AFTER) (?:INSERT|UPDATE|DELETE) ON {_QNAME}", re.I)
_DROP_TRIGGER = re.compile(rf"DROP TRIGGER IF EXISTS {_QNAME}$", re.I)
_DEFINITION = re.compile(r"CREATE (?:TABLE|(?:ALGORITHM=\w+ )?(?:DEFINER=\S+ )?"
                         r"(?:SQL SECURITY \w+ )?VIEW|(?:DEFINER=\S+ )?TRIGGER)\b", re.I)
# Where a data-only dump's table begins.
_DATA_START = re.compile(rf"(?:LOCK TABLES {_QNAME} WRITE$|ALTER TABLE {_QNAME} DISABLE KEYS$|"
                         rf"INSERT INTO {_QNAME}(?: ?\([^()]*\))? ?VALUES?\b)", re.I)
_USE = re.compile(rf"USE ({_NAME})$", re.I)
_COMMIT = re.compile(r"COMMIT(?: WORK)?$", re.I)
_TRANSACTION = re.compile(r"(?:START TRANSACTION|BEGIN|ROLLBACK|SAVEPOINT|RELEASE SAVEPOINT|"
                          r"CALL|XA|SET (?:GLOBAL |SESSION |LOCAL )?TRANSACTION)\b", re.I)
_SELECT_INTO = re.compile(r"^(?:SELECT|WITH)\b", re.I)
_AUTO_COLUMN = re.compile(rb"\bAUTO_INCREMENT\b(?!\s*=)", re.I)

# SET's right-hand sides the log can replay: literals, variables, ON/OFF/DEFAULT.
_VALUE = (r"(?:'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|[-+]?\d+(?:\.\d+)?|@@?[\w.$]+"
          r"|@`[^`]+`|[\w$]+)")
_ASSIGN = re.compile(rf"(?:(?:SESSION|LOCAL) |@@(?:SESSION\.|LOCAL\.)?)?(@?[\w$]+|@`[^`]+`) ?"
                     rf"(?::=|=) ?({_VALUE})", re.I)
_NAMES = re.compile(rf"(?:NAMES|CHARACTER SET|CHARSET) {_VALUE}(?: COLLATE {_VALUE})?$", re.I)


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of the file with what the executor may do with it."""

    stmt: Statement
    #: 0-based position of the statement in the file (counting sourced files' statements).
    index: int
    kind: str
    #: The unit it belongs to (ordered/rows/skip), or its serial run (barrier/sync).
    unit: int
    #: The table the unit loads (None for barriers).
    table: str | None = None
    #: First step of a unit that may only start when every earlier unit is done.
    fence: bool = False
    #: The unit is a data unit (no DROP TABLE first): it cannot be re-run.
    data: bool = False


def head_text(sql: bytes, limit: int = HEAD_BYTES) -> str:
    """The statement's first words as the server reads them: comments dropped, executable
    comments opened, whitespace collapsed (``/*!40101 SET NAMES utf8mb4 */`` -> ``SET NAMES
    utf8mb4``)."""
    head = sql[:limit]
    head = _PLAIN_COMMENT.sub(b" ", head)
    head = _EXEC_OPEN.sub(b" ", head).replace(b"*/", b" ")
    text = head.decode("latin-1")
    return _SPACES.sub(" ", text).strip().rstrip(";").strip()


def unquote(name: str) -> str:
    """``\\`a``b\\``` -> ``a`b``; bare names as they are (compared case-insensitively)."""
    if name.startswith("`"):
        return name[1:-1].replace("``", "`")
    return name


def parse_set(text: str) -> list[tuple[str, str]] | None:
    """The assignments of a simple ``SET`` (name, value), or None if it is not one."""
    body = text[4:].strip()
    if _NAMES.match(body):
        return [("character_set_client", body)]
    pairs: list[tuple[str, str]] = []
    pos = 0
    while True:
        found = _ASSIGN.match(body, pos)
        if found is None:
            return None
        pairs.append((found.group(1).lower(), found.group(2)))
        pos = found.end()
        rest = body[pos:].lstrip()
        if not rest:
            return pairs
        if not rest.startswith(","):
            return None
        pos = len(body) - len(rest) + 1
        while pos < len(body) and body[pos] == " ":
            pos += 1


def session_state(state: tuple[tuple[str, str], ...], stmt: Statement, position: int
                  ) -> tuple[tuple[str, str], ...]:
    """*state* after the session statement *stmt*: each variable's value, ``@var`` and
    ``@@var`` on the right resolved to what the state knew (or a name for "unknown"), so that
    equal states mean equal sessions; what the planner cannot read makes it unique."""
    text = head_text(stmt.sql)
    values = dict(state)
    upper = text[:8].upper()
    pairs = parse_set(text) if upper.startswith("SET ") else None
    if pairs is not None:
        for name, value in pairs:
            key = value.lower().removeprefix("@@session.").removeprefix("@@")
            if value.startswith("@"):
                value = values.get(key if value.startswith("@@") else value.lower(),
                                   f"{value.lower()}@start")
            values[name.removeprefix("@@session.")] = value
    elif upper.startswith("USE "):
        values["use"] = text[4:].strip()
    elif not upper.startswith("COMMIT"):
        values["?"] = f"#{position}"  # not understood: equal to no other state
    return tuple(sorted(values.items()))


def looks_like_dump(head: bytes) -> bool:
    """True when a file's first bytes look like mysqldump / mariadb-dump output."""
    if re.search(rb"^-- (?:MySQL|MariaDB) dump ", head[:4096], re.M):
        return True
    # Or dump-shaped: foreign key checks off, then tables (or, data-only, their rows).
    return (re.search(rb"FOREIGN_KEY_CHECKS\s*=\s*0", head, re.I) is not None
            and re.search(rb"DROP TABLE IF EXISTS|^-- Dumping data for table|^LOCK TABLES",
                          head, re.I | re.M) is not None)


class Planner:
    """Labels statements one at a time (see the module doc); :func:`plan` drives it."""

    def __init__(self) -> None:
        self.index = 0
        self.unit = 0
        self.table: str | None = None  # the open table unit's table, lowercased
        self.fanout = False  # its rows may go to any connection
        self.in_barrier = False
        self.serial = False  # the rest of the file is serial
        self.fk_off = False
        self.database = ""  # as far as USE tells
        self.seen: set[str] = set()  # tables of the units since the last barrier
        self.saved: dict[str, str] = {}  # @var -> system variable it saved, in this unit
        self.dirty: set[str] = set()  # system variables the open unit changed
        self.unit_vars: set[str] = set()  # user variables the open unit assigned
        self.pending: list[tuple[Statement, int, list[tuple[str, str]]]] = []
        self.data = False
        #: The unit's LOCK TABLES, until the row after it says whether rows spread.
        self.held: Step | None = None
        self.lock_skipped = False
        #: The unit's connection holds the unit's LOCK TABLES (until its UNLOCK TABLES).
        self.unit_locked = False
        #: A row read the session or other tables under that lock: serial after the UNLOCK.
        self.serial_after_unlock = False
        #: Finds a row the server numbers (the unit's AUTO_INCREMENT column), or None.
        self.numbered: re.Pattern[bytes] | None = None
        #: (the bytes up to VALUES of the last INSERT, its kind): the same prefix, the same kind
        self.fast: tuple[bytes, str] | None = None

    def feed(self, stmt: Statement) -> list[Step]:
        """The steps decided by *stmt* (SETs inside a unit wait for the next statement, and
        so does a unit's ``LOCK TABLES``: the first row after it decides whether rows spread)."""
        index = self.index
        self.index += 1
        held, self.held = self.held, None
        if held is None:
            return self._feed(stmt, index)
        lock = Step(held.stmt, held.index, SKIP, held.unit, held.table, data=held.data)
        if self.fanout and self._spreadable(stmt):
            self.lock_skipped = True
        else:  # the rows stay on the unit's connection, under the file's own lock
            self.fanout = False
            self.unit_locked = True
            lock = Step(held.stmt, held.index, ORDERED, held.unit, held.table, data=held.data)
        return [lock, *self._feed(stmt, index)]

    def finish(self) -> list[Step]:
        """The steps still waiting at the end of the file."""
        held, self.held = self.held, None
        lock = [] if held is None else [held]
        return [*self.flush(), *lock]

    def _spreadable(self, stmt: Statement, head: bool = True) -> bool:
        """Whether *stmt* is a row any connection may insert in any order: a plain INSERT
        with every column given (no column list), literal values only (no function, variable
        or subquery: nothing read from the session or another table), and no value the
        server numbers (NULL, DEFAULT or 0 for the table's AUTO_INCREMENT column)."""
        sql = stmt.sql
        if not stmt.plain or sql[:6].upper() != b"INSERT":
            return False
        if head:
            found = _INSERT.match(head_text(sql))
            if not found or found.group(2):
                return False
        cut = sql.find(b"VALUES", 0, 1024)
        if cut < 0 or b"(" in sql[:cut] or b"ON DUPLICATE KEY" in sql[-4096:].upper():
            return False
        if not reaches_only_its_table(sql):
            return False
        return self.numbered is None or self.numbered.search(sql, cut) is None

    def _feed(self, stmt: Statement, index: int) -> list[Step]:
        fast = self.fast
        if fast is not None and not self.pending and stmt.plain and stmt.sql.startswith(fast[0]):
            # Another INSERT into the same table (a dump's row after row): labelled as the last.
            kind = fast[1]
            if kind != ROWS or self._spreadable(stmt, head=False):
                return [Step(stmt, index, kind, self.unit, self.table, data=self.data)]
        self.fast = None
        text = head_text(stmt.sql)
        upper = text[:32].upper()
        if self.serial:
            return [self._barrier(stmt, index)]
        if upper.startswith("SET "):
            pairs = parse_set(text) if len(stmt.sql) <= HEAD_BYTES else None
            if pairs is None:
                self.serial = True
                return [*self.flush(), self._barrier(stmt, index)]
            if self.table is not None:
                if any(value.lower() in self.unit_vars for _, value in pairs):
                    return [*self.flush(member=True), self._member(stmt, index, pairs)]
                self.pending.append((stmt, index, pairs))
                return []
            return [*self.flush(), self._session(stmt, index, pairs)]
        used = _USE.match(text)
        if used:
            steps = self.flush()
            self._close()
            self.database = unquote(used.group(1)).lower()
            return [*steps, Step(stmt, index, SESSION, 0)]
        if _TRANSACTION.match(text) or (_SELECT_INTO.match(text) and "@" in text):
            self.serial = True
            return [*self.flush(), self._barrier(stmt, index)]
        if _COMMIT.match(text):
            return [*self.flush(), Step(stmt, index, SESSION, 0)]
        dropped = _DROP_TABLE.match(text)
        if dropped and self.fk_off:
            steps = self.flush()
            return [*steps, self._open(stmt, index, unquote(dropped.group(1)))]
        if self.table is not None and self._belongs(text, stmt):
            steps = self.flush(member=_DEFINITION.match(text) is not None)
            return [*steps, *self._unit_step(stmt, index, text)]
        data = _DATA_START.match(text)
        if data and self.fk_off:
            steps = self.flush()
            return [*steps, self._open(stmt, index, unquote(next(g for g in data.groups() if g)),
                                       data=True)]
        if text[:5].upper() == "LOCK ":  # a lock over several tables: the rest in file order
            self.serial = True
        return [*self.flush(), self._barrier(stmt, index)]

    def flush(self, member: bool = False) -> list[Step]:
        """Decide the waiting SETs: the unit's own (*member*), else the shared session."""
        steps = []
        for stmt, index, pairs in self.pending:
            steps.append(self._member(stmt, index, pairs) if member
                         else self._session(stmt, index, pairs))
        self.pending.clear()
        return steps

    # -- units ----------------------------------------------------------------------------
    def _open(self, stmt: Statement, index: int, table: str, data: bool = False) -> Step:
        key = f"{self.database}.{table.lower()}"
        fence = key in self.seen or self.in_barrier
        self.seen.add(key)
        self.in_barrier = False
        self.unit += 1
        self.table = table.lower()
        self.fanout = False
        self.saved.clear()
        self.dirty.clear()
        self.unit_vars.clear()
        self.data = data
        self.unit_locked = head_text(stmt.sql, 16).upper().startswith("LOCK")
        return Step(stmt, index, ORDERED, self.unit, self.table, fence, data)

    def _close(self) -> None:
        self.table = None
        self.fanout = False

    def _is(self, name: str) -> bool:
        return unquote(name).lower() == self.table

    def _belongs(self, text: str, stmt: Statement) -> bool:
        for rx in (_CREATE_TABLE, _LOCK, _KEYS, _INSERT, _DROP_VIEW, _CREATE_VIEW):
            found = rx.match(text)
            if found:
                return self._is(found.groups()[-1])
        if _UNLOCK.match(text) or _DROP_TRIGGER.match(text):
            return True
        found = _TRIGGER.match(text)
        return found is not None and self._is(found.group(2))

    def _unit_step(self, stmt: Statement, index: int, text: str) -> list[Step]:
        assert self.table is not None
        kind = ORDERED
        created = _CREATE_TABLE.match(text)
        if created:
            self.fanout, self.numbered = _fanout_ok(stmt.sql)
        elif _TRIGGER.match(text) or _CREATE_VIEW.match(text):
            self.fanout = False  # rows after a trigger would fire it: keep them in order
        elif self.fanout and _LOCK.match(text):
            self.held = Step(stmt, index, ORDERED, self.unit, self.table, data=self.data)
            return []
        elif self.lock_skipped and _UNLOCK.match(text):
            kind = SKIP
            self.lock_skipped = False
        elif _UNLOCK.match(text):
            self.unit_locked = False
            self.serial = self.serial or self.serial_after_unlock
        elif _LOCK.match(text):
            self.unit_locked = True
        elif _INSERT.match(text) and not reaches_only_its_table(stmt.sql):
            # It reads the session (a user variable, LAST_INSERT_ID()) or other tables: as in
            # file order, after everything before it, before everything after it. Under the
            # unit's own LOCK TABLES (held by its connection) the section ends there first.
            self.fanout = False
            if not self.unit_locked:
                return [*self.flush(), self._barrier(stmt, index)]
            self.serial_after_unlock = True
        elif self.fanout and _INSERT.match(text):
            if not self._spreadable(stmt):
                # Its identity or values come from the server or the session: this row and
                # everything after it in file order, after the rows already spread.
                self.fanout = False
                self.serial = True
                return [*self.flush(), self._barrier(stmt, index)]
            if not self.dirty:
                kind = ROWS
        if _INSERT.match(text):
            self._remember(stmt.sql, kind)
        return [Step(stmt, index, kind, self.unit, self.table, data=self.data)]

    def _remember(self, sql: bytes, kind: str) -> None:
        """Keep the INSERT's prefix when it is plain text: the next one may be labelled fast."""
        cut = sql.find(b"VALUES", 0, 512)
        prefix = sql[:cut + 6] if cut > 0 else b""
        if prefix.startswith(b"INSERT INTO ") and not any(
                c in prefix for c in (b"/*", b"--", b"#", b"\n", b"\r", b"\t")):
            self.fast = (prefix, kind)

    def _member(self, stmt: Statement, index: int, pairs: list[tuple[str, str]]) -> Step:
        for name, value in pairs:
            if name.startswith("@"):
                self.unit_vars.add(name)
                if value.startswith("@@"):
                    self.saved[name] = value[2:].lower().removeprefix("session.")
            elif self.saved.get(value.lower()) == name:
                self.dirty.discard(name)
            else:
                self.dirty.add(name)
        return Step(stmt, index, ORDERED, self.unit, self.table, data=self.data)

    def _session(self, stmt: Statement, index: int, pairs: list[tuple[str, str]]) -> Step:
        for name, value in pairs:
            if name == "foreign_key_checks":
                self.fk_off = value.strip("'\"").lower() in {"0", "off"}
        return Step(stmt, index, SESSION, 0)

    def _barrier(self, stmt: Statement, index: int) -> Step:
        if not self.in_barrier:
            self.unit += 1
            self.in_barrier = True
            self.seen.clear()
        self._close()
        return Step(stmt, index, BARRIER, self.unit, fence=True)


def _fanout_ok(create: bytes) -> tuple[bool, re.Pattern[bytes] | None]:
    """Rows may be spread when the table is InnoDB (the default) with a primary key, and an
    AUTO_INCREMENT column, if any, is the first (rows numbered by the server are found by
    their first value: see :meth:`Planner._spreadable`)."""
    text = create.upper()
    engine = re.search(rb"\bENGINE\s*=\s*(\w+)", text)
    ok = b"PRIMARY KEY" in text and (engine is None or engine.group(1) == b"INNODB")
    if not _AUTO_COLUMN.search(create):
        return ok, None
    first = re.match(rb"[^(]*\(\s*(`(?:[^`]|``)+`|\w+)[^,]*", create)
    if first is None or b"AUTO_INCREMENT" not in first.group(0).upper():
        return False, None
    return ok, NUMBERED


def plan(statements: t.Iterable[Statement]) -> t.Iterator[Step]:
    """Label every statement of *statements* (see the module doc), in file order."""
    planner = Planner()
    for stmt in statements:
        yield from planner.feed(stmt)
    yield from planner.finish()


def resolve_jobs(value: str, max_connections: int, cores: int | None = None) -> int:
    """``--jobs`` as a number of connections: ``auto`` is the machine's cores, capped by the
    pool (one of its connections holds the history and the lock); 0 when that leaves one
    connection or none: then files load serially."""
    spare = max_connections - 1
    if value == "auto":
        jobs = min(cores or os.cpu_count() or 1, spare)
        return jobs if jobs >= 2 else 0
    try:
        jobs = int(value)
    except ValueError:
        raise SqlFileError(f"--jobs {value}: expected a number of connections or 'auto'"
                           ) from None
    if jobs < 1:
        raise SqlFileError(f"--jobs {value}: expected at least 1")
    if spare < 1:
        raise SqlFileError(f"--jobs {value}: the pool has POOLKIT_MAX_CONNECTIONS="
                           f"{max_connections} and initdb holds it: raise it to load in "
                           "parallel")
    if jobs > spare:
        raise SqlFileError(f"--jobs {jobs}: the pool has POOLKIT_MAX_CONNECTIONS="
                           f"{max_connections}, one of them for the history: use --jobs "
                           f"{spare} or raise POOLKIT_MAX_CONNECTIONS")
    return jobs


def is_dump(file: SqlFile) -> bool:
    """Whether *file* looks like mysqldump / mariadb-dump output (``--jobs auto`` loads only
    those in parallel)."""
    with open(file.path, "rb") as stream:
        return looks_like_dump(stream.read(SNIFF_SIZE))
