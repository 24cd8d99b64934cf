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

Each private member used is commented with what breaks if PyMySQL changes it. The package
splits the adapter by concern -- ``protocol`` (status bits, commands), ``sockets`` (TLS
context, timeouts, closing), ``tracked`` (the Connection subclass), ``session`` (return,
pipelined ROLLBACK, reset) and ``statements`` (initdb's session) -- and re-exports every
name here. The rest of poolkit uses these public-to-poolkit names: the pool's
(``tracked_connection_class``, ``prepare_session``, ``return_action``, ``send_rollback``,
``finish_pending``, ``reset_session``, ``is_closed``, ``force_close``,
``shared_ssl_context``, ``uses_kernel_timeouts``) and, for the rest of poolkit (sqlimport,
stress), ``is_pymysql``, ``has_more_results``, ``disable_timeouts``, ``shutdown_socket``.
"""

from __future__ import annotations

import typing as t

from ..untracked import changes_untracked_state
from . import sockets
from .protocol import (
    CLIENT_SESSION_TRACK,
    COM_INIT_DB,
    COM_QUERY,
    COM_RESET_CONNECTION,
    DISCARD,
    KEEP,
    REOPEN,
    RESET,
    ROLLBACK,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_IN_TRANS,
    UNREAD,
    has_more_results,
    is_pymysql,
)
from .session import (
    finish_pending,
    prepare_session,
    reset_session,
    reset_supported,
    restore_statements,
    return_action,
    send_rollback,
)
from .sockets import (
    LazySSLContext,
    disable_timeouts,
    force_close,
    is_closed,
    shared_ssl_context,
    shutdown_socket,
    uses_kernel_timeouts,
)
from .statements import (
    MULTI_STATEMENTS_ON,
    enable_multi_statements,
    raw_values,
    read_statements,
    result_rows,
    run_statements,
    send_statements,
)
from .tracked import tracked_connection_class

__all__ = [
    "CLIENT_SESSION_TRACK",
    "COM_INIT_DB",
    "COM_QUERY",
    "COM_RESET_CONNECTION",
    "DISCARD",
    "KEEP",
    "MULTI_STATEMENTS_ON",
    "REOPEN",
    "RESET",
    "ROLLBACK",
    "SERVER_SESSION_STATE_CHANGED",
    "SERVER_STATUS_AUTOCOMMIT",
    "SERVER_STATUS_IN_TRANS",
    "UNREAD",
    "LazySSLContext",
    "changes_untracked_state",
    "disable_timeouts",
    "enable_multi_statements",
    "finish_pending",
    "force_close",
    "has_more_results",
    "is_closed",
    "is_pymysql",
    "prepare_session",
    "raw_values",
    "read_statements",
    "reset_session",
    "reset_supported",
    "restore_statements",
    "result_rows",
    "return_action",
    "run_statements",
    "send_rollback",
    "send_statements",
    "shared_ssl_context",
    "shutdown_socket",
    "tracked_connection_class",
    "uses_kernel_timeouts",
]


def __getattr__(name: str) -> t.Any:
    # The shared TLS context and its lock are rebound at run time (first TLS connect, fork):
    # read them from their module, never from a copy made at import.
    if name in ("_ssl_context", "_ssl_lock"):
        return getattr(sockets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
