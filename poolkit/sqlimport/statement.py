"""One statement of a SQL file, and the client's comment stripping.

The ``mysql``/``mariadb`` client strips comments from what it sends (``--skip-comments`` is its
default): ``#`` and ``-- `` to the end of the line (the newline stays), ``/* … */`` whole (its
newlines too; a space is put after it when the next byte is not a space). Executable comments
``/*! … */`` and ``/*M! … */`` are code and stay. Optimizer hints ``/*+ … */`` stay too, as the
MySQL client keeps them (MariaDB 10.11's client drops them; its server ignores them anyway).
:func:`strip_comments` does the same, so stored routine bodies match a client load byte for
byte, and records where newlines were removed so that the server's "at line N" still maps to
the file's own line.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

_WS = b" \t\n\r\f\v"

#: A token of statement text for comment stripping: a literal, a comment, or other text.
_TOKEN = re.compile(
    rb"(?P<lit>'[^'\\]*(?:\\[\s\S][^'\\]*)*(?:'|$)"
    rb'|"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|$)'
    rb"|`[^`]*(?:`|$))"
    rb"|(?P<code>/\*(?:!|M!|\+))"
    rb"|(?P<block>/\*[\s\S]*?(?:\*/|$))"
    rb"|(?P<line>(?:#|--(?=[ \t\n\r\f\v]|$))[^\n]*)"
)
_MAYBE_COMMENT = re.compile(rb"[#/]|--")


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement to send: its bytes, where it starts and the byte range it spans."""

    sql: bytes
    #: 1-based line of the statement's first character in :attr:`path`.
    line: int
    #: Byte offset of the first character and of the byte after its delimiter.
    offset: int
    end_offset: int
    path: Path | None = None
    #: ``file:line`` of the ``source`` command that included :attr:`path`, if any.
    origin: str | None = None
    #: Split under the ``;`` delimiter: exactly one server statement (batchable).
    plain: bool = True
    #: (line of :attr:`sql`, newlines removed there) for comments stripped across lines.
    shifts: tuple[tuple[int, int], ...] = ()

    def where(self) -> str:
        """``file:line`` (or ``line N`` for in-memory SQL), for messages."""
        return f"{self.path}:{self.line}" if self.path is not None else f"line {self.line}"

    def file_line(self, server_line: int) -> int:
        """The file's line for the server's "at line *server_line*" of this statement."""
        line = self.line + server_line - 1
        for at, removed in self.shifts:
            if at < server_line:
                line += removed
        return line

    @property
    def secret(self) -> bool:
        """The statement may carry a password (see :func:`carries_secret`)."""
        return carries_secret(self.sql)

    def excerpt(self, limit: int = 200) -> str:
        """The first *limit* characters, decoded leniently, on one line; for a statement that
        may carry a password only its first words and :data:`WITHHELD`."""
        if self.secret:
            head = " ".join(w.decode() for w in code_words(self.sql)[:2])
            return f"{head} … ({WITHHELD}; sha256 {hashlib.sha256(self.sql).hexdigest()})"
        text = self.sql[: limit * 4].decode("utf-8", "replace")
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 1] + "…"


#: What an excerpt says instead of the text of a statement that may carry a password.
WITHHELD = "text withheld: the statement may carry a password"
_WORD = re.compile(rb"[A-Za-z_]+")
#: Adjacent keywords that set a password (CREATE [OR REPLACE] USER, ALTER USER, SET PASSWORD).
_SECRET_PAIRS = frozenset({(b"CREATE", b"USER"), (b"REPLACE", b"USER"), (b"ALTER", b"USER"),
                           (b"SET", b"PASSWORD")})
#: Keywords that give a password inside any statement (GRANT … IDENTIFIED BY, CHANGE MASTER
#: TO MASTER_PASSWORD=, CREATE SERVER … OPTIONS (PASSWORD …)); a column named ``password``
#: withholds an INSERT's text too, which only costs the record some detail.
_SECRET_WORDS = frozenset({b"IDENTIFIED", b"PASSWORD", b"MASTER_PASSWORD", b"SOURCE_PASSWORD"})


def code_words(sql: bytes) -> list[bytes]:
    """The keywords and names of *sql* outside literals, quoted names and comments, upper-cased,
    read with the tokens comment stripping uses (``/*! … */`` bodies are code)."""
    words: list[bytes] = []
    pos = 0
    while pos <= len(sql):
        found = _TOKEN.search(sql, pos)
        stop = found.start() if found is not None else len(sql)
        words.extend(w.upper() for w in _WORD.findall(sql, pos, stop))
        if found is None:
            break
        pos = max(found.end(), pos + 1)
    return words


def carries_secret(sql: bytes) -> bool:
    """True for a statement that may hold a password: ``CREATE USER``, ``ALTER USER``,
    ``SET PASSWORD`` anywhere (``SET STATEMENT … FOR ALTER USER`` too), and any statement with
    ``IDENTIFIED`` or ``PASSWORD`` among its keywords -- the words outside literals, quoted
    names and comments, as the splitter's tokens show them (a literal saying ``CREATE USER``
    is data, not a secret)."""
    words = code_words(sql)
    return (not _SECRET_WORDS.isdisjoint(words)
            or any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words)))


def strip_comments(sql: bytes, keep: bool = False) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    """*sql* without its comments, as the client sends it; and the newlines removed per line.

    With *keep* (the client's ``--comments``) comments stay, but as in the client a space is
    still put after a ``/* … */`` that is followed by a non-space (``2/*x*/+3`` -> ``2/*x*/ +3``).
    """
    if keep:
        if b"*/" not in sql:
            return sql, ()
    elif _MAYBE_COMMENT.search(sql) is None:
        return sql, ()
    out: list[bytes] = []
    shifts: list[tuple[int, int]] = []
    line = 1  # line of the output so far
    pos = 0
    need_space = False
    n = len(sql)
    while pos < n:
        found = _TOKEN.search(sql, pos)
        stop = found.start() if found is not None else n
        if stop > pos:
            text = sql[pos:stop]
            if need_space and text[0] not in _WS:
                out.append(b" ")
            need_space = False
            out.append(text)
            line += text.count(b"\n")
        if found is None:
            break
        kind = found.lastgroup
        token = found.group()
        if kind == "block":
            removed = token.count(b"\n")
            if keep:
                out.append(token)
                line += removed
            elif removed:
                shifts.append((line, removed))
            need_space = True
        elif kind == "line" and keep:
            out.append(token)
        elif kind != "line":  # literals and code-comment openers are kept as they are
            if need_space and token[0] not in _WS:
                out.append(b" ")
            need_space = False
            out.append(token)
            line += token.count(b"\n")
        pos = found.end()
    return b"".join(out), tuple(shifts)


def get_arg(text: bytes) -> bytes | None:
    """The argument of a ``delimiter``/``\\d`` command line, as the client's get_arg reads it."""
    short = text.lstrip(_WS)
    if short.startswith(b"\\"):
        rest = short[2:]
    else:
        cut = len(short)
        for i, c in enumerate(short):
            if c in _WS:
                cut = i
                break
        rest = short[cut:]
    rest = rest.lstrip(_WS)
    if not rest:
        return None
    quote = rest[0] if rest[0] in b"'\"`" else 0
    out = bytearray()
    i = 1 if quote else 0
    while i < len(rest):
        c = rest[i]
        nxt = rest[i + 1] if i + 1 < len(rest) else None
        if nxt is not None and ((c == 0x5C and quote != 0x60) or (quote and c == quote == nxt)):
            out.append(nxt)
            i += 2
            continue
        if c == (quote or 0x20):
            quote = 0
            break
        out.append(c)
        i += 1
    return bytes(out) if out and not quote else None


def first_word(sql: bytes) -> bytes:
    """The statement's first keyword, upper-cased (``/*!NNNNN`` openers skipped).

    Asked several times per statement (batching, group commit, coalescing): the answer is
    kept per statement head, since a dump's statements start with a few heads only.
    """
    head = sql[:_HEAD]
    word = _first_words.get(head)
    if word is not None:
        return word
    m = _FIRST_WORD.match(head)
    if m is None or m.end() == len(head):  # the head may not hold the whole word
        m = _FIRST_WORD.match(sql)
        return m.group(1).upper() if m else b""
    word = m.group(1).upper()
    if len(_first_words) < 4096:
        _first_words[head] = word
    return word


_FIRST_WORD = re.compile(rb"(?:\s|/\*M?!\d*)*([A-Za-z_]+)")
#: An identifier, quoted or not, and a table name that may be qualified: ``(schema).(table)``
#: or ``(table)`` in its two groups (see :mod:`.transaction`, :mod:`.coalesce`).
NAME = rb"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
TABLE = rb"(" + NAME + rb")(?:\s*\.\s*(" + NAME + rb"))?"
_HEAD = 24
_first_words: dict[bytes, bytes] = {}
