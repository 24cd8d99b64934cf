"""What applying a file did: a refused statement located in its file, and a file's result.

A failed statement becomes a :class:`StatementError` that names the file's own line: the
statement's first line plus the server's "at line N", minus one (see :func:`locate`).
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

from ..pool.drivers import error_code
from .files import SqlFile
from .statement import Statement

_AT_LINE = re.compile(r"at line (\d+)\s*$")
_NEAR = re.compile(r"near '(.*)' at line \d+\s*$", re.S)
EXCERPT_WIDTH = 160


@dataclass(frozen=True)
class StatementError:
    """A statement the server refused, located in its file."""

    path: Path
    line: int
    code: int | None
    sqlstate: str | None
    message: str
    statement: Statement

    @property
    def origin(self) -> str | None:
        """``file:line`` of the ``source`` command when the statement is in a sourced file."""
        return self.statement.origin

    def headline(self, shown_path: str | None = None) -> str:
        """``sql/20_data.sql:62: ERROR 1064 (42000): <server message>``."""
        state = f" ({self.sqlstate})" if self.sqlstate else ""
        code = f"ERROR {self.code}{state}" if self.code is not None else "ERROR"
        # The server's message quotes the statement ("near 'BY …'"): withheld with its text.
        message = ("(message withheld: the statement may carry a password)"
                   if self.statement.secret else self.message)
        return f"{shown_path or self.path}:{self.line}: {code}: {message}"

    def excerpt(self, context: int = 1) -> list[tuple[int, str]]:
        """The failing line of the statement with *context* lines around it, numbered."""
        if self.statement.secret:
            return [(self.statement.line, self.statement.excerpt())]
        lines = self.statement.sql.split(b"\n")
        index = min(max(self.line - self.statement.line, 0), len(lines) - 1)
        first = max(index - context, 0)
        shown: list[tuple[int, str]] = []
        for number, raw in enumerate(lines[first:index + context + 1], self.statement.line + first):
            text = raw.rstrip(b"\r").decode("utf-8", "replace")
            if len(text) > EXCERPT_WIDTH:
                text = text[:EXCERPT_WIDTH - 1] + "…"
            shown.append((number, text))
        return shown


@dataclass
class FileResult:
    """What applying one file did."""

    file: SqlFile
    #: Statements applied and kept, resumed-over included (after a rolled-back transaction:
    #: only the resumed-over ones).
    statements: int = 0
    #: Statements in the file, when known (always on success; after a failure, counted).
    total: int | None = None
    seconds: float = 0.0
    errors: list[StatementError] = field(default_factory=list)
    #: Stopped because the caller's stop event was set (Ctrl-C).
    interrupted: bool = False
    #: The connection was lost: whether the statement it was on ran is unknown.
    lost: bool = False
    #: Ran as one transaction; after a failure it was rolled back.
    transaction: bool = False
    #: Statements skipped because a previous run applied them (resume).
    resumed: int = 0
    #: :func:`prefix_digest` of the applied statements.
    digest: str = ""
    #: Statements rolled back with a failed statement of their batch (group commit).
    rolled_back_with: int = 0
    #: The file's own transaction was open when it stopped: the client's exit (``end_file``)
    #: rolls back an unknown part of what it counted as applied, so it cannot resume.
    open_transaction: bool = False
    #: The first statement that failed (or was interrupted), if any.
    stopped_at: Statement | None = None

    @property
    def ok(self) -> bool:
        """True when every statement succeeded and the file ran to its end."""
        return not self.errors and not self.interrupted

    @property
    def rolled_back(self) -> bool:
        """True when a failure undid what this run sent (it ran as one transaction); the
        statements a previous run applied (:attr:`resumed`) stay."""
        return self.transaction and not self.ok


def locate(error: BaseException, stmt: Statement, path: Path,
           batched: bool = False) -> StatementError:
    """Turn a driver error for *stmt* (of file *path*, unless sourced from another) into a
    :class:`StatementError` at the file's own line. For a statement sent in a batch, the
    server's "near '…'" quotes the rest of the batch: it is cut at the batch's next statement,
    as the client (one statement per query) would show it."""
    code = error_code(error)
    args: tuple[t.Any, ...] = tuple(getattr(error, "args", ()))
    message = str(args[1]) if len(args) > 1 else str(error)
    near = _NEAR.search(message) if batched else None
    if near is not None and ";\n" in near.group(1):
        message = message[:near.start(1)] + near.group(1).split(";\n", 1)[0] + \
            message[near.end(1):]
    line = stmt.line
    found = _AT_LINE.search(message)
    if found:
        line = stmt.file_line(int(found.group(1)))
    sqlstate = getattr(error, "sqlstate", None)
    return StatementError(stmt.path or path, line, code, sqlstate, message, stmt)
