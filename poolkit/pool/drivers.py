"""Driver adapters: how poolkit opens, classifies and inspects PyMySQL and mysqlclient connections.

The pool needs three facts from a driver that DB-API does not give:

* whether a transaction (or a read snapshot) is open, so that a connection is rolled back on
  return only when needed. The server says so in ``SERVER_STATUS_IN_TRANS`` after every
  statement -- a SELECT from an InnoDB table under autocommit=0 included -- but PyMySQL drops
  the flags of the EOF packet that ends a result set, so its ``server_status`` lags one
  statement behind. The tracked connection keeps them;
* whether an error means the connection is gone (it is then discarded, never reused);
* whether re-running the failed statement on a new connection is safe (DBUtils' failover
  re-executes; poolkit lets it only when the statement cannot have committed).
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import ssl
import struct
import sys
import threading
import time
import typing as t
from dataclasses import dataclass

from ..errors import DriverNotInstalledError
from .hosts import is_read_only_error

#: MySQL/MariaDB error codes that mean the connection is gone.
DISCONNECT_CODES = frozenset({
    1053,  # server shutdown in progress
    1927,  # MariaDB: connection was killed
    2002, 2003,  # can't connect (socket / TCP)
    2006,  # server has gone away
    2013,  # lost connection during query
    2014,  # commands out of sync: the protocol state is lost
    2026,  # TLS error
    2055,  # lost connection at '…', system error
    4031,  # MySQL 8: disconnected by the server because of inactivity
})

_SERVER_STATUS_IN_TRANS = 0x0001
_SERVER_STATUS_AUTOCOMMIT = 0x0002


def error_code(error: BaseException) -> int | None:
    """The server or client error number of a driver error, if it has one."""
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_disconnect(error: BaseException) -> bool:
    """True when *error* means the connection can no longer be used."""
    code = error_code(error)
    if code in DISCONNECT_CODES:
        return True
    name = type(error).__name__
    # PyMySQL raises InterfaceError(0, '') on a closed socket and InternalError for a
    # wrong packet sequence: both leave the connection unusable.
    return name in {"InterfaceError", "InternalError"}


def is_retry_safe(error: BaseException) -> bool:
    """DBUtils' ``isfatal`` hook: fail over (reconnect and re-run) only where that cannot duplicate.

    The tracked PyMySQL connection marks a disconnect as safe when the statement began
    outside any transaction with autocommit off: the server rolls back whatever it did.
    """
    return bool(getattr(error, "poolkit_retry_safe", False))


_KERNEL_TIMEOUTS = sys.platform.startswith("linux")


def _timeval(seconds: float | None) -> bytes:
    seconds = seconds or 0.0
    return struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))


_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def _shared_ssl_context(factory: t.Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    # PyMySQL >= 1.2 builds a TLS context for every connect in its "preferred" mode
    # (~40 ms of CPU each); the pool builds it once and shares it.
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = factory()
        return _ssl_context


def _tracked_pymysql_class() -> type[t.Any]:
    import pymysql

    eof_wrapper = pymysql.protocol.EOFPacketWrapper

    class TrackedResult(pymysql.connections.MySQLResult):  # type: ignore[misc]
        """A result that keeps the server status of the EOF packet ending its rows."""

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

    class TrackedConnection(base):  # type: ignore[misc]
        """A PyMySQL connection that remembers what the pool needs to know about it."""

        poolkit_broken = False
        poolkit_created = 0.0
        poolkit_last_used = 0.0
        poolkit_wait_timeout = 0.0
        poolkit_timeouts: tuple[float | None, float | None] = (None, None)
        poolkit_on_read_only: t.Callable[[t.Any, BaseException], None] | None = None
        _read_timeout: float | None  # PyMySQL's, declared for mypy (no value here)

        def connect(self, sock: t.Any = None) -> None:
            # PyMySQL reads the server's greeting with read_timeout: bound the whole handshake
            # by connect_timeout instead (as libmysqlclient does), or a server that accepts
            # but never greets holds a pool slot for read_timeout (60 s by default).
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
            if _KERNEL_TIMEOUTS and (read or write) and self._sock is not None:
                self._sock.settimeout(None)
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(read))
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(write))
                self._current_timeout = None
                self.poolkit_timeouts = (read, write)
                self._read_timeout = self._write_timeout = None

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
            return t.cast(bytes, data)

        def _create_ssl_ctx(self, sslp: t.Any) -> t.Any:
            if isinstance(sslp, dict) and not sslp:
                return _shared_ssl_context(lambda: base._create_ssl_ctx(self, {}))
            return base._create_ssl_ctx(self, sslp)

        def query(self, sql: t.Any, unbuffered: bool = False) -> t.Any:
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
                        and not status & (_SERVER_STATUS_IN_TRANS | _SERVER_STATUS_AUTOCOMMIT))
                elif self.poolkit_on_read_only is not None and is_read_only_error(error):
                    self.poolkit_on_read_only(self, error)  # issue 14: a role change
                raise

        def _read_query_result(self, unbuffered: bool = False) -> t.Any:
            # PyMySQL's own, with a result class that keeps the final EOF packet's status.
            self._result = None
            result = TrackedResult(self)
            if unbuffered:
                result.init_unbuffered_query()
            else:
                result.read()
            self._result = result
            if result.server_status is not None:
                self.server_status = result.server_status
            return result.affected_rows

    return TrackedConnection


def _tracked_mysqldb_class() -> type[t.Any]:
    # issue 14: the same read-only hook as PyMySQL's, on mysqlclient's single query path.
    from MySQLdb.connections import Connection

    class TrackedMySQLdbConnection(Connection):  # type: ignore[misc]
        poolkit_on_read_only: t.Callable[[t.Any, BaseException], None] | None = None

        def query(self, query: t.Any) -> None:
            try:
                Connection.query(self, query)
            except Exception as error:
                if self.poolkit_on_read_only is not None and is_read_only_error(error):
                    self.poolkit_on_read_only(self, error)
                raise

    return TrackedMySQLdbConnection


@dataclass(frozen=True)
class Driver:
    """What poolkit needs to know about one DB-API driver."""

    name: str
    module: t.Any
    connection_class: t.Any
    dict_cursor: t.Any
    tracks_state: bool

    @property
    def failures(self) -> tuple[type[BaseException], ...]:
        """The exception classes DBUtils' failover looks at."""
        m = self.module
        return (m.OperationalError, m.InterfaceError, m.InternalError)

    def connect(self, kwargs: dict[str, t.Any], session: t.Sequence[str] = ()) -> t.Any:
        """Open a raw connection, run the *session* SQL, and note what the pool needs."""
        if self.name != "pymysql":
            kwargs = _mysqldb_kwargs(kwargs)
        con = self.connection_class(**kwargs)
        try:
            con.poolkit_broken = False
            con.poolkit_created = time.monotonic()
            cursor = con.cursor()
            for sql in session:
                cursor.execute(sql)
            # Read after the session SQL, which may change it (SET SESSION wait_timeout=…).
            cursor.execute("SELECT @@SESSION.wait_timeout")
            row = cursor.fetchone()
            cursor.close()
            con.commit()  # the session SQL must not leave a transaction open
        except BaseException:
            with contextlib.suppress(Exception):
                con.close()
            raise
        con.poolkit_wait_timeout = float(row[0]) if row else 0.0
        con.poolkit_last_used = time.monotonic()
        return con

    def needs_reset(self, raw: t.Any) -> bool:
        """True when a rollback is needed before *raw* is reused (unknown → True)."""
        if not self.tracks_state:
            return True
        return bool(raw.server_status & _SERVER_STATUS_IN_TRANS)

    def is_broken(self, raw: t.Any) -> bool:
        """True when *raw* saw a disconnect or its socket is closed."""
        if raw.poolkit_broken:
            return True
        return self.name == "pymysql" and raw._sock is None


def _mysqldb_kwargs(kwargs: dict[str, t.Any]) -> dict[str, t.Any]:
    # mysqlclient names a few arguments differently and has no write_timeout=None.
    renamed = {"password": "passwd", "database": "db"}
    out = {renamed.get(k, k): v for k, v in kwargs.items() if v is not None}
    if out.get("ssl_disabled"):
        out.pop("ssl_disabled")
        out["ssl_mode"] = "DISABLED"
    return out


_EXTRAS = {"pymysql": "pymysql", "mysqldb": "mysqlclient"}


def get_driver(name: str) -> Driver:
    """The :class:`Driver` for *name*, or a clear error saying which extra to install."""
    if name == "pymysql":
        try:
            pymysql = importlib.import_module("pymysql")
        except ImportError:
            raise DriverNotInstalledError(
                "the mysql:// scheme needs PyMySQL: pip install pymysql") from None
        return Driver("pymysql", pymysql, _tracked_pymysql_class(),
                      pymysql.cursors.DictCursor, tracks_state=True)
    if name == "mysqldb":
        try:
            mysqldb = importlib.import_module("MySQLdb")
            cursors = importlib.import_module("MySQLdb.cursors")
        except ImportError:
            raise DriverNotInstalledError(
                "the mysql+mysqldb:// scheme needs mysqlclient: "
                "pip install 'poolkit[mysqlclient]'") from None
        return Driver("mysqldb", mysqldb, _tracked_mysqldb_class(), cursors.DictCursor,
                      tracks_state=False)
    raise DriverNotInstalledError(f"unknown driver {name!r}; use pymysql or mysqldb")
