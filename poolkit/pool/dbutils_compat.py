"""Every use poolkit makes of DBUtils' private API, in one place.

DBUtils (tested: 3.2.x, see pyproject.toml) gives poolkit its ``SteadyDBConnection``: the
failover that reopens a broken connection and re-runs a statement where the ``isfatal`` hook
allows it, maxusage, and the ping hook. :class:`SteadyConnection` subclasses it so that the
pool sees every raw connection it stores and closes -- failovers inside one checkout included
-- and gives the rest of poolkit public names for what it needs (``raw``, ``closed``,
``usage``, ``count_use()``, ``in_transaction``, ``failures``, ``ping_check()``,
``reconnect()``, ``close_raw()``, ``detach()``): poolkit/pool/connection.py's uses of
``_con``, ``_usage``, ``_transaction``, ``_failures``, ``_create``/``_close``/``_store`` map
onto them one for one.

Each private member used is commented with what breaks if DBUtils changes it.
"""

from __future__ import annotations

import typing as t

from dbutils.steady_db import SteadyDBConnection


class Owner(t.Protocol):
    """What a steady connection reports to its engine (called without the engine's lock)."""

    def _raw_stored(self, con: SteadyConnection, replaced: bool) -> None: ...
    def _raw_closed(self, con: SteadyConnection) -> None: ...


class SteadyConnection(SteadyDBConnection):  # type: ignore[misc]
    """DBUtils' steady connection, reporting each raw connection it opens and closes."""

    raw: t.Any = None  # the driver's connection now (DBUtils' private _con)

    def __init__(self, owner: Owner, creator: t.Any, *, maxusage: int, failures: t.Any,
                 ping: t.Any, isfatal: t.Callable[[BaseException], bool]) -> None:
        self.poolkit_owner = owner  # the engine that issued it (a forked child has another)
        self.poolkit_since = 0.0
        # Advanced by the pool at every return: objects handed out in a borrow compare it.
        self.poolkit_gen = 0
        # A pipelined ROLLBACK's answer is still to be read (see PooledEngine.checkin).
        self.poolkit_pending = False
        # DBUtils' maxusage would reopen the connection inside a borrow (in its cursor's
        # execute): the pool applies the limit at return instead (poolkit counts the uses).
        del maxusage
        super().__init__(creator, None, None, failures, ping, True, isfatal)

    # private: DBUtils stores every new raw connection with _store (at creation and on each
    # failover, after _close) -- without it the pool's opened/closed counters drift.
    def _store(self, con: t.Any) -> None:
        replaced = self.raw is not None
        self.poolkit_pending = False
        super()._store(con)
        self.raw = con
        self.poolkit_owner._raw_stored(self, replaced)

    # private: DBUtils closes a raw connection with _close (failover, maxusage, __del__).
    def _close(self) -> None:
        if not self._closed:  # private: _closed is DBUtils' "raw connection closed" flag
            super()._close()
            self.poolkit_owner._raw_closed(self)

    @property
    def closed(self) -> bool:
        """True once the raw connection was closed (or detached)."""
        return bool(self._closed)

    @property
    def usage(self) -> int:
        """Statements run on the current raw connection (DBUtils' maxusage count)."""
        return int(self._usage)  # private: DBUtils counts uses in _usage

    def count_use(self) -> None:
        """Count one statement run on the raw connection directly (towards maxusage)."""
        self._usage += 1

    @property
    def in_transaction(self) -> bool:
        """True after ``begin()`` until commit/rollback: DBUtils then never fails over."""
        return bool(self._transaction)  # private: DBUtils' transaction flag

    @in_transaction.setter
    def in_transaction(self, value: bool) -> None:
        self._transaction = value

    @property
    def failures(self) -> tuple[type[BaseException], ...]:
        """The exception classes failover looks at."""
        return t.cast(tuple[type[BaseException], ...], self._failures)

    def ping_check(self) -> bool | None:
        """DBUtils' checkout ping: reopens a dead connection; False if that failed too."""
        return t.cast(bool | None, self._ping_check())  # private: DBUtils' ping-and-reopen

    def reconnect(self) -> t.Any:
        """Open a new raw connection in place of the current one (which is closed)."""
        fresh = self._create()  # private: opens through the creator (counted by the engine)
        self._close()
        self._store(fresh)
        return fresh

    def close_raw(self) -> None:
        """Close the raw connection for good (the steady connection is done)."""
        self._close()

    def detach(self) -> None:
        """Forget the raw connection without closing or touching it (after fork())."""
        self._closed = True
        self._transaction = False
