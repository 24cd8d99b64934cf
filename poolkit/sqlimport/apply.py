"""Apply .sql files through a DB-API connection, one statement per round trip, like ``mysql``.

Statements go to the server as the bytes of the file, with no parameters, so a ``%`` is never
interpreted and binary literals arrive unchanged. With PyMySQL the raw connection's ``query()``
is called directly: ``cursor.execute(sql)`` with no args would send the same bytes, but would
build a cursor per statement; ``query()`` plus draining extra result sets (``CALL``) is the
whole job. Other drivers go through a cursor.

A failed statement becomes a :class:`StatementError` that names the file's own line: the
statement's first line plus the server's "at line N", minus one. The library never prints:
callers get callbacks per statement and a :class:`FileResult` per file.
"""

from __future__ import annotations

import queue
import re
import socket
import struct
import threading
import time
import typing as t
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from ..pool.drivers import error_code, get_driver, is_disconnect
from ..url import mask_url
from .files import SqlFile
from .history import quote_ident
from .split import CHUNK_SIZE, Statement, split_file

if t.TYPE_CHECKING:
    from ..config import PoolSettings

_AT_LINE = re.compile(r"at line (\d+)\s*$")
EXCERPT_WIDTH = 160
#: Files from this size on are split in a thread while the server works (see read_ahead).
READ_AHEAD_MIN_BYTES = 4 * 1024 * 1024

OnStatement = t.Callable[[Statement, float], None]
OnProgress = t.Callable[[int], None]


@dataclass(frozen=True)
class StatementError:
    """A statement the server refused, located in its file."""

    path: Path
    line: int
    code: int | None
    sqlstate: str | None
    message: str
    statement: Statement

    def headline(self, shown_path: str | None = None) -> str:
        """``sql/20_data.sql:62: ERROR 1064 (42000): <server message>``."""
        state = f" ({self.sqlstate})" if self.sqlstate else ""
        code = f"ERROR {self.code}{state}" if self.code is not None else "ERROR"
        return f"{shown_path or self.path}:{self.line}: {code}: {self.message}"

    def excerpt(self, context: int = 1) -> list[tuple[int, str]]:
        """The failing line of the statement with *context* lines around it, numbered."""
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
    statements: int = 0
    seconds: float = 0.0
    errors: list[StatementError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every statement succeeded."""
        return not self.errors


def locate(error: BaseException, stmt: Statement, path: Path) -> StatementError:
    """Turn a driver error for *stmt* (of file *path*, unless sourced from another) into a
    :class:`StatementError` at the file's own line."""
    code = error_code(error)
    args: tuple[t.Any, ...] = tuple(getattr(error, "args", ()))
    message = str(args[1]) if len(args) > 1 else str(error)
    line = stmt.line
    found = _AT_LINE.search(message)
    if found:
        line = stmt.line + int(found.group(1)) - 1
    sqlstate = getattr(error, "sqlstate", None)
    return StatementError(stmt.path or path, line, code, sqlstate, message, stmt)


def _executor(raw: t.Any) -> t.Callable[[bytes], None]:
    if hasattr(raw, "_read_query_result"):  # PyMySQL
        query = raw.query
        next_result = raw.next_result

        def run(sql: bytes) -> None:
            query(sql)
            while raw._result is not None and raw._result.has_next:
                next_result()  # a CALL sends one result per SELECT, then its status

        return run

    def run_cursor(sql: bytes) -> None:
        cursor = raw.cursor()
        try:
            cursor.execute(sql)
            while cursor.nextset():
                pass
        finally:
            cursor.close()

    return run_cursor


def apply_file(raw: t.Any, file: SqlFile, *, continue_on_error: bool = False,
               on_statement: OnStatement | None = None, on_progress: OnProgress | None = None,
               chunk_size: int = CHUNK_SIZE) -> FileResult:
    """Run every statement of *file* on the DB-API connection *raw*.

    Stops at the first failed statement unless *continue_on_error*; a lost connection always
    stops. :class:`~poolkit.errors.SqlFileError` (unreadable file, bad client command) and
    interrupts propagate.
    """
    run = _executor(raw)
    result = FileResult(file)
    started = time.perf_counter()
    top = file.path
    statements = split_file(file.path, chunk_size=chunk_size)
    if file.size >= READ_AHEAD_MIN_BYTES:
        statements = read_ahead(statements)
    try:
        for stmt in statements:
            before = time.perf_counter()
            try:
                run(stmt.sql)
            except Exception as error:
                if error_code(error) is None and not is_disconnect(error):
                    raise
                result.errors.append(locate(error, stmt, top))
                if not continue_on_error or is_disconnect(error):
                    break
            else:
                result.statements += 1
            if on_statement is not None:
                on_statement(stmt, time.perf_counter() - before)
            if on_progress is not None and stmt.path == top:
                on_progress(stmt.end_offset)
    except BaseException as error:
        if not isinstance(error, Exception):
            # Ctrl-C may land mid-statement, leaving a reply unread: the session cannot be
            # trusted any more. Close it now (its locks go with it) without a COM_QUIT.
            _drop_session(raw)
        raise
    finally:
        result.seconds = time.perf_counter() - started
        close = getattr(statements, "close", None)
        if close is not None:
            close()
    return result


_END = object()


def read_ahead(statements: t.Iterator[Statement], depth: int = 2) -> t.Iterator[Statement]:
    """Split in a thread while the server runs the previous statement.

    The socket wait releases the GIL, so reading and splitting a big dump overlaps with the
    server's work instead of adding to it. At most *depth* statements wait in the queue.
    """
    items: queue.Queue[t.Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for stmt in statements:
                if not put(stmt):
                    return
            put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)
        finally:
            close = getattr(statements, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="poolkit-sql-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _drop_session(raw: t.Any) -> None:
    close = getattr(raw, "_force_close", None) or raw.close
    with suppress(Exception):
        close()


def count_statements(path: Path, chunk_size: int = CHUNK_SIZE) -> int:
    """How many statements the file (and what it sources) would send."""
    return sum(1 for _ in split_file(path, chunk_size=chunk_size))


@contextmanager
def import_session(conn: t.Any) -> t.Iterator[t.Any]:
    """The raw connection of pooled *conn* set up like the mysql client; discarded afterwards.

    Autocommit on, and no driver read/write timeout (a long ``ALTER`` must not be cut off at
    the pool's 60 s). The files change the session (``USE``, ``SET NAMES``, ``sql_mode``,
    variables): the connection is closed at the end, so the pool replaces it rather than
    handing that session to a request.
    """
    raw = conn.raw
    try:
        raw.autocommit(True)
        sock = getattr(raw, "_sock", None)
        if isinstance(sock, socket.socket) and getattr(raw, "poolkit_timeouts", None):
            forever = struct.pack("ll", 0, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, forever)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, forever)
        yield raw
    finally:
        with suppress(Exception):
            raw.close()
        conn.close()


def use_database(raw: t.Any, database: str) -> None:
    """Make *database* current again (each file starts there, as with ``mysql db < file``)."""
    cursor = raw.cursor()
    try:
        cursor.execute(f"USE {quote_ident(database)}")
    finally:
        cursor.close()


def create_database(settings: PoolSettings) -> bool:
    """Create the database of *settings*' URL if missing (connecting without one). True if made."""
    driver = get_driver(settings.url.driver)
    kwargs = settings.driver_kwargs()
    kwargs["database"] = None
    con = driver.connect(kwargs)
    try:
        cursor = con.cursor()
        name = settings.url.database
        cursor.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                       (name,))
        if cursor.fetchone():
            return False
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {quote_ident(name)} "
                       "CHARACTER SET utf8mb4")
        return True
    finally:
        con.close()


T = t.TypeVar("T")


def wait_for_server(connect: t.Callable[[], T], seconds: float,
                    interval: float = 0.5) -> T:
    """Call *connect* until it succeeds or *seconds* have passed (then its error propagates)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return connect()
        except Exception as error:
            if time.monotonic() + interval > deadline or not _worth_waiting(error):
                raise
        time.sleep(interval)


def _worth_waiting(error: BaseException) -> bool:
    # A server that is starting refuses connections (2002/2003), drops them (2013) or says it
    # is shutting down or starting (1053); access denied or unknown database will not change.
    return error_code(error) in {1053, 2002, 2003, 2006, 2013} or isinstance(error, OSError)


def describe_error(error: BaseException) -> str:
    """A driver error as one line, any password masked."""
    return mask_url(f"{type(error).__name__}: {error}")


def kill_running_statement(settings: PoolSettings, raw: t.Any) -> bool:
    """``KILL QUERY`` the import session's statement from a second connection (Ctrl-C).

    As the mysql client does: otherwise the server runs the interrupted statement (a long
    ``ALTER``, a big ``INSERT``) to its end before it notices the client has gone, and holds
    the initdb lock until then. Returns whether the KILL was sent.
    """
    try:
        thread_id = int(raw.thread_id())
        driver = get_driver(settings.url.driver)
        kwargs = settings.driver_kwargs()
        kwargs["connect_timeout"] = 5
        killer = driver.connect(kwargs)
    except Exception:
        return False
    try:
        cursor = killer.cursor()
        cursor.execute(f"KILL QUERY {thread_id}")
        cursor.close()
        return True
    except Exception:
        return False
    finally:
        with suppress(Exception):
            killer.close()
