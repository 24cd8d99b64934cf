"""The import session: one pooled connection set up like the ``mysql`` client's, and its helpers.

Autocommit, multi-statements on (the client turns them on: a ``DELIMITER`` block may hold
several statements, and batches need them), no driver read timeout, the connection's character
set (utf8mb4 unless ``--default-character-set``), and each file started in the URL's
database. The session is closed afterwards rather than returned to the pool: files change it.
"""

from __future__ import annotations

import re
import time
import typing as t
from contextlib import contextmanager, suppress

from ..errors import SqlFileError
from ..pool import pymysql_compat
from ..pool.drivers import error_code, get_driver
from ..url import mask_url
from .history import quote_ident

if t.TYPE_CHECKING:
    from ..config import PoolSettings

DEFAULT_CHARSET = "utf8mb4"
_CHARSET_NAME = re.compile(r"[A-Za-z0-9_]{1,32}")
_MULTI_STATEMENTS_ON = 0  # MYSQL_OPTION_MULTI_STATEMENTS_ON


def _execute(raw: t.Any, sql: str, args: t.Sequence[t.Any] | None = None
             ) -> list[tuple[t.Any, ...]]:
    cursor = raw.cursor()
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall() or ())
    finally:
        cursor.close()


def enable_multi_statements(raw: t.Any) -> None:
    """Let one query hold several statements (COM_SET_OPTION), as the mysql client does."""
    if pymysql_compat.enable_multi_statements(raw):
        return
    set_option = getattr(raw, "set_server_option", None)  # mysqlclient
    if set_option is not None:
        set_option(_MULTI_STATEMENTS_ON)


def set_charset(raw: t.Any, name: str) -> None:
    """``SET NAMES name`` on *raw*; an unknown name is one clear error."""
    if not _CHARSET_NAME.fullmatch(name):
        raise SqlFileError(f"--default-character-set {name!r}: not a character set name")
    try:
        _execute(raw, f"SET NAMES {name}")
    except Exception as error:
        if error_code(error) == 1115:
            raise SqlFileError(f"--default-character-set {name}: the server does not know this "
                               "character set (SHOW CHARACTER SET lists them)") from None
        raise


def max_allowed_packet(raw: t.Any) -> int:
    """The session's ``max_allowed_packet`` in bytes."""
    rows = _execute(raw, "SELECT @@max_allowed_packet")
    return int(rows[0][0]) if rows else 1 << 24


@contextmanager
def import_session(conn: t.Any, charset: str = DEFAULT_CHARSET) -> t.Iterator[t.Any]:
    """The raw connection of pooled *conn* set up like the mysql client; discarded afterwards.

    Autocommit on, multi-statements on, *charset*, and no driver read/write timeout (a long
    ``ALTER`` must not be cut off at the pool's 60 s). The files change the session (``USE``,
    ``SET NAMES``, ``sql_mode``, variables): the connection is closed at the end, so the pool
    replaces it rather than handing that session to a request.
    """
    raw = conn.raw
    try:
        raw.autocommit(True)
        if pymysql_compat.is_pymysql(raw) and hasattr(raw, "poolkit_timeouts"):
            pymysql_compat.disable_timeouts(raw)
        enable_multi_statements(raw)
        if charset != DEFAULT_CHARSET:
            set_charset(raw, charset)
        yield raw
    finally:
        with suppress(Exception):
            raw.close()
        conn.close()


def start_file(raw: t.Any, database: str, charset: str = DEFAULT_CHARSET) -> None:
    """Each file starts like ``mysql db < file``: in *database*, with the session's charset."""
    _execute(raw, f"USE {quote_ident(database)}")
    _execute(raw, f"SET NAMES {charset}")


def transaction_open(raw: t.Any) -> bool:
    """Whether the file's session has a transaction open, as the server says; True when it
    cannot say (the safe answer: the client's exit would roll back an unknown part)."""
    for sql in ("SELECT @@in_transaction",  # MariaDB
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX "
                "WHERE trx_mysql_thread_id = CONNECTION_ID()"):  # MySQL
        try:
            with raw.cursor() as cursor:
                cursor.execute(sql)
                row = cursor.fetchone()
            return bool(row and row[0])
        except Exception:
            continue
    return True


def end_file(raw: t.Any) -> None:
    """End a file's session as the client's disconnect would: its open transaction rolled
    back, its table locks released, autocommit back on (the next file starts clean)."""
    with suppress(Exception):
        _execute(raw, "ROLLBACK")
        _execute(raw, "UNLOCK TABLES")
        _execute(raw, "SET autocommit=1")


@contextmanager
def own_connection(settings: PoolSettings) -> t.Iterator[t.Any]:
    """A connection of its own (not from the pool, not the file's session), autocommit on:
    history is written there, so nothing a file does to its session (``LOCK TABLES``, an open
    transaction, ``SET autocommit=0``, a broken session) can block, undo or commit it."""
    driver = get_driver(settings.url.driver)
    con = driver.connect(settings.driver_kwargs())
    try:
        con.autocommit(True)
        yield con
    finally:
        with suppress(Exception):
            con.close()


def use_database(raw: t.Any, database: str) -> None:
    """Make *database* current again."""
    _execute(raw, f"USE {quote_ident(database)}")


def create_database(settings: PoolSettings) -> bool:
    """Create the database of *settings*' URL if missing (connecting without one). True if made."""
    driver = get_driver(settings.url.driver)
    kwargs = settings.driver_kwargs()
    kwargs["database"] = None
    con = driver.connect(kwargs)
    try:
        name = settings.url.database
        if _execute(con, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                    (name,)):
            return False
        _execute(con, f"CREATE DATABASE IF NOT EXISTS {quote_ident(name)} "
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
        _execute(killer, f"KILL QUERY {thread_id}")
        return True
    except Exception:
        return False
    finally:
        with suppress(Exception):
            killer.close()
