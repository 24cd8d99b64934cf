"""What a pool knows about one host, and how it is read from the server.

:class:`HostState` is one host of a multi-host URL as last seen: role, replica lag, Galera
node state, last error, its open connections. :class:`HostReader` reads those facts on a raw
connection: the role and a Galera node's state in one round trip (:meth:`HostReader.role`),
the replica lag (:meth:`HostReader.lag`: ``SHOW REPLICA STATUS``, or ``SHOW SLAVE STATUS`` on
older servers) and, for ``flask pool-status``, everything at once (:meth:`HostReader.inspect`).
Each reader remembers which SQL form its servers know, so the fallbacks cost one error per
pool, not one per query. Choosing a host from these facts is :mod:`poolkit.pool.hosts`' job.
"""

from __future__ import annotations

import contextlib
import threading
import time
import typing as t
import weakref
from dataclasses import dataclass, field

from ..url import format_host, mask_url

#: Server errors that mean "this server does not take writes (any more)".
READ_ONLY_CODES = frozenset({
    1290,  # ER_OPTION_PREVENTS_STATEMENT: running with the --read-only option
    1792,  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    1836,  # ER_READ_ONLY_MODE
})

#: Errors of a Galera node that is not (or no longer) in the primary component.
NODE_STATE_CODES = frozenset({
    1047,  # ER_UNKNOWN_COM_ERROR: WSREP has not yet prepared node for application use
    1180,  # ER_ERROR_DURING_COMMIT: … (provider status: Not connected to Primary Component)
})

#: Errors after which the host's role or state is read back (see HostSelector.note_read_only).
REFUSAL_CODES = READ_ONLY_CODES | NODE_STATE_CODES


def error_code(error: BaseException) -> int | None:
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_read_only_error(error: BaseException) -> bool:
    """True when *error* may mean the host changed role or state: the drivers then call
    ``poolkit_on_read_only``, which reads the role back before believing it."""
    return error_code(error) in REFUSAL_CODES


def reason(error: BaseException) -> str:
    """*error* in one line for a host's ``error`` field and the logs (passwords masked)."""
    text = str(error.args[1]) if len(getattr(error, "args", ())) > 1 else str(error)
    code = error_code(error)
    return mask_url(f"{code} {text}" if code is not None else f"{type(error).__name__}: {text}")


def close_quietly(raw: t.Any) -> None:
    with contextlib.suppress(Exception):  # a server that is gone: nothing to say goodbye to
        raw.close()


@dataclass
class HostState:
    """What the selector knows about one host of the URL."""

    host: str
    port: int
    role: str | None = None  # "primary" / "replica"; None until a connect has answered
    error: str | None = None  # why the last connect or check failed
    lag: float | None = None  # Seconds_Behind_Master; None: unknown or not replicating
    lag_error: str | None = None
    lag_checked: float = float("-inf")
    demoted: float = float("-inf")  # when this host was seen turning from primary to read-only
    failed: float = float("-inf")  # when a connect to this host last failed
    node_state: str | None = None  # a Galera node's wsrep_local_state_comment; None: not Galera
    ready: bool = True  # a Galera node's wsrep_ready
    node_seen: float = float("-inf")  # when node_state was read
    checked: float = float("-inf")  # when at_borrow last read this host's state
    refused: str | None = None  # why at_borrow's last check turned this host down, or None
    connections: weakref.WeakSet[t.Any] = field(default_factory=weakref.WeakSet)
    probing: threading.Lock = field(default_factory=threading.Lock)  # one lag reader
    checking: threading.Lock = field(default_factory=threading.Lock)  # one at_borrow check

    @property
    def address(self) -> str:
        return format_host(self.host, self.port)

    def describe(self) -> dict[str, t.Any]:
        """Plain values for ``flask pool-status``."""
        return {"host": self.address, "role": self.role, "lag": self.lag,
                "lag_error": self.lag_error, "error": self.error,
                "connections": len(self.connections), "node_state": self.node_state,
                "ready": self.ready if self.node_state is not None else None}


class Role(t.NamedTuple):
    """What the role query read: ``read_only``, and a Galera node's state (None: not Galera)."""

    read_only: bool
    node_state: str | None = None
    ready: bool = True


# The role in one round trip. A Galera node's state is a status variable, read through a
# subquery that only runs on a node with wsrep_on (information_schema stays readable on a
# node cut off from the cluster); MySQL 8 has it in performance_schema only; MySQL without
# Galera has no @@wsrep_on at all (1193): read_only alone.
_STATE_OF = ("(SELECT GROUP_CONCAT(VARIABLE_VALUE ORDER BY VARIABLE_NAME SEPARATOR ',') FROM {} "
             "WHERE VARIABLE_NAME IN ('WSREP_LOCAL_STATE_COMMENT', 'WSREP_READY'))")
ROLE_SQL = (
    "SELECT @@GLOBAL.read_only, IF(@@GLOBAL.wsrep_on, "
    + _STATE_OF.format("information_schema.GLOBAL_STATUS") + ", NULL)",
    "SELECT @@GLOBAL.read_only, IF(@@GLOBAL.wsrep_on, "
    + _STATE_OF.format("performance_schema.global_status") + ", NULL)",
    "SELECT @@GLOBAL.read_only, NULL",
)
_NO_SUCH_THING = frozenset({1109, 1146, 1193})  # unknown table / table missing / variable

# SHOW REPLICA STATUS: MariaDB >= 10.5, MySQL >= 8.0.22; else the old name (1064 before).
LAG_SQL = ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS")

_FACTS_SQL = "SELECT VERSION(), @@GLOBAL.max_connections"


class HostReader:
    """Reads role, Galera state, replica lag and facts on raw connections of one pool."""

    def __init__(self) -> None:
        self._role_sql = list(ROLE_SQL)  # the forms this pool's servers know (see role)
        self._status_sql = list(LAG_SQL)
        self._lock = threading.Lock()

    def _execute_first(self, cursor: t.Any, forms: list[str], unknown: t.Container[int | None]
                       ) -> None:
        """Run the first of *forms* the server knows, dropping those it answered *unknown* to
        (the last form is never dropped: its error is the caller's)."""
        while True:
            sql = forms[0]
            try:
                cursor.execute(sql)
                return
            except Exception as error:
                if error_code(error) not in unknown or len(forms) < 2:
                    raise
                with self._lock:
                    if forms[0] == sql:  # another thread may have done it
                        forms.pop(0)

    def role(self, raw: t.Any) -> Role:
        """``read_only`` and a Galera node's state, in one round trip."""
        cursor = raw.cursor()
        try:
            self._execute_first(cursor, self._role_sql, _NO_SUCH_THING)
            read_only, galera = cursor.fetchone()
        finally:
            cursor.close()
        if galera is None:
            return Role(bool(int(read_only)))
        if isinstance(galera, bytes):
            galera = galera.decode()
        node_state, _, ready = str(galera).rpartition(",")
        return Role(bool(int(read_only)), node_state or "?", ready.upper() == "ON")

    def lag(self, raw: t.Any) -> tuple[float | None, str | None]:
        """``Seconds_Behind_Master`` (None when unknown) and why it is unknown (or None)."""
        cursor = raw.cursor()
        try:
            self._execute_first(cursor, self._status_sql, (1064,))
            row = cursor.fetchone()
            if not row:
                return None, "not a replica (SHOW REPLICA STATUS is empty)"
            names = [d[0] for d in cursor.description]
            values = dict(zip(names, row, strict=False))
        finally:
            cursor.close()
        lag = values.get("Seconds_Behind_Master", values.get("Seconds_Behind_Source"))
        if lag is None:
            return None, "replication is stopped (Seconds_Behind_Master is NULL)"
        return float(lag), None

    def inspect(self, raw: t.Any, state: HostState,
                note: t.Callable[[HostState, Role], None]) -> dict[str, t.Any]:
        """*state*'s role, lag, Galera state and facts, read now on *raw* (*note* is given
        the role as soon as it is read).

        A replica whose lag cannot be read (no ``SLAVE MONITOR``: 1227) keeps its role and
        facts, with the reason in ``lag_error``.
        """
        found = self.role(raw)
        note(state, found)
        cursor = raw.cursor()
        try:
            cursor.execute(_FACTS_SQL)
            version, max_connections = cursor.fetchone()
            # SHOW, not information_schema.GLOBAL_STATUS: MySQL 8 has no such table.
            cursor.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
            row = cursor.fetchone()
        finally:
            cursor.close()
        state.role = "replica" if found.read_only else "primary"
        state.error = None
        if found.read_only:
            try:
                state.lag, state.lag_error = self.lag(raw)
            except Exception as error:  # 1227: the user may not read the replica status
                state.lag, state.lag_error = None, reason(error)
            state.lag_checked = time.monotonic()
        entry = state.describe()
        entry.update(version=str(version), max_connections=int(max_connections),
                     threads_connected=int(row[1] if row else 0))
        return entry
