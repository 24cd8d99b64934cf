"""Every use poolkit makes of PyMySQL's private API, in one place.

PyMySQL (tested: 1.2.x, see pyproject.toml) gives no public way to know what the pool must
know about a connection, so :func:`tracked_connection_class` builds a subclass of
``pymysql.connections.Connection`` that keeps it:

* the server status of every statement, accumulated over a borrow: the server sets
  ``SERVER_SESSION_STATE_CHANGED`` (0x4000) when a statement changed session state (with
  ``CLIENT_SESSION_TRACK`` and ``session_track_state_change=ON``), and PyMySQL keeps only the
  last status -- and drops the status of the EOF packet that ends a result set;
* statements whose session effects the server may not flag (see :mod:`.untracked`: anything
  not provably tracked counts as a change);
* whether a disconnect may be retried, and kernel-enforced socket timeouts.

Each private member used is commented with what breaks if PyMySQL changes it. The rest of
poolkit uses the public-to-poolkit names defined here: the pool's (``tracked_connection_class``,
``prepare_session``, ``return_action``, ``reset_session``, ``is_closed``, ``force_close``,
``shared_ssl_context``, ``uses_kernel_timeouts``) and, for the rest of poolkit (sqlimport,
stress), ``is_pymysql``, ``has_more_results``, ``disable_timeouts``, ``shutdown_socket``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import struct
import sys
import threading
import typing as t

from .hosts import is_read_only_error
from .untracked import changes_untracked_state

#: What the pool must do with a returned connection (see :func:`return_action`): keep it,
#: roll back, reset the session, or close it -- broken, holding an unread result, or on a
#: server that cannot reset a session in place.
KEEP, ROLLBACK, RESET, DISCARD, UNREAD, REOPEN = 0, 1, 2, 3, 4, 5

SERVER_STATUS_IN_TRANS = 0x0001
SERVER_STATUS_AUTOCOMMIT = 0x0002
SERVER_SESSION_STATE_CHANGED = 0x4000
CLIENT_SESSION_TRACK = 1 << 23
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_RESET_CONNECTION = 0x1F

_KERNEL_TIMEOUTS = sys.platform.startswith("linux")

_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def _new_ssl_lock() -> None:
    # A fork while another thread built the context would leave the lock held forever in
    # the child: every TLS connect there would hang.
    global _ssl_lock
    _ssl_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_ssl_lock)


def shared_ssl_context(factory: t.Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """One TLS context for every connect (PyMySQL >= 1.2 builds one per connect, ~40 ms)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = factory()
        return _ssl_context


class LazySSLContext:
    """The shared TLS context, built the first time the handshake uses it.

    PyMySQL's PREFERRED mode (no ``ssl_*`` options) builds its context in ``__init__``, before
    it knows whether the server offers TLS at all: ~30-40 ms of CPU on the first connect of
    every process (a ``flask initdb`` run, a web worker) even when the server has TLS off. The
    handshake touches ``ctx`` only when the server offers TLS, so a stand-in that builds the
    real context on first attribute access costs nothing otherwise.
    """

    __slots__ = ("_factory",)

    def __init__(self, factory: t.Callable[[], ssl.SSLContext]) -> None:
        self._factory = factory

    def __getattr__(self, name: str) -> t.Any:
        return getattr(shared_ssl_context(self._factory), name)


def uses_kernel_timeouts(sock: object) -> bool:
    """True for a plain (or TLS) stdlib socket, whose timeouts the kernel can enforce.

    gevent's (monkey-patched) sockets are non-blocking and wait in gevent's hub, where
    ``SO_RCVTIMEO`` never fires: they keep PyMySQL's Python-level timeouts.
    """
    return _KERNEL_TIMEOUTS and type(sock).__module__ in ("socket", "ssl")


def _timeval(seconds: float | None) -> bytes:
    seconds = seconds or 0.0
    return struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))


def _command(command: int, payload: bytes) -> bytes:
    # A command packet: 3-byte length, sequence id 0, command byte, payload (< 16 MiB).
    return struct.pack("<IB", len(payload) + 1, command) + payload


def force_close(raw: t.Any) -> None:
    """Close the socket without COM_QUIT (a forked child must not end the parent's session)."""
    # Not raw._force_close(): it closes the buffered reader, whose lock a parent thread that
    # was reading at fork time holds for ever in the child. Closing the reader's raw stream
    # needs no lock, and the reader, finding it closed, never takes its lock again.
    rfile = raw._rfile  # private: PyMySQL's buffered reader of the socket
    if rfile is not None:
        rfile.raw.close()
    sock = raw._sock  # private: PyMySQL's socket
    if sock is not None:
        sock.close()
    raw._rfile = raw._sock = None


def is_pymysql(raw: object) -> bool:
    """True for a PyMySQL connection (the helpers here need one)."""
    import pymysql

    return isinstance(raw, pymysql.connections.Connection)


def disable_timeouts(raw: t.Any) -> None:
    """No read/write timeout from now on (a long ``ALTER`` in ``flask initdb``), whichever way
    the connection enforces them (kernel socket options or PyMySQL's Python timeouts)."""
    sock = raw._sock  # private: PyMySQL's socket
    if raw.poolkit_timeouts != (None, None) and sock is not None:
        forever = _timeval(0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, forever)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, forever)
        raw.poolkit_timeouts = (None, None)
    # private: PyMySQL applies _read_timeout/_write_timeout before each read/write.
    raw._read_timeout = raw._write_timeout = None


def shutdown_socket(raw: t.Any) -> None:
    """Cut the connection under a running statement (another thread's; the stress tool)."""
    sock = getattr(raw, "_sock", None)  # private: PyMySQL's socket
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def is_closed(raw: t.Any) -> bool:
    """True once the socket is closed (PyMySQL closes it on every connection error)."""
    return raw._sock is None  # private: PyMySQL's socket, None once closed


def has_more_results(raw: t.Any) -> bool:
    """True while the last statement still has result sets to read (``nextset()``)."""
    # private: _result is PyMySQL's current MySQLResult; has_next its MORE_RESULTS flag.
    result = raw._result
    return result is not None and bool(result.has_next)


def return_action(raw: t.Any) -> int:
    """What a returned connection needs: KEEP, ROLLBACK, RESET or DISCARD.

    Starts the next borrow's accumulation: call it once per return.
    """
    changed = raw.poolkit_changed
    raw.poolkit_changed = raw.poolkit_untracked
    if raw.poolkit_broken or raw._sock is None:  # private: _sock is None once closed
        return DISCARD
    result = raw._result  # private: an unread unbuffered (SSCursor) result
    if result is not None and result.unbuffered_active:
        # Draining could read millions of rows; the snapshot and locks go with the socket.
        # The borrower's cursor must not try to read the rest from a closed socket later.
        result.unbuffered_active = False
        return UNREAD
    if changed & SERVER_SESSION_STATE_CHANGED:
        return int(raw.poolkit_reset_mode)
    if raw.server_status & SERVER_STATUS_IN_TRANS:
        return ROLLBACK
    return KEEP


def send_rollback(raw: t.Any) -> None:
    """Write ``ROLLBACK`` without waiting for its answer (:func:`finish_pending` reads it).

    The return then costs a packet write instead of a round trip: the server rolls back while
    the connection waits in the pool, and the next checkout reads the answer (by then usually
    in the socket buffer) before anything else is sent. ``_execute_command`` is what
    ``rollback()`` calls (private: breaks if renamed; it sets ``_next_seq_id`` to 1).
    """
    raw._execute_command(COM_QUERY, b"ROLLBACK")


def finish_pending(raw: t.Any) -> None:
    """Read the answer of a pipelined ``ROLLBACK``; raises if the connection cannot be used.

    The pool calls this at checkout, before the ping or the borrower's first statement: an
    error here means the connection is closed and replaced, never the borrower's failure.
    """
    raw._read_ok_packet()  # private: raises the server's error packet, checks the sequence


def restore_statements(raw: t.Any, session: t.Sequence[str]) -> tuple[bytes, ...]:
    """The SQL that makes a reset session equal a fresh one: what PyMySQL's connect() ran,
    session tracking, then the pool's own session SQL."""
    charset = f"SET NAMES {raw.charset}"
    if raw.collation:
        charset += f" COLLATE {raw.collation}"
    parts = [charset, "SESSION session_track_state_change=ON"]
    if raw.poolkit_autocommit is not None:
        parts.append(f"SESSION autocommit={int(bool(raw.poolkit_autocommit))}")
    sql = [", ".join(parts)]
    if raw.poolkit_role is not None:  # COM_RESET_CONNECTION keeps the current role
        sql.append(raw.poolkit_role)
    if raw.sql_mode is not None:
        sql.append(f"SET sql_mode={raw.escape(raw.sql_mode)}")
    if raw.init_command is not None:
        sql.append(raw.init_command)
    sql.extend(session)
    return tuple(s.encode(raw.encoding) for s in sql)


def reset_session(raw: t.Any) -> None:
    """COM_RESET_CONNECTION, the database and the session SQL, pipelined: one round trip.

    The reset rolls back, drops temporary tables, releases table and named locks, closes
    prepared statements and returns every variable to the server's default, without
    re-authenticating; it keeps the current database, so ours is selected again.
    """
    while has_more_results(raw):  # the server already sent them: read them off the socket
        raw.next_result()
    raw._result = None  # private: PyMySQL reads its unread results before any command
    queries = raw.poolkit_restore
    packets = [_command(COM_RESET_CONNECTION, b""), _command(COM_INIT_DB, raw.poolkit_database)]
    packets.extend(_command(COM_QUERY, sql) for sql in queries)
    # private: _write_bytes sends raw bytes; _next_seq_id is the expected sequence id of the
    # next packet read (1: each response answers a command with sequence id 0).
    raw._write_bytes(b"".join(packets))
    raw._next_seq_id = 1
    raw._read_ok_packet()
    raw._next_seq_id = 1
    raw._read_ok_packet()
    for _ in queries:
        raw._next_seq_id = 1
        raw._read_query_result()  # private: reads one OK packet or result set
    raw.autocommit_mode = raw.poolkit_autocommit
    raw.charset, raw.encoding, raw.collation = raw.poolkit_charset
    raw.poolkit_changed = raw.poolkit_untracked


def tracked_connection_class(is_disconnect: t.Callable[[BaseException], bool]) -> type[t.Any]:
    """PyMySQL's Connection with what the pool needs to know about it (see module doc)."""
    import pymysql

    eof_wrapper = pymysql.protocol.EOFPacketWrapper

    class TrackedResult(pymysql.connections.MySQLResult):  # type: ignore[misc]
        """A result that keeps the server status of the EOF packet ending its rows."""

        # private: MySQLResult calls _check_packet_is_eof for the packet after the last row;
        # if it is renamed, server_status lags one statement (snapshots are not rolled back).
        def _check_packet_is_eof(self, packet: t.Any) -> bool:
            if not packet.is_eof_packet():
                return False
            wrapped = eof_wrapper(packet)
            self.warning_count = wrapped.warning_count
            self.has_next = wrapped.has_next
            self.server_status = wrapped.server_status
            return True

    base: type[t.Any] = pymysql.connections.Connection
    base_query = base.query
    base_connect = base.connect
    base_read_ok = base._read_ok_packet
    base_commit = base.commit

    class TrackedConnection(base):  # type: ignore[misc]
        """A PyMySQL connection that remembers what the pool needs to know about it."""

        poolkit_broken = False
        # issue 14: set by the host selector; called on a read-only error (a role change).
        poolkit_on_read_only: t.Callable[[t.Any, BaseException], None] | None = None
        poolkit_last_used = 0.0
        poolkit_wait_timeout = 0.0
        poolkit_server_max: int | None = None  # the server's max_connections, read at connect
        poolkit_changed = 0  # server status bits OR-ed over the borrow
        poolkit_untracked = SERVER_SESSION_STATE_CHANGED  # its start: 0 where the server tracks
        poolkit_reset_mode = REOPEN  # what a changed session needs: RESET where supported
        poolkit_autocommit: bool | None = None
        poolkit_restore: tuple[bytes, ...] = ()
        poolkit_checked = False  # the next query()'s text was classified by its caller
        poolkit_role: str | None = None  # the SQL that restores a fresh session's role
        poolkit_database = b""  # the pool's database, selected again after a reset
        poolkit_timeouts: tuple[float | None, float | None] = (None, None)
        _read_timeout: float | None  # PyMySQL's, declared for mypy (no value here)

        def connect(self, sock: t.Any = None) -> None:
            # PyMySQL reads the server's greeting with read_timeout: bound the whole handshake
            # by connect_timeout instead (as libmysqlclient does), or a server that accepts
            # but never greets holds a pool slot for read_timeout (60 s by default).
            # private: _read_timeout/_write_timeout/_current_timeout are PyMySQL's timeouts.
            read_timeout: float | None = getattr(self, "_read_timeout", None)
            connect_timeout: float | None = getattr(self, "connect_timeout", None)
            if connect_timeout and (read_timeout is None or read_timeout > connect_timeout):
                self._read_timeout = connect_timeout
            try:
                base_connect(self, sock)
            finally:
                self._read_timeout = read_timeout
            # Python sockets with a timeout poll() before every recv/send (~6 % of a short
            # query). After the handshake, let the kernel enforce the same timeouts instead.
            read: float | None = getattr(self, "_read_timeout", None)
            write: float | None = getattr(self, "_write_timeout", None)
            if (read or write) and uses_kernel_timeouts(self._sock):
                self._sock.settimeout(None)
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(read))
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(write))
                self._current_timeout = None
                self.poolkit_timeouts = (read, write)
                self._read_timeout = self._write_timeout = None

        # private: every read from the socket goes through _read_bytes (_rfile is its buffer).
        def _read_bytes(self, num_bytes: int) -> bytes:
            # PyMySQL's own version, plus: a kernel read timeout makes the buffered read
            # return None, which must end the connection like a Python socket timeout does.
            try:
                data = self._rfile.read(num_bytes)
            except OSError as error:
                self._force_close()
                lost = pymysql.err.OperationalError(
                    2013, f"Lost connection to MySQL server during query ({error})")
                lost.poolkit_timeout = isinstance(error, TimeoutError)
                raise lost from None
            except BaseException:
                self._force_close()
                raise
            if data is None or len(data) < num_bytes:
                self._force_close()
                reason = f" (read timeout: {self.poolkit_timeouts[0]} s)" if data is None else ""
                lost = pymysql.err.OperationalError(
                    2013, "Lost connection to MySQL server during query" + reason)
                lost.poolkit_timeout = data is None
                raise lost
            return data  # type: ignore[no-any-return]  # t.cast: a call per packet read

        # private: PyMySQL >= 1.2 calls _create_ssl_ctx for every TLS connect.
        def _create_ssl_ctx(self, sslp: t.Any) -> t.Any:
            if isinstance(sslp, dict) and not sslp:
                # private: PyMySQL's handshake uses self.ctx only when the server offers TLS,
                # and its _create_ssl_ctx does not use self (1.2.x), so nothing holds this
                # connection alive. Any other use of ctx would simply build it there.
                return LazySSLContext(lambda: base._create_ssl_ctx(None, {}))
            return base._create_ssl_ctx(self, sslp)

        def query(self, sql: t.Any, unbuffered: bool = False) -> t.Any:
            if self.poolkit_checked:  # poolkit's helper checked the statement's template
                self.poolkit_checked = False
            elif changes_untracked_state(sql):
                self.poolkit_changed |= SERVER_SESSION_STATE_CHANGED
            # A failed statement leaves server_status as it was before the statement, so the
            # except branch can tell whether the statement began outside any transaction.
            try:
                return base_query(self, sql, unbuffered)
            except Exception as error:
                if is_disconnect(error):
                    self.poolkit_broken = True
                    status = self.server_status or 0
                    # A timed-out statement may still run on the server: never run it twice.
                    error.poolkit_retry_safe = (  # type: ignore[attr-defined]
                        not getattr(error, "poolkit_timeout", False)
                        and not status & (SERVER_STATUS_IN_TRANS | SERVER_STATUS_AUTOCOMMIT))
                elif self.poolkit_on_read_only is not None and is_read_only_error(error):
                    self.poolkit_on_read_only(self, error)  # issue 14: a role change
                raise

        def commit(self) -> None:
            # issue 14: a COMMIT of writes fails with 1290 once the server turned read-only;
            # commit() does not go through query().
            try:
                base_commit(self)
            except Exception as error:
                if self.poolkit_on_read_only is not None and is_read_only_error(error):
                    self.poolkit_on_read_only(self, error)
                raise

        def set_character_set(self, charset: str, collation: str | None = None) -> None:
            # PyMySQL reads this answer with _read_packet, past the status hooks below.
            base.set_character_set(self, charset, collation)
            self.poolkit_changed |= SERVER_SESSION_STATE_CHANGED

        # private: commit(), rollback(), autocommit(), select_db(), ping() read their answer
        # with _read_ok_packet; without this hook their status changes go unseen.
        def _read_ok_packet(self) -> t.Any:
            ok = base_read_ok(self)
            self.poolkit_changed |= ok.server_status
            return ok

        # private: query() and next_result() read results through _read_query_result; PyMySQL
        # sets _result and server_status there.
        def _read_query_result(self, unbuffered: bool = False) -> t.Any:
            # PyMySQL's own, with a result class that keeps the final EOF packet's status.
            self._result = None
            result = TrackedResult(self)
            if unbuffered:
                result.init_unbuffered_query()
            else:
                result.read()
            self._result = result
            status = result.server_status
            if status is not None:
                self.server_status = status
                self.poolkit_changed |= status
            if result.insert_id:  # LAST_INSERT_ID() changed: unflagged session state
                self.poolkit_changed |= SERVER_SESSION_STATE_CHANGED
            return result.affected_rows

    return TrackedConnection


def prepare_session(raw: t.Any, session: t.Sequence[str]) -> None:
    """After connect and the session SQL: decide how this connection is reset, start tracking.

    Needs ``CLIENT_SESSION_TRACK`` in the handshake (poolkit adds it to ``client_flag``).
    """
    raw.poolkit_autocommit = raw.autocommit_mode
    raw.poolkit_charset = (raw.charset, raw.encoding, raw.collation)
    tracks = bool(raw.server_capabilities & CLIENT_SESSION_TRACK)
    # A reset keeps the current database: a pool without one could not undo a USE.
    can_reset = reset_supported(raw.server_version) and bool(raw.db)
    with raw.cursor() as cursor:
        raw.poolkit_role, raw.poolkit_server_max = _role_and_limit(cursor, raw.server_version)
        if tracks:  # last: the session's last result is an OK packet, as before
            cursor.execute("SET SESSION session_track_state_change=ON")
    if can_reset:
        database = raw.db  # bytes after connect (PyMySQL encodes it), else str
        if isinstance(database, str):
            database = database.encode(raw.encoding)
        raw.poolkit_database = bytes(database)
        raw.poolkit_restore = restore_statements(raw, session)
        raw.poolkit_reset_mode = RESET
    # Without tracking every return counts as changed: reset (or reopen) each time.
    raw.poolkit_untracked = raw.poolkit_changed = 0 if tracks else SERVER_SESSION_STATE_CHANGED


def _role_and_limit(cursor: t.Any, server_version: str) -> tuple[str | None, int | None]:
    """The SQL that gives a reset session the role a fresh one has (None: no roles), and the
    server's ``max_connections`` (for PoolTimeout's message), in one round trip."""
    mariadb = "mariadb" in server_version.lower()
    cursor.execute("SELECT @@GLOBAL.max_connections, CURRENT_ROLE()" if mariadb
                   else "SELECT @@GLOBAL.max_connections")
    row = cursor.fetchone()
    limit = int(row[0]) if row and row[0] is not None else None
    if not mariadb:
        return ("SET ROLE DEFAULT" if _version(server_version) >= (8, 0, 0) else None), limit
    role = row[1] if row else None
    if role is None:
        return "SET ROLE NONE", limit
    return "SET ROLE `" + str(role).replace("`", "``") + "`", limit


def _version(server_version: str) -> tuple[int, ...]:
    version = server_version.removeprefix("5.5.5-")  # MariaDB's old replication prefix
    return tuple(int(n) for n in re.findall(r"\d+", version.split("-", 1)[0])[:3])


def reset_supported(server_version: str) -> bool:
    """True when the server has COM_RESET_CONNECTION (MySQL >= 5.7.3, MariaDB >= 10.2.4)."""
    numbers = _version(server_version)
    if "mariadb" in server_version.lower():
        return numbers >= (10, 2, 4)
    return numbers >= (5, 7, 3)


# -- flask initdb's import session ---------------------------------------------------------
_COM_SET_OPTION = 0x1B
_COM_QUERY = 0x03
MULTI_STATEMENTS_ON = 0


def enable_multi_statements(raw: t.Any) -> bool:
    """Turn on multi-statements for this session (COM_SET_OPTION), as the mysql client runs.

    Uses ``_execute_command`` and ``_read_packet`` (breaks if they are renamed); the server
    answers with an EOF packet, or an error packet that ``_read_packet`` raises.
    """
    if not is_pymysql(raw):
        return False
    raw._execute_command(_COM_SET_OPTION, struct.pack("<H", MULTI_STATEMENTS_ON))
    raw._read_packet()
    return True


def send_statements(raw: t.Any, sql: bytes) -> None:
    """Send *sql* (COM_QUERY) without reading its results, so the server works on it while
    the caller does something else; :func:`read_statements` must follow before anything else
    is sent. ``_execute_command`` is what ``query()`` calls (breaks if renamed)."""
    raw._execute_command(_COM_QUERY, sql)


def read_statements(raw: t.Any, on_result: t.Callable[[t.Any], None]) -> None:
    """The results of :func:`send_statements`, in order, as :func:`run_statements` hands them."""
    raw._affected_rows = raw._read_query_result()
    on_result(raw._result)
    while raw._result is not None and raw._result.has_next:
        raw.next_result()
        on_result(raw._result)


def run_statements(raw: t.Any, sql: bytes, on_result: t.Callable[[t.Any], None]) -> None:
    """Send *sql* (maybe several statements) and hand each result, in order, to *on_result*.

    ``query()`` reads the first result, ``next_result()`` the next while the server's
    MORE_RESULTS flag (``_result.has_next``, private) is set. A failing statement raises from
    the read of its result; the server runs nothing after it.
    """
    raw.query(sql)
    on_result(raw._result)
    while raw._result is not None and raw._result.has_next:
        raw.next_result()
        on_result(raw._result)


def result_rows(result: t.Any) -> tuple[list[str], list[tuple[t.Any, ...]]] | None:
    """(column names, rows) of a result that has rows, None for an OK result."""
    description = getattr(result, "description", None)
    if not description:
        return None
    return [str(column[0]) for column in description], list(result.rows or ())


@contextlib.contextmanager
def raw_values(raw: t.Any) -> t.Iterator[None]:
    """Rows as the server's bytes (as the client prints them), not Python values.

    Clears ``decoders`` and ``use_unicode`` (public attributes, private meaning: PyMySQL's
    result reader consults them per field) for the duration, then restores them.
    """
    if not is_pymysql(raw):
        yield
        return
    decoders, use_unicode = raw.decoders, raw.use_unicode
    raw.decoders, raw.use_unicode = {}, False
    try:
        yield
    finally:
        raw.decoders, raw.use_unicode = decoders, use_unicode
