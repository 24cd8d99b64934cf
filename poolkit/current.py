"""The connection behind ``poolkit.db`` in the current app context, as an object of its own."""

from __future__ import annotations

import typing as t

from .pool.connection import Connection


def current_connection() -> Connection:
    """The :class:`~poolkit.Connection` that ``db`` stands for in this app context.

    ``db`` is a proxy: ``db is conn`` is never true. Tests that check which handle a view got
    (the same one twice in a request, a new one in the next) compare this object; its ``raw``
    is the driver's connection. It checks out nothing until it is used, like ``db``.
    """
    from .extension import db

    return t.cast(Connection, db._get_current_object())
