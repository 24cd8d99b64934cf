"""A pooled session's life: what a return needs, the pipelined ROLLBACK, the full reset, and
the marks a new connection gets (how it is reset, its role, the server's limits)."""

from __future__ import annotations

import re
import typing as t

from .protocol import (
    CLIENT_SESSION_TRACK,
    COM_INIT_DB,
    COM_QUERY,
    COM_RESET_CONNECTION,
    DISCARD,
    KEEP,
    RESET,
    ROLLBACK,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_IN_TRANS,
    UNREAD,
    _command,
    has_more_results,
)


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
