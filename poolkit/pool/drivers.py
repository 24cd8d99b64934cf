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
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
import typing as t
from dataclasses import dataclass

from ..errors import DriverNotInstalledError
from . import pymysql_compat as compat
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
        else:
            kwargs = _mysqldb_kwargs(kwargs)
        con = self.connection_class(**kwargs)
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
        return Driver("mysqldb", mysqldb, mysqldb.connect, cursors.DictCursor)
    raise DriverNotInstalledError(f"unknown driver {name!r}; use pymysql or mysqldb")
