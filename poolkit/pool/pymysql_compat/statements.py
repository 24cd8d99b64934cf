"""``flask initdb``'s import session: multi-statements, pipelined statements, raw values."""

from __future__ import annotations

import contextlib
import struct
import typing as t

from .protocol import is_pymysql

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
