"""The splitter's regexes: consume statement text fast, stopping only where a decision is needed.

A compiled regex eats ordinary text and whole quoted literals, so Python only looks at
delimiters, comments and backslashes. sre keeps backtracking state per repeat, so every match
runs over at most :data:`WINDOW` bytes (one match over a 50 MB INSERT would take gigabytes).
"""

from __future__ import annotations

import re
import typing as t


def statement_regex(delimiter: bytes) -> re.Pattern[bytes]:
    """A regex that consumes statement text up to the next byte that needs a decision.

    It stops at the delimiter, a comment, a backslash outside quotes, or wherever the bytes
    needed to decide are not in the buffer yet, so it never misreads a chunk boundary.
    """
    d0 = delimiter[0]
    stops = set(b"'\"`#-/\\") | {d0}
    klass = b"[^" + b"".join(re.escape(bytes([c])) for c in sorted(stops)) + b"]+"
    guard = b"(?=[\\s\\S]{%d})(?!%s)" % (len(delimiter), re.escape(delimiter))

    def alt(first: int, pattern: bytes) -> bytes:
        return guard + pattern if first == d0 else pattern

    alts = [
        klass,
        # Unrolled loops: "(?:[^'\\]+|\\.)*" backtracks exponentially on a literal that is
        # not closed within the buffer (a chunk boundary inside a long string).
        alt(ord("'"), rb"'[^'\\]*(?:\\[\s\S][^'\\]*)*'"),
        alt(ord('"'), rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*"'),
        alt(ord("`"), rb"`[^`]*`"),
        # '-' unless it opens '-- ' (the next two bytes must be here to tell)
        alt(ord("-"), rb"-(?=[^-]|-[^ \t\n\r\f\v])"),
        # '/' unless it opens a plain comment; '/*!' and '/*M!' are code
        alt(ord("/"), rb"/(?=[^*])|/\*(?=!|M!)"),
    ]
    if d0 not in b"'\"`#-/\\":
        alts.append(guard + re.escape(bytes([d0])))
    return re.compile(b"(?:" + b"|".join(alts) + b")*")


_regex_cache: dict[bytes, re.Pattern[bytes]] = {}
# The statement regex runs over at most this many bytes per call: sre keeps backtracking state
# for every iteration of a repeat, so one match over a 50 MB INSERT would take gigabytes.
WINDOW = 1 << 16
# The body of a '…' or "…" literal: anything but the quote, a backslash escaping any byte.
_STRING_BODY = {q: re.compile(b"[^%s\\\\]*(?:\\\\[\\s\\S][^%s\\\\]*)*" % (bytes([q]), bytes([q])))
                for q in b"'\""}


def regex_for(delimiter: bytes) -> re.Pattern[bytes]:
    rx = _regex_cache.get(delimiter)
    if rx is None:
        rx = _regex_cache[delimiter] = statement_regex(delimiter)
    return rx


def quoted_end(buf: bytes | bytearray, pos: int) -> int:
    """The index after the literal opened at *pos*, or -1 when it does not close in *buf*."""
    quote = buf[pos]
    if quote == 0x60:  # backticks have no escapes
        close = buf.find(b"`", pos + 1)
        return close + 1 if close >= 0 else -1
    body = _STRING_BODY[quote]
    n = len(buf)
    i = pos + 1
    while True:  # a window per turn; a turn that does not move ends the loop
        j = body.match(buf, i, min(n, i + WINDOW)).end()  # type: ignore[union-attr]
        if j < n and buf[j] == quote:
            return j + 1
        if j == i:  # the end of buf, or a backslash as its last byte
            return -1
        i = j


# Text that is code by the splitter's rules: anything but quotes and comment openers; a '-'
# that does not open '-- '; a '/' that does not open '/*'; the opener of '/*!' and '/*M!'.
_CODE = re.compile(rb"(?:[^'\"`#/-]+|-(?!-(?:[ \t\n\r\f\v]|$))|/(?!\*)|/\*(?=M?!))+")


def code_spans(data: bytes) -> t.Iterator[tuple[int, int]]:
    """(start, stop) of each run of *data* outside string literals, backtick names and
    comments, by the splitter's rules (:func:`statement_regex`): what reaches the server as
    SQL text. An unclosed literal or comment runs to the end of *data*."""
    pos, n = 0, len(data)
    while pos < n:
        found = _CODE.match(data, pos)
        if found is not None:
            yield pos, found.end()
            pos = found.end()
            continue
        c = data[pos]
        if c in b"'\"`":
            close = quoted_end(data, pos)
            pos = close if close >= 0 else n
        elif c == 0x2F:  # a plain '/* … */'
            close = data.find(b"*/", pos + 2)
            pos = close + 2 if close >= 0 else n
        else:  # '#' or '-- ' to the end of the line
            close = data.find(b"\n", pos)
            pos = close if close >= 0 else n
