"""Resuming a failed file: which skipped statements a new session replays, and when it cannot.

A rerun skips the statements a failed run applied, in a new session. The session they built
is rebuilt by replaying the statements that set it from constants: ``USE``, and a ``SET`` whose
values are literals, ``ON``/``DEFAULT``-style words, system variables or user variables that
were themselves set so (``SET @OLD_SQL_MODE=@@SQL_MODE``, ``SET NAMES utf8mb4``). Nothing else
is replayed: ``SET STATEMENT … FOR`` is the DML it wraps, ``SET GLOBAL`` is not the session's.

What a new session cannot rebuild makes the resume refuse, in one line: a temporary table, a
user variable computed from data or a function (``SET @v = LAST_INSERT_ID()``,
``SELECT … INTO @v``, ``@n := @n + 1`` in a row), and ``LAST_INSERT_ID()``, ``ROW_COUNT()``
or ``FOUND_ROWS()`` read after the resume point (they describe the old session's last
statements). Decided on the splitter's tokens: what is inside literals does not count.
"""

from __future__ import annotations

import re
import typing as t

from .plan import head_text, parse_set
from .scan import code_spans
from .statement import Statement, first_word

_NOT_SESSION = re.compile(r"SET\s+(?:GLOBAL|PASSWORD|@@GLOBAL|STATEMENT|TRANSACTION|ROLE"
                          r"|DEFAULT\s+ROLE)\b", re.I)
_TEMPORARY = re.compile(rb"^\s*(?:/\*M?!\d*\s*)?CREATE\s+(?:OR\s+REPLACE\s+)?TEMPORARY\b", re.I)
_COMPUTED = re.compile(rb":=|\bINTO\s+@", re.I)
_SESSION_READ = re.compile(rb"\b(?:LAST_INSERT_ID|ROW_COUNT|FOUND_ROWS)\s*\(|@@(?:identity|"
                           rb"last_insert_id)\b", re.I)
_HEAD = 4096


def _in_code(pattern: re.Pattern[bytes], sql: bytes) -> bool:
    return any(pattern.search(sql, a, b) for a, b in code_spans(sql))


class Replay:
    """Reads the skipped statements in file order: which to replay, and why not to resume."""

    def __init__(self) -> None:
        #: User variables set from constants (their replay rebuilds them).
        self.constants: set[str] = set()
        #: Why a new session cannot rebuild the old one (the first reason found), or None.
        self.blocker: tuple[str, Statement] | None = None

    def note(self, stmt: Statement) -> bool:
        """Take skipped *stmt* into account; True when it is to be replayed."""
        word = first_word(stmt.sql)
        if word == b"USE":
            return True
        if word == b"SET":
            text = head_text(stmt.sql, _HEAD)
            if _NOT_SESSION.match(text):
                return False
            pairs = parse_set(text) if len(stmt.sql) <= _HEAD else None
            if pairs is None or not all(self._constant(value) for _, value in pairs):
                self._block("a variable set from data or a function", stmt)
                return False
            for name, _ in pairs:
                if name.startswith("@"):
                    self.constants.add(name.lower())
            return True
        if _TEMPORARY.match(stmt.sql):
            self._block("a temporary table", stmt)
        elif b"@" in stmt.sql and _in_code(_COMPUTED, stmt.sql):
            self._block("a variable set from data", stmt)
        return False

    def after(self, stmt: Statement) -> None:
        """Take a statement after the resume point into account: it must not read what the
        old session's last statements left (``LAST_INSERT_ID()`` …)."""
        if self.blocker is None and _in_code(_SESSION_READ, stmt.sql):
            self._block("LAST_INSERT_ID() or ROW_COUNT() of statements it skips", stmt)

    def _constant(self, value: str) -> bool:
        if value.startswith("@@"):
            return True
        if value.startswith("@"):
            return value.lower() in self.constants
        return True  # a literal or a word (ON, DEFAULT, utf8mb4): parse_set reads no more

    def _block(self, what: str, stmt: Statement) -> None:
        if self.blocker is None:
            self.blocker = (what, stmt)


def check_resume(statements: t.Iterable[Statement], count: int) -> tuple[str, Statement] | None:
    """Why a new session cannot resume after the first *count* of *statements* (what, where),
    or None when it can."""
    replay = Replay()
    for index, stmt in enumerate(statements):
        if index < count:
            replay.note(stmt)
        else:
            replay.after(stmt)
        if replay.blocker is not None:
            return replay.blocker
    return None
