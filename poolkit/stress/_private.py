"""Every private API ``poolkit.stress`` touches, in one place (to move behind adapters later).

* PyMySQL: ``Connection._sock`` and ``Connection._force_close()`` — the shared ``global``
  connection is torn down without COM_QUIT once threads have corrupted its protocol state.
  Breaks if PyMySQL renames them; then ``abort``/``close`` of the global strategy would leave a
  thread blocked until its read timeout (2 s) instead of unblocking it at once.
* poolkit.extension: ``_G_KEY`` (where the app context keeps its connections) and
  ``_context_connection`` (the ``db`` proxy's resolver) — the stress hook binds ``db`` to the
  strategy's connection for one request, and the extension's teardown closes it. The
  resolver also reads the bound handle's ``_returned`` (a spent handle is replaced), which
  ``strategies.RawConnection`` therefore defines.
"""

from __future__ import annotations

import contextlib
import socket
import typing as t

from flask import g

from ..config import DEFAULT_BIND
from ..extension import _G_KEY, _context_connection

context_connection = _context_connection


def bind_request_connection(conn: t.Any) -> None:
    """Make ``db`` (the default bind) resolve to *conn* for the rest of this app context."""
    setattr(g, _G_KEY, {DEFAULT_BIND: conn})


def shutdown_socket(raw: t.Any) -> None:
    """Unblock every thread reading PyMySQL connection *raw* (``SHUT_RDWR`` on its socket)."""
    sock = getattr(raw, "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def force_close(raw: t.Any) -> None:
    """Drop PyMySQL connection *raw*'s socket without sending COM_QUIT."""
    raw._force_close()
