"""Driver adapters: how poolkit opens, classifies, resets and inspects PyMySQL and mysqlclient
connections (PyMySQL's private API stays in :mod:`poolkit.pool.pymysql_compat`).

The pool needs four facts from a driver that DB-API does not give:

* what a returned connection needs (nothing, a rollback, a session reset, or closing): see
  :meth:`Driver.return_action` and docs/pool.md;
* whether a transaction (or a read snapshot) is open, so that a connection is rolled back on
  return only when needed. The server says so in ``SERVER_STATUS_IN_TRANS`` after every
  statement -- a SELECT from an InnoDB table under autocommit=0 included -- but PyMySQL drops
  the flags of the EOF packet that ends a result set, so its ``server_status`` lags one
  statement behind. The tracked connection keeps them;
* whether an error means the connection is gone (it is then discarded, never reused);
* whether re-running the failed statement on a new connection is safe (DBUtils' failover
  re-executes; poolkit lets it only when the statement cannot have committed).

A PyMySQL connect is bounded as a whole by ``connect_timeout``: PyMySQL applies its timeouts
to each read, so a server that greets one byte at a time would hold a connect for ever.
poolkit opens the TCP socket itself (``defer_connect`` + ``connect(sock)``, public API) and a
watchdog thread shuts it down when the handshake -- greeting, TLS, authentication, the first
SET NAMES -- outlives the deadline. mysqlclient opens its own socket in libmariadb, out of
reach: there ``connect_timeout`` still bounds each read only (docs/security.md).
"""

from __future__ import annotations

import contextlib
import heapq
import importlib
import os
import socket
import threading
import time
import typing as t
from dataclasses import dataclass

from ..errors import DriverNotInstalledError
from ..tls import (
    AUTH_REFUSED,
    MARIADB_RESTRICTED_AUTH,
    check_restricted_file,
    mysqldb_kwargs,
    refusal,
)
from . import pymysql_compat as compat
from .hosts import is_read_only_error
from .pymysql_compat import DISCARD, KEEP, REOPEN, RESET, ROLLBACK, UNREAD

__all__ = ["DISCARD", "KEEP", "REOPEN", "RESET", "ROLLBACK", "UNREAD", "Driver", "get_driver",
           "is_disconnect", "is_retry_safe"]

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


def _tracked_mysqldb_class() -> type[t.Any]:
    # issue 14: the same read-only hook as PyMySQL's, on mysqlclient's query and commit.
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

        def commit(self) -> None:
            try:
                Connection.commit(self)
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

    @property
    def failures(self) -> tuple[type[BaseException], ...]:
        """The exception classes DBUtils' failover looks at."""
        m = self.module
        return (m.OperationalError, m.InterfaceError, m.InternalError)

    def connect(self, kwargs: dict[str, t.Any], session: t.Sequence[str] = ()) -> t.Any:
        """Open a raw connection, run the *session* SQL, and note what the pool needs."""
        if self.name == "pymysql":
            # Session tracking: the server flags every statement that changed session state.
            kwargs = {**kwargs, "client_flag": kwargs.get("client_flag", 0)
                      | compat.CLIENT_SESSION_TRACK}
            con = self._connect_pymysql(kwargs)
        else:
            kwargs = _mysqldb_kwargs(kwargs)
            check_restricted_file(kwargs)
            try:
                con = self.connection_class(**kwargs)
            except self.module.OperationalError as error:
                raise _mysqldb_refusal(self.module, error, kwargs) from None
        try:
            con.poolkit_broken = False
            cursor = con.cursor()
            for sql in session:
                cursor.execute(sql)
            # Read after the session SQL, which may change it (SET SESSION wait_timeout=…).
            cursor.execute("SELECT @@SESSION.wait_timeout")
            row = cursor.fetchone()
            cursor.close()
            con.commit()  # the session SQL must not leave a transaction open
            if self.name == "pymysql":
                compat.prepare_session(con, session)
            else:
                con.poolkit_session = tuple(session)
                con.poolkit_login = (kwargs.get("user", ""), kwargs.get("passwd", ""),
                                     kwargs.get("db"))
                con.poolkit_autocommit = con.get_autocommit()
        except BaseException:
            with contextlib.suppress(Exception):
                con.close()
            raise
        con.poolkit_wait_timeout = float(row[0]) if row else 0.0
        con.poolkit_last_used = time.monotonic()
        return con

    def _connect_pymysql(self, kwargs: dict[str, t.Any]) -> t.Any:
        """A PyMySQL connection whose whole handshake ends within ``connect_timeout``."""
        con = self.connection_class(**kwargs, defer_connect=True)
        timeout = kwargs.get("connect_timeout")
        if kwargs.get("unix_socket") or not timeout:  # a local socket: no rogue in between
            con.connect()
            return con
        host, port = con.host, con.port
        try:
            source = kwargs.get("bind_address")
            sock = socket.create_connection((host, port), timeout,
                                            source_address=(source, 0) if source else None)
        except OSError as error:  # the message PyMySQL's own connect() gives
            raise self.module.err.OperationalError(
                2003, f"Can't connect to MySQL server on {host!r} ({error})") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        con.host_info = f"socket {host}:{port}"
        deadline = HandshakeDeadline(sock, timeout)
        try:
            con.connect(sock)
        except Exception:
            if deadline.finish():
                raise deadline.error(self.module, host, port) from None
            raise
        if deadline.finish():
            with contextlib.suppress(Exception):
                con.close()
            raise deadline.error(self.module, host, port)
        return con

    def return_action(self, raw: t.Any) -> int:
        """What a returned *raw* needs: KEEP, ROLLBACK, RESET, or DISCARD/UNREAD/REOPEN (close
        it); call it once per return.

        mysqlclient reports neither session changes nor the transaction flags: every return
        is a full reset (``change_user``).
        """
        if self.name == "pymysql":
            return compat.return_action(raw)
        return DISCARD if raw.poolkit_broken else RESET

    def reset(self, raw: t.Any) -> None:
        """Make *raw*'s session equal a fresh connection's (raises if the connection is gone)."""
        if self.name == "pymysql":
            compat.reset_session(raw)
            return
        # mysql_change_user: a full reset (variables, temporary tables, locks, prepared
        # statements, transaction, database) with a new authentication; autocommit returns to
        # the server's default and the session SQL is gone.
        raw.change_user(*raw.poolkit_login)
        raw.autocommit(raw.poolkit_autocommit)
        if raw.poolkit_session:
            cursor = raw.cursor()
            for sql in raw.poolkit_session:
                cursor.execute(sql)
            cursor.close()
            raw.commit()

    def detach(self, raw: t.Any) -> bool:
        """Close *raw*'s socket without a word to the server (after fork); False if impossible."""
        if self.name == "pymysql":
            compat.force_close(raw)
            return True
        # mysqlclient's close() -- and its deallocation, at the latest when the child exits --
        # always sends COM_QUIT. Point its descriptor at /dev/null: the child's copy of the
        # parent's socket is closed now, and whatever libmysqlclient writes later goes nowhere.
        try:
            fd = raw.fileno()
            null = os.open(os.devnull, os.O_RDWR)
        except Exception:
            return False
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        return True

    def is_broken(self, raw: t.Any) -> bool:
        """True when *raw* saw a disconnect or its socket is closed."""
        if raw.poolkit_broken:
            return True
        return self.name == "pymysql" and compat.is_closed(raw)


class _Watchdog:
    """One daemon thread that fires the handshake deadlines due (a thread per connect would
    add ~25 % to a 0.6 ms connect). Finished deadlines leave the heap when they come due."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, HandshakeDeadline]] = []
        self._thread: threading.Thread | None = None

    def watch(self, deadline: HandshakeDeadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.due, id(deadline), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="poolkit-handshake",
                                                daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:  # due before all others: wake the thread
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    due, _, deadline = self._heap[0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self._heap)
                        break
                    self._cond.wait(wait)
            deadline.fire()


_watchdog = _Watchdog()


def _new_watchdog() -> None:
    # The child of a fork has no watchdog thread and maybe a lock held by the parent's.
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_new_watchdog)


class HandshakeDeadline:
    """Shuts *sock* down *seconds* from now unless :meth:`finish` comes first.

    The watchdog shuts down a duplicate of the socket's descriptor: ``shutdown`` acts on the
    connection, not the descriptor, so it also ends reads on the TLS socket PyMySQL wraps
    around the original (which detaches it). A blocked read then returns end-of-file.
    """

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.seconds = seconds
        self.due = time.monotonic() + seconds
        self._twin = sock.dup()
        self._lock = threading.Lock()
        self._fired = self._finished = False
        _watchdog.watch(self)

    def fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._fired = True
            with contextlib.suppress(OSError):
                self._twin.shutdown(socket.SHUT_RDWR)

    def finish(self) -> bool:
        """Stop the timer; True when it fired (the connection is dead)."""
        with self._lock:
            self._finished = True
            fired = self._fired
            self._twin.close()
        return fired

    def error(self, module: t.Any, host: str, port: int) -> Exception:
        return t.cast(Exception, module.err.OperationalError(
            2013, f"Lost connection to MySQL server at '{host}:{port}': the handshake did not "
            f"finish within connect_timeout={self.seconds:g} s"))


def _mysqldb_refusal(module: t.Any, error: BaseException, kwargs: dict[str, t.Any]
                     ) -> BaseException:
    """libmariadb's refusal of a clear-text method (5010) as PyMySQL's line; else *error*."""
    if error_code(error) != MARIADB_RESTRICTED_AUTH:
        return error
    plugin = str(error.args[1]).split("'")[1] if "'" in str(error.args[1]) else "?"
    return t.cast(BaseException, module.OperationalError(
        AUTH_REFUSED, refusal(plugin, kwargs.get("host", "localhost"), kwargs.get("port", 3306))))


def _mysqldb_kwargs(kwargs: dict[str, t.Any]) -> dict[str, t.Any]:
    # mysqlclient names a few arguments differently and has no write_timeout=None; TLS comes
    # as ssl_mode + an ssl dict of file names rather than PyMySQL's context.
    renamed = {"password": "passwd", "database": "db"}
    return {renamed.get(k, k): v for k, v in mysqldb_kwargs(kwargs).items() if v is not None}


_EXTRAS = {"pymysql": "pymysql", "mysqldb": "mysqlclient"}


def get_driver(name: str) -> Driver:
    """The :class:`Driver` for *name*, or a clear error saying which extra to install."""
    if name == "pymysql":
        try:
            pymysql = importlib.import_module("pymysql")
        except ImportError:
            raise DriverNotInstalledError(
                "the mysql:// scheme needs PyMySQL: pip install pymysql") from None
        return Driver("pymysql", pymysql, compat.tracked_connection_class(is_disconnect),
                      pymysql.cursors.DictCursor)
    if name == "mysqldb":
        try:
            mysqldb = importlib.import_module("MySQLdb")
            cursors = importlib.import_module("MySQLdb.cursors")
        except ImportError:
            raise DriverNotInstalledError(
                "the mysql+mysqldb:// scheme needs mysqlclient: "
                "pip install 'poolkit[mysqlclient]'") from None
        return Driver("mysqldb", mysqldb, _tracked_mysqldb_class(),
                      cursors.DictCursor)  # issue 14: read-only hook
    raise DriverNotInstalledError(f"unknown driver {name!r}; use pymysql or mysqldb")
