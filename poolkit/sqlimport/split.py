"""Split SQL files into statements the way the ``mysql``/``mariadb`` command-line client does.

The file is read as bytes in chunks and statements are yielded as they complete, so a dump of
any size streams through a few MiB of memory (a single huge statement is held whole). The
client's rules, which this module follows:

* A statement ends at the current delimiter (``;`` at first) outside quotes and plain comments.
  ``DELIMITER x`` (or ``\\d x``) at the start of a statement changes it; the new delimiter is
  the first space-delimited word (or a quoted string) after the keyword, and the rest of that
  line is ignored. ``BEGIN … END`` means nothing to the client: only the delimiter counts.
* Quotes ``'…'``, ``"…"`` (backslash escapes and doubled quotes) and ``` `…` ``` (doubled
  backticks only) hide the delimiter.
* ``#`` and ``-- `` (dashes followed by whitespace, or any ``--`` opening a statement) comment
  to the end of the line, ``/* … */`` up to its end. Executable comments ``/*!50003 … */``,
  ``/*!*/`` and ``/*M!100100 … */`` are code: they are sent, and a delimiter inside them ends
  the statement, as in the client (dumps put ``/*!50003 CREATE … END */;;`` under
  ``DELIMITER ;;``).
* ``source FILE`` / ``\\. FILE`` splice in another file's statements, resolved relative to the
  including file (the client uses its working directory); include cycles are refused.
* ``\\g``/``\\G`` end a statement, ``\\c`` discards it, ``\\q`` stops. MariaDB's dump header
  ``/*!999999\\- enable the sandbox mode */`` turns on sandbox mode (``source`` is refused
  afterwards) and sends nothing. Other client commands raise :class:`SqlFileError`.

Comments inside a statement are stripped as the client strips them (its default
``--skip-comments``; see :mod:`.statement`), or kept with ``comments=True`` (its ``--comments``).
The server's "at line N" maps back to the file's own lines from :attr:`Statement.line`. A
statement made only of comments is never sent. Bytes are never decoded: BLOBs and
``_binary '…'`` literals reach the server as they are in the file, with one exception the
client makes too: it reads lines without the ``\r`` of a CRLF ending (unless started with
``--binary-mode``), so a CRLF inside a string literal arrives as LF. Dumps escape both bytes
(``\r\n``), so their data is unaffected. Files are opened with :func:`.files.open_sql`:
``.gz``/``.bz2``/``.xz`` are decompressed while streaming, ``-`` is standard input.

Not modelled: ``ANSI_QUOTES`` and ``NO_BACKSLASH_ESCAPES`` server modes (the client follows
the server's status flags; poolkit assumes the defaults).
"""

from __future__ import annotations

import io
import os
import re
import typing as t
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SqlFileError
from . import client
from .files import open_sql
from .scan import WINDOW, quoted_end, regex_for
from .statement import Statement, get_arg, strip_comments

CHUNK_SIZE = 1 << 20
MAX_INCLUDE_DEPTH = 32
#: The largest statement any server accepts (the ceiling of ``max_allowed_packet``).
MAX_STATEMENT = 1 << 30
_statement_limit = MAX_STATEMENT
_sources_anywhere = False

_WS = b" \t\n\r\f\v"
_BOM = b"\xef\xbb\xbf"
_QUOTES = frozenset(b"'\"`")
# Client commands that only print or toggle output: accepted and ignored.
_HARMLESS = frozenset(b"pW w#sh?nt")
_COMMAND_NAMES = {
    ord("!"): "system", ord("T"): "tee", ord("P"): "pager", ord("e"): "edit",
    ord("r"): "connect", ord("C"): "charset", ord("R"): "prompt",
}


def statement_limit() -> int:
    """The size in bytes from which a statement is refused before it is read further."""
    return _statement_limit


@contextmanager
def limit_statements(max_bytes: int) -> t.Iterator[None]:
    """Refuse statements of *max_bytes* bytes or more while the block runs, in every thread
    (a server refuses a query packet above its ``max_allowed_packet``, so holding a bigger
    statement in memory would only lead to that error)."""
    global _statement_limit
    before = _statement_limit
    _statement_limit = max(1, min(max_bytes, MAX_STATEMENT))
    try:
        yield
    finally:
        _statement_limit = before


@contextmanager
def sources_anywhere() -> t.Iterator[None]:
    """Let ``source`` read files outside the folder of the files applied while the block
    runs (by default ``..``, absolute paths, ``~`` and symlinks that leave it are refused)."""
    global _sources_anywhere
    before = _sources_anywhere
    _sources_anywhere = True
    try:
        yield
    finally:
        _sources_anywhere = before


def _root_of(path: Path | None) -> Path | None:
    if _sources_anywhere:
        return None
    return Path(os.path.abspath(path.parent if path is not None else Path.cwd()))


class _Readable(t.Protocol):
    def read(self, size: int = ..., /) -> bytes: ...

    def close(self) -> None: ...


@dataclass
class _Session:
    """Client state shared by a file and the files it sources (as in the client)."""

    delimiter: bytes = b";"
    comments: bool = False  # keep comments (the client's --comments)
    sandbox: bool = False
    quit: bool = False
    stack: list[Path] = field(default_factory=list)
    #: The folder ``source`` may read from (the first file's); None: anywhere.
    root: Path | None = None


def split_file(path: str | Path, *, chunk_size: int = CHUNK_SIZE,
               comments: bool = False) -> t.Iterator[Statement]:
    """Yield the statements of the SQL file at *path* (``-``: standard input), streaming."""
    path = Path(path)
    session = _Session(comments=comments, root=_root_of(path))
    yield from _split_path(path, session, chunk_size, None)


def split_bytes(data: bytes, *, chunk_size: int = CHUNK_SIZE, path: str | Path | None = None,
                comments: bool = False) -> list[Statement]:
    """The statements of *data* (tests, small scripts); ``source`` resolves beside *path*."""
    where = Path(path) if path is not None else None
    session = _Session(comments=comments, root=_root_of(where))
    return list(_Splitter(io.BytesIO(data), where, session, chunk_size).statements())


def _split_path(path: Path, session: _Session, chunk_size: int,
                origin: str | None) -> t.Iterator[Statement]:
    try:
        key = path.resolve()
        if key in session.stack:
            chain = " -> ".join(p.name for p in [*session.stack, key])
            raise SqlFileError(f"{origin}: include cycle: {chain}")
        if len(session.stack) >= MAX_INCLUDE_DEPTH:
            raise SqlFileError(f"{origin}: includes nested more than {MAX_INCLUDE_DEPTH} deep")
        stream = open_sql(path)  # closed below, across yields
    except OSError as error:
        prefix = f"{origin}: source " if origin else ""
        raise SqlFileError(f"{prefix}{path}: {error.strerror or error}") from None
    session.stack.append(key)
    try:
        yield from _Splitter(stream, path, session, chunk_size, origin).statements()
    finally:
        session.stack.pop()
        stream.close()


class _Splitter:
    """The scanner over one stream (one file); includes get their own splitter."""

    def __init__(self, stream: _Readable, path: Path | None, session: _Session,
                 chunk_size: int, origin: str | None = None) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.stream = stream
        self.path = path
        self.origin = origin
        self.session = session
        self.chunk_size = chunk_size
        self.read_size = chunk_size
        self.buf = bytearray()
        self.base = 0  # file offset of buf[0]
        self.eof = False
        self.line = 1  # line number at buf[line_at]
        self.line_at = 0
        self.stalled_at = -1
        #: The statement being scanned has a comment outside its literals (else the second
        #: pass that strips comments is skipped: a 1 MB INSERT's strings are scanned once).
        self.commented = False

    # -- buffer ---------------------------------------------------------------------------
    def _fill(self, keep: int, stall: int) -> int:
        """Drop ``buf[:keep]``, read more; returns how far indexes shifted (``keep``)."""
        buf = self.buf
        self.line += buf.count(b"\n", self.line_at, keep)
        self.line_at = 0
        del buf[:keep]
        self.base += keep
        # The same token still incomplete: read twice as much, so that a 50 MB string is
        # scanned a few times over, not once per chunk.
        stall_abs = self.base + stall - keep
        if stall_abs == self.stalled_at:
            # (at most an eighth of the statement limit: the buffer stays near the limit)
            self.read_size = min(self.read_size * 2, 1 << 26,
                                 max(self.chunk_size, statement_limit() // 8))
        else:
            self.read_size = self.chunk_size
        self.stalled_at = stall_abs
        data = self.stream.read(self.read_size)
        if not data:
            self.eof = True
        else:
            if self.base == 0 and not buf and data.startswith(_BOM[: len(data)]):
                if len(data) < 3:  # a BOM split by a tiny chunk: read the rest of it
                    data += self.stream.read(3 - len(data))
                if data.startswith(_BOM):
                    data = data[3:]
                    self.base = 3
            buf += data
        return keep

    def _line_of(self, index: int) -> int:
        self.line += self.buf.count(b"\n", self.line_at, index)
        self.line_at = index
        return self.line

    def _where(self, index: int) -> str:
        line = self.line + self.buf.count(b"\n", self.line_at, index)
        return f"{self.path}:{line}" if self.path is not None else f"line {line}"

    def _line_end(self, pos: int) -> int | None:
        """Index of the newline ending the line at *pos*, len(buf) at EOF, None: read more."""
        nl = self.buf.find(b"\n", pos)
        if nl >= 0:
            return nl
        return len(self.buf) if self.eof else None

    # -- the scan -------------------------------------------------------------------------
    def statements(self) -> t.Iterator[Statement]:
        """Yield statements until EOF (or ``\\q``)."""
        session = self.session
        pos = 0
        bol = True  # only whitespace since the start of the line
        while not session.quit:
            buf = self.buf
            if pos >= len(buf):
                if self.eof:
                    return
                pos -= self._fill(pos, pos)
                continue
            c = buf[pos]
            # Between statements: whitespace, comments, client commands.
            if c in _WS:
                if c == 0x0A:
                    bol = True
                pos += 1
                continue
            if bol and c in client.FIRST_BYTES:  # perhaps a client command ('quit', 'use x')
                head = bytes(buf[pos:pos + client.LONGEST + 1])
                if len(head) <= client.LONGEST and not self.eof and b"\n" not in head:
                    pos -= self._fill(pos, pos)
                    continue
            else:
                head = b""
            # Only then is the whole line needed: a dump's INSERT line may be megabytes long.
            if head and client.first_word(head.split(b"\n", 1)[0]).rstrip(b"\r") in \
                    client.COMMANDS:
                end = self._line_end(pos)
                if end is None:
                    pos -= self._fill(pos, pos)
                    continue
                line = bytes(buf[pos:end]).rstrip(b"\r")
                handled = yield from self._line_command(line, pos)
                if handled:
                    pos = end
                    continue
            bol = False
            if c == 0x5C:  # backslash: a client command opening the statement
                step = yield from self._backslash(pos, pos, [])
                if step is None:
                    pos -= self._fill(pos, pos)
                    continue
                kind, pos = step
                if kind == "start":
                    result = yield from self._statement(pos - 2, [])
                    if result is None:
                        return
                    pos, bol = result
                continue
            delimiter = session.delimiter
            if c == delimiter[0]:
                if len(buf) - pos < len(delimiter) and not self.eof:
                    pos -= self._fill(pos, pos)
                    continue
                if buf.startswith(delimiter, pos):
                    pos += len(delimiter)  # an empty statement: nothing to send
                    continue
            if c == 0x23 or (c == 0x2D and buf[pos + 1: pos + 2] == b"-"):  # '#', '--'
                end = self._line_end(pos)
                if end is None:
                    pos -= self._fill(pos, pos)
                    continue
                pos = end
                continue
            if c == 0x2D and pos + 1 >= len(buf) and not self.eof:
                pos -= self._fill(pos, pos)
                continue
            if c == 0x2F:  # '/'
                if len(buf) - pos < 4 and not self.eof:
                    pos -= self._fill(pos, pos)
                    continue
                if buf[pos + 1: pos + 2] == b"*" and buf[pos + 2: pos + 3] != b"!" and \
                        buf[pos + 2: pos + 4] != b"M!":
                    close = buf.find(b"*/", pos + 2)
                    if close < 0:
                        if self.eof:
                            return
                        pos -= self._fill(pos, pos)
                        continue
                    pos = close + 2
                    continue
            if c == 0x1A and not bytes(buf[pos:pos + 4096]).strip(_WS + b"\x1a"):
                # a DOS end-of-file byte (Ctrl-Z) ending the file: the client sends nothing
                if self.eof:
                    return
                pos -= self._fill(pos, pos)
                continue
            result = yield from self._statement(pos, [])
            if result is None:
                return
            pos, bol = result

    def _line_command(self, line: bytes, pos: int) -> t.Generator[Statement, None, bool]:
        """A client command on a line opening a statement (:mod:`.client`); True when
        handled (the line is not SQL)."""
        word = line.split(b" ", 1)[0].split(b"\t", 1)[0].lower()
        if word == b"delimiter":
            self._set_delimiter(line, pos)
            return True
        if word == b"source" and self.session.delimiter not in line:
            yield from self._source(line, pos)
            return True
        found = client.line_command(line, self.session.delimiter)
        if found is None or found[0].action == "line":
            return False
        command = found[0]
        if command.action == "quit":
            self.session.quit = True
        elif command.action == "use":
            name = get_arg(line)
            if name is None:
                raise SqlFileError(f"{self._where(pos)}: USE must be followed by a database "
                                   "name")
            sql = b"USE `" + name.replace(b"`", b"``") + b"`"
            line_no = self._line_of(pos)
            yield Statement(sql, line_no, self.base + pos, self.base + pos + len(line),
                            self.path, self.origin, True)
        elif command.action == "refuse":
            raise SqlFileError(f"{self._where(pos)}: the client command "
                               f"{command.name.decode()!r} is not supported in SQL files")
        return True

    def _set_delimiter(self, text: bytes, pos: int) -> None:
        arg = get_arg(text)
        if arg is None:
            raise SqlFileError(f"{self._where(pos)}: DELIMITER must be followed by a "
                               "delimiter character or string")
        if b"\\" in arg:
            raise SqlFileError(f"{self._where(pos)}: DELIMITER cannot contain a backslash")
        self.session.delimiter = arg

    def _source(self, text: bytes, pos: int) -> t.Iterator[Statement]:
        where = self._where(pos)
        if self.session.sandbox:
            raise SqlFileError(f"{where}: 'source' is not allowed in sandbox mode (the file "
                               "enabled it with /*!999999\\- enable the sandbox mode */)")
        parts = text.lstrip(_WS).split(b" ", 1)
        name = parts[1].strip(_WS + bytes(range(32))) if len(parts) == 2 else b""
        if name.endswith(self.session.delimiter):
            name = name[: -len(self.session.delimiter)].rstrip(_WS)
        if not name:
            raise SqlFileError(f"{where}: usage: source <filename> | \\. <filename>")
        target = Path(name.decode("utf-8", "surrogateescape")).expanduser()
        if not target.is_absolute() and self.path is not None:
            target = self.path.parent / target
        self._confine(target, name, where)
        yield from _split_path(target, self.session, self.chunk_size, where)

    def _confine(self, target: Path, name: bytes, where: str) -> None:
        """Refuse a ``source`` that reads outside the session's root folder."""
        root = self.session.root
        if root is None:
            return
        shown = name.decode("utf-8", "replace")
        lexical = Path(os.path.abspath(target))
        if not lexical.is_relative_to(root):
            if name.startswith(b"~"):
                why = "'~' is outside"
            elif Path(shown).is_absolute():
                why = "an absolute path outside"
            else:
                why = "'..' leaves"
            raise SqlFileError(f"{where}: source {shown}: {why} the folder of the files "
                               f"applied ({root}); move the file into it (or allow it with "
                               "--allow-source-outside)")
        real = target.resolve()
        if target.exists() and not real.is_relative_to(root.resolve()):
            raise SqlFileError(f"{where}: source {shown}: a symlink to {real}, outside the "
                               f"folder of the files applied ({root}); copy the file into "
                               "it (or allow it with --allow-source-outside)")

    def _statement(self, start: int, pieces: list[bytes]
                   ) -> t.Generator[Statement, None, tuple[int, bool] | None]:
        """Scan the statement starting at *start*; returns (next pos, bol) or None at EOF."""
        session = self.session
        line = self._line_of(start)
        offset = self.base + start
        pos = start
        self.commented = False
        while True:
            delimiter = session.delimiter
            buf = self.buf
            n = len(buf)
            rx = regex_for(delimiter)
            pos = rx.match(buf, pos, min(n, pos + WINDOW)).end()  # type: ignore[union-attr]
            eof = self.eof
            if pos >= n:
                if eof:
                    yield self._emit(pieces, start, n, line, offset, n)
                    return None
                self._bound(pieces, start, n, line)
                shift = self._fill(start, pos)
                start -= shift
                pos -= shift
                continue
            c = buf[pos]
            need = 0  # > 0: the bytes needed to decide are not all here yet
            if c == delimiter[0] and buf.startswith(delimiter, pos):
                end = pos + len(delimiter)
                text = self._text(pieces, start, pos)
                word = text.lstrip(_WS).split(b" ", 1)[0].split(b"\t", 1)[0].lower()
                if word == b"delimiter":
                    self._set_delimiter(text, start)
                elif word == b"source":
                    yield from self._source(text, start)
                elif word in client.COMMANDS and client.statement_command(text) is not None:
                    pass  # 'status;', 'help;': the client prints, sends nothing
                else:
                    yield self._emit(pieces, start, pos, line, offset, end)
                return end, False
            if c == 0x5C:  # backslash outside quotes: a client command
                if pos + 1 >= n and not eof:
                    need = 2
                else:
                    step = yield from self._backslash(pos, start, pieces)
                    if step is None:
                        need = 2
                    else:
                        kind, nxt = step
                        if kind == "end":
                            yield self._emit(pieces, start, pos, line, offset, nxt)
                            return nxt, False
                        if kind == "clear":
                            return nxt, False
                        if kind == "quit":
                            return None
                        if kind == "start":
                            pos = nxt
                            continue
                        # "resume": the command's text is cut out of the statement
                        pieces.append(bytes(buf[start:pos]))
                        start = pos = nxt
                        continue
            elif c == 0x23 or c == 0x2D:  # '#', '-- ': comment to the end of the line
                if c == 0x2D and n - pos < 3 and not eof:
                    need = 3
                elif c == 0x2D and buf[pos + 1: pos + 2] != b"-":
                    pos += 1  # a lone '-' at the very end of the file
                    continue
                else:
                    self.commented = True
                    nl = buf.find(b"\n", pos)
                    if nl >= 0:
                        pos = nl
                        continue
                    if eof:
                        yield self._emit(pieces, start, n, line, offset, n)
                        return None
                    need = n - pos + 1
            elif c == 0x2F:  # '/*' plain comment (or not enough bytes to tell)
                if n - pos < 4 and not eof:
                    need = 4
                elif buf[pos + 1: pos + 2] != b"*":
                    pos += 1
                    continue
                else:
                    self.commented = True
                    close = buf.find(b"*/", pos + 2)
                    if close >= 0:
                        pos = close + 2
                        continue
                    if eof:  # an unterminated comment runs to the end: not sent
                        yield self._emit(pieces, start, pos, line, offset, n)
                        return None
                    need = n - pos + 1
            elif c in _QUOTES:  # a literal longer than the window, or not all here yet
                close = quoted_end(buf, pos)
                if close >= 0:
                    pos = close
                    continue
                if eof:  # unterminated: the rest of the file, as the client sends it
                    yield self._emit(pieces, start, n, line, offset, n)
                    return None
                need = n - pos + 1
            elif eof or n - pos >= len(delimiter):  # the window's end, or not the delimiter
                pos += 1
                continue
            else:
                need = len(delimiter)
            if need:
                self._bound(pieces, start, n, line)
                shift = self._fill(start, pos)
                start -= shift
                pos -= shift

    def _bound(self, pieces: list[bytes], start: int, stop: int, line: int) -> None:
        """Refuse the statement at *line* once its bytes reach the limit, before reading more."""
        size = stop - start + sum(len(piece) for piece in pieces)
        limit = statement_limit()
        if size >= limit:
            where = f"{self.path}:{line}" if self.path is not None else f"line {line}"
            raise SqlFileError(
                f"{where}: statement larger than the server's max_allowed_packet ({limit} "
                "bytes): the server would refuse it; raise max_allowed_packet on the server "
                "or split the statement")

    def _backslash(self, pos: int, start: int, pieces: list[bytes]
                   ) -> t.Generator[Statement, None, tuple[str, int] | None]:
        r"""Handle ``\x`` at *pos*: returns (kind, next pos), or None when more bytes are needed.

        kind: "start"/"resume" (go on scanning at next pos), "end" (the statement ends here),
        "clear" (discard it), "quit" (stop).
        """
        buf = self.buf
        if pos + 1 >= len(buf):
            if not self.eof:
                return None
            return "start", pos + 1  # a lone backslash at the end: the client drops it
        cmd = buf[pos + 1]
        if cmd in b"gG":
            return "end", pos + 2
        if cmd == ord("c"):
            return "clear", pos + 2
        if cmd == ord("q"):
            self.session.quit = True
            return "quit", pos + 2
        if cmd in _HARMLESS:
            return "resume", pos + 2
        if cmd not in b"d.-" and cmd not in _COMMAND_NAMES:
            return "start", pos + 2  # \N (NULL) and unknown commands stay in the text
        end = self._line_end(pos)
        if end is None:
            return None
        line = bytes(buf[pos:end]).rstrip(b"\r")
        if cmd == ord("u"):  # \u db: the client switches databases at once
            yield from self._line_command(b"use " + line[2:].lstrip(_WS), pos)
            return "resume", end
        if cmd in _COMMAND_NAMES:
            raise SqlFileError(f"{self._where(pos)}: the client command \\{chr(cmd)} "
                               f"({_COMMAND_NAMES[cmd]}) is not supported in SQL files")
        if cmd == ord("-"):
            # MariaDB's sandbox-mode header: inside '/*!999999 … */' the rest of the comment
            # is the command's text; a statement that was only that comment is dropped.
            self.session.sandbox = True
            close = buf.find(b"*/", pos, end)
            opened = self._text(pieces, start, pos).strip(_WS)
            if close >= 0 and re.fullmatch(rb"/\*M?!\d*", opened):
                return "clear", close + 2
            return "resume", close if close >= 0 else end
        if cmd == ord("d"):
            self._set_delimiter(line, pos)
        else:
            yield from self._source(line, pos)
            return "resume", end
        # The client skips the command's parameters up to the (new) delimiter or the EOL.
        found = buf.find(self.session.delimiter, pos + 2, end)
        return "resume", (found + len(self.session.delimiter) if found >= 0 else end)

    def _text(self, pieces: list[bytes], start: int, stop: int) -> bytes:
        with memoryview(self.buf) as view:  # one copy, not two (a statement may be 50 MB)
            body = bytes(view[start:stop])
        return b"".join([*pieces, body]) if pieces else body

    def _emit(self, pieces: list[bytes], start: int, stop: int, line: int, offset: int,
              end: int) -> Statement:
        sql = self._text(pieces, start, stop)
        if b"\r\n" in sql:  # as the client, which reads lines without their CR
            sql = sql.replace(b"\r\n", b"\n")
        shifts: tuple[tuple[int, int], ...] = ()
        if self.commented:
            sql, shifts = strip_comments(sql, keep=self.session.comments)
        return Statement(sql.rstrip(_WS), line, offset, self.base + end, self.path, self.origin,
                         self.session.delimiter == b";", shifts)
