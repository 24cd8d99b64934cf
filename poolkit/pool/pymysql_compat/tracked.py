"""PyMySQL's Connection subclass that keeps what the pool must know (see the package doc)."""

from __future__ import annotations

import socket
import typing as t

from ..hosts import is_read_only_error
from ..untracked import changes_untracked_state
from .protocol import (
    REOPEN,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_IN_TRANS,
)
from .sockets import LazySSLContext, _timeval, uses_kernel_timeouts


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
