"""Every use of PyMySQL's private API by ``flask initdb``, in one place.

PyMySQL has no public call for these; each is a candidate for the pool's PyMySQL adapter
module. What breaks if PyMySQL changes is said at each function. Everything here is given a
raw connection and returns False/None when it is not PyMySQL, so callers fall back to DB-API.
"""

from __future__ import annotations

import socket
import struct
import typing as t
from contextlib import contextmanager, suppress

_COM_SET_OPTION = 0x1B
_MULTI_STATEMENTS_ON = 0


def _pymysql_is(raw: t.Any) -> bool:
    """True for a PyMySQL connection (it has the private ``_read_query_result``)."""
    return hasattr(raw, "_read_query_result")


def _pymysql_enable_multi_statements(raw: t.Any) -> bool:
    """Turn on multi-statements for this session (COM_SET_OPTION), as the mysql client runs.

    Uses ``_execute_command`` and ``_read_packet`` (breaks if they are renamed); the server
    answers with an EOF packet, or an error packet that ``_read_packet`` raises.
    """
    if not _pymysql_is(raw):
        return False
    raw._execute_command(_COM_SET_OPTION, struct.pack("<H", _MULTI_STATEMENTS_ON))
    raw._read_packet()
    return True


def _pymysql_run(raw: t.Any, sql: bytes, on_result: t.Callable[[t.Any], None]) -> None:
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


def _pymysql_result_rows(result: t.Any) -> tuple[list[str], list[tuple[t.Any, ...]]] | None:
    """(column names, rows) of a result that has rows, None for an OK result."""
    description = getattr(result, "description", None)
    if not description:
        return None
    return [str(column[0]) for column in description], list(result.rows or ())


@contextmanager
def _pymysql_raw_values(raw: t.Any) -> t.Iterator[None]:
    """Rows as the server's bytes (as the client prints them), not Python values.

    Clears ``decoders`` and ``use_unicode`` (public attributes, private meaning: PyMySQL's
    result reader consults them per field) for the duration, then restores them.
    """
    if not _pymysql_is(raw):
        yield
        return
    decoders, use_unicode = raw.decoders, raw.use_unicode
    raw.decoders, raw.use_unicode = {}, False
    try:
        yield
    finally:
        raw.decoders, raw.use_unicode = decoders, use_unicode


def _pymysql_drop(raw: t.Any) -> None:
    """Close the socket without a COM_QUIT (``_force_close``): the reply state is unknown."""
    close = getattr(raw, "_force_close", None) or raw.close
    with suppress(Exception):
        close()


def _pymysql_no_timeouts(raw: t.Any) -> None:
    """Clear the kernel socket timeouts the pool set on ``_sock`` (private) after connect."""
    sock = getattr(raw, "_sock", None)
    if isinstance(sock, socket.socket) and getattr(raw, "poolkit_timeouts", None):
        forever = struct.pack("ll", 0, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, forever)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, forever)
