"""Who holds a pool's connections: what :class:`~poolkit.errors.PoolTimeout` tells the user.

Every checkout through a :class:`~poolkit.pool.connection.Connection` records two references on
the pooled connection (:func:`record_holder`, a few tens of nanoseconds): where the borrow
began (the borrower's code object and instruction, already known to the handle) and a label
the Flask extension gives its handles (the request's endpoint, or the ``flask`` command). Only
a timeout turns them into text: the longest-held borrows, how long and where, and this
process's connection budget against the server's ``max_connections`` (as ``flask
pool-status`` adds it up: every pool of the process that connects to the same server).
"""

from __future__ import annotations

import time
import typing as t
import weakref

from .handles import _describe

if t.TYPE_CHECKING:
    from .pool import Pool

#: Every live pool of this process (the budget adds them up; fork replaces their engines).
POOLS: weakref.WeakSet[Pool] = weakref.WeakSet()

#: How many holders a timeout message names.
SHOWN = 3


def record_holder(con: t.Any, where: t.Any, label: str | None) -> None:
    """Note on the pooled connection *con* who borrows it now (called at every checkout)."""
    con.poolkit_where = where
    con.poolkit_label = label


def describe_holders(lent: t.Iterable[t.Any], now: float | None = None,
                     shown: int = SHOWN) -> str:
    """'held longest: 12.0 s by view 'slow' (app.py:12 in slow), …' for the longest borrows."""
    now = time.monotonic() if now is None else now
    held = sorted(lent, key=lambda con: con.poolkit_since)
    if not held:
        return ""
    parts = []
    for con in held[:shown]:
        label = getattr(con, "poolkit_label", None)
        where = getattr(con, "poolkit_where", None)
        place = _describe(where) if where is not None else "an unknown place"
        who = f"{label}, borrowed at {place}" if label else f"borrowed at {place}"
        parts.append(f"{now - con.poolkit_since:.1f} s by {who}")
    more = f" (+{len(held) - shown} more)" if len(held) > shown else ""
    return "held longest: " + "; ".join(parts) + more


def describe_budget(pool: t.Any, server_max: int | None,
                    pools: t.Iterable[Pool] | None = None) -> str:
    """'this process may open 20 connections to host:3306 (…) of its max_connections 151'."""
    url = pool.settings.url
    server = (url.host, url.port)
    candidates = list(POOLS) if pools is None else pools
    same = [p for p in candidates if not p.closed
            and (p.settings.url.host, p.settings.url.port) == server]
    if pool not in same:
        same.append(pool)
    total = sum(p.settings.max_connections for p in same)
    names = ", ".join(f"{p.name!r} {p.settings.max_connections}" for p in same)
    limit = f"its max_connections {server_max}" if server_max else "its max_connections (unknown)"
    line = (f"this process may open {total} connection(s) to {url.host}:{url.port} "
            f"(pools {names}) of {limit}")
    if server_max and total > server_max:
        line += ": over-committed before counting other processes"
    return line
