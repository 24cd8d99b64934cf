"""PyMySQL's wire protocol as poolkit needs it: status bits, commands, packet framing."""

from __future__ import annotations

import struct
import typing as t

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


def _command(command: int, payload: bytes) -> bytes:
    # A command packet: 3-byte length, sequence id 0, command byte, payload (< 16 MiB).
    return struct.pack("<IB", len(payload) + 1, command) + payload


def is_pymysql(raw: object) -> bool:
    """True for a PyMySQL connection (the helpers here need one)."""
    import pymysql

    return isinstance(raw, pymysql.connections.Connection)


def has_more_results(raw: t.Any) -> bool:
    """True while the last statement still has result sets to read (``nextset()``)."""
    # private: _result is PyMySQL's current MySQLResult; has_next its MORE_RESULTS flag.
    result = raw._result
    return result is not None and bool(result.has_next)
