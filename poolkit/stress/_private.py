"""The extension's private names ``poolkit.stress`` touches, in one place.

``poolkit.extension``: ``_G_KEY`` (where the app context keeps its connections) and
``_context_connection`` (the ``db`` proxy's resolver) -- the stress hook binds ``db`` to the
strategy's connection for one request, and the extension's teardown closes it. The resolver
also reads the bound handle's ``_returned`` (a spent handle is replaced), which
``strategies.RawConnection`` therefore defines. PyMySQL's private API is used only through
:mod:`poolkit.pool.pymysql_compat`.
"""

from __future__ import annotations

import typing as t

from flask import g

from ..config import DEFAULT_BIND
from ..extension import _G_KEY, _context_connection

context_connection = _context_connection


def bind_request_connection(conn: t.Any) -> None:
    """Make ``db`` (the default bind) resolve to *conn* for the rest of this app context."""
    setattr(g, _G_KEY, {DEFAULT_BIND: conn})
