"""Host selection for multi-host URLs: roles, failover and replica lag.

``mysql://app:pw@h1:3306,h2:3306/shop?target=primary`` gives a pool several servers. Every new
connection goes through :meth:`HostSelector.connect`: it tries the hosts in order (shuffled with
``load_balance=random``; hosts last seen in the wanted role first, hosts that failed to connect
in the last few seconds last), asks each new connection ``SELECT @@GLOBAL.read_only`` once
(0: a primary; 1: a replica) and keeps it only if it has the wanted role. When none
qualifies, :class:`~poolkit.errors.NoHostAvailableError` names every host and why it was
passed over.

A role change (a switchover: the primary turns read-only, a replica is promoted) shows as
error 1290, 1836 or 1792 on a write. :meth:`HostSelector.note_read_only` -- called by the
driver for such an error -- marks that connection and every other one to the same host
broken: the engine discards them at their next checkout or return instead of handing them out
again, and the next connect finds the new primary. After a demotion that poolkit saw, a connect
that finds no primary waits for the promotion, at most ``failover_timeout`` seconds; a primary
that is simply gone fails at once.

With ``max_replica_lag``, replica lag (``Seconds_Behind_Master``) is read at most once a second
per host; a lagging replica, or one that does not replicate, is skipped. A Galera node
(``wsrep_on``) that is not ready (``wsrep_ready`` is not ON) is skipped whatever the target.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import typing as t
import weakref
from dataclasses import dataclass, field

from ..errors import NoHostAvailableError
from ..url import DatabaseURL, format_host, mask_url

logger = logging.getLogger("poolkit")

#: Server errors that mean "this server does not take writes (any more)".
READ_ONLY_CODES = frozenset({
    1290,  # ER_OPTION_PREVENTS_STATEMENT: running with the --read-only option
    1792,  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    1836,  # ER_READ_ONLY_MODE
})

#: Replica lag is read at most this often per host (seconds).
LAG_CHECK_INTERVAL = 1.0

#: A host whose connect failed less than this ago is tried after the others (seconds).
DOWN_HOST_GRACE = 5.0

#: Counters a routed pool adds to ``stats()`` (stable keys, present from the start).
ROUTING_COUNTER_KEYS = ("read_only_errors", "replica_fallbacks", "lag_skips")


def error_code(error: BaseException) -> int | None:
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_read_only_error(error: BaseException) -> bool:
    """True when *error* says the server refuses writes (a demoted primary, a replica)."""
    return error_code(error) in READ_ONLY_CODES


def _reason(error: BaseException) -> str:
    text = str(error.args[1]) if len(getattr(error, "args", ())) > 1 else str(error)
    code = error_code(error)
    return mask_url(f"{code} {text}" if code is not None else f"{type(error).__name__}: {text}")


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
    connections: weakref.WeakSet[t.Any] = field(default_factory=weakref.WeakSet)
    probing: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return format_host(self.host, self.port)

    def describe(self) -> dict[str, t.Any]:
        """Plain values for ``flask pool-status``."""
        return {"host": self.address, "role": self.role, "lag": self.lag,
                "lag_error": self.lag_error, "error": self.error,
                "connections": len(self.connections)}


class HostSelector:
    """Opens connections for one pool on the URL's hosts (see the module docstring)."""

    def __init__(self, url: DatabaseURL, driver: t.Any, kwargs: dict[str, t.Any], *,
                 max_replica_lag: float | None = None, failover_timeout: float = 5.0) -> None:
        self.url = url
        self.driver = driver
        self.kwargs = kwargs
        self.target = url.target
        self.routed = url.routed
        self.max_replica_lag = max_replica_lag
        self.failover_timeout = failover_timeout
        self.hosts = [HostState(host, port) for host, port in url.hosts]
        self.counters = dict.fromkeys(ROUTING_COUNTER_KEYS, 0)
        self._status_sql: list[str] = ["SHOW REPLICA STATUS", "SHOW SLAVE STATUS"]
        self._lock = threading.Lock()
        self._galera_known = True  # the server has @@wsrep_on (MariaDB); False after a 1193

    # -- connecting -----------------------------------------------------------------------
    def connect(self, session: t.Sequence[str] = ()) -> t.Any:
        """A new raw connection to a host of the wanted role (``driver.connect`` does the rest)."""
        driver, kwargs = self.driver, self.kwargs
        if not self.routed:
            raw = driver.connect(kwargs, session)
            self._adopt(raw, self.hosts[0])
            return raw
        deadline: float | None = None
        pause = 0.05
        while True:
            failures: list[str] = []
            for state in self._order():
                raw = self._try(driver, kwargs, session, state, failures)
                if raw is not None:
                    return raw
            now = time.monotonic()
            if deadline is None:
                demoted = max(state.demoted for state in self.hosts)
                deadline = demoted + self.failover_timeout if self.target == "primary" else now
            if now >= deadline:
                raise NoHostAvailableError(self._no_host_message(failures))
            # A primary turned read-only moments ago: a switchover is under way. Wait (bounded)
            # for the promotion instead of failing every request that arrives meanwhile.
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, 0.25)

    def _order(self) -> list[HostState]:
        hosts = list(self.hosts)
        if self.url.load_balance == "random":
            random.shuffle(hosts)
        # Hosts last seen in the wanted role first, hosts that failed to connect moments ago
        # last (a black-holed host costs connect_timeout per try); a stable sort.
        now = time.monotonic()
        hosts.sort(key=lambda state: (now - state.failed < DOWN_HOST_GRACE,
                                      self.target != "any" and state.role != self.target))
        return hosts

    def _try(self, driver: t.Any, kwargs: dict[str, t.Any], session: t.Sequence[str],
             state: HostState, failures: list[str]) -> t.Any:
        try:
            raw = driver.connect({**kwargs, "host": state.host, "port": state.port}, session)
        except Exception as error:
            state.error = _reason(error)
            state.failed = time.monotonic()
            failures.append(f"{state.address}: cannot connect ({state.error})")
            return None
        state.failed = float("-inf")
        try:
            why = self._unwanted(raw, state)
        except Exception as error:
            state.error = _reason(error)
            failures.append(f"{state.address}: role check failed ({state.error})")
            why = "?"
        else:
            state.error = None
            if why:
                failures.append(f"{state.address}: {why}")
        if why:
            _close(raw)
            return None
        self._adopt(raw, state)
        return raw

    def _unwanted(self, raw: t.Any, state: HostState) -> str | None:
        """Why *raw* (just opened on *state*) does not serve this pool, or None."""
        read_only, galera = self._read_role(raw)
        if galera and _galera_not_ready(raw):
            # A Galera node that is not synced refuses queries or serves stale reads.
            return "a Galera node that is not ready (wsrep_ready=OFF)"
        role = "replica" if read_only else "primary"
        if state.role == "primary" and role == "replica":
            state.demoted = time.monotonic()
            logger.warning("poolkit: %s turned read-only (it was the primary)", state.address)
        state.role = role
        if self.target == "primary" and role != "primary":
            return "read-only (a replica, not the primary)"
        if self.target == "replica":
            if role != "replica":
                return "writable (the primary, not a replica)"
            if self.max_replica_lag is not None and not self._lag_ok(state, raw):
                self.count("lag_skips")
                return self._lag_text(state)
        return None

    def _read_role(self, raw: t.Any) -> tuple[bool, bool]:
        """``(read_only, wsrep_on)`` in one round trip (MySQL has no wsrep_on: read_only only)."""
        if self._galera_known:
            cursor = raw.cursor()
            try:
                cursor.execute("SELECT @@GLOBAL.read_only, @@GLOBAL.wsrep_on")
                read_only, wsrep_on = cursor.fetchone()
                return bool(read_only), bool(wsrep_on)
            except Exception as error:
                if error_code(error) != 1193:  # unknown system variable
                    raise
                self._galera_known = False
            finally:
                cursor.close()
        return bool(_scalar(raw, "SELECT @@GLOBAL.read_only")), False

    def _adopt(self, raw: t.Any, state: HostState) -> None:
        raw.poolkit_host = state
        raw.poolkit_on_read_only = self.note_read_only if self.target != "replica" else None
        with self._lock:  # a WeakSet must not grow while retire() walks it
            state.connections.add(raw)

    def _no_host_message(self, failures: list[str]) -> str:
        wanted = {"primary": "a primary (read_only=0)", "replica": "a replica (read_only=1)",
                  "any": "a server"}[self.target]
        return (f"no host of {self.url.masked()} is {wanted}: " + "; ".join(failures)
                + ". Check the hosts, or the failover of your database servers")

    def count(self, key: str) -> int:
        """Add one to counter *key* (threads race here: ``+=`` on a dict item is not atomic)."""
        with self._lock:
            self.counters[key] += 1
            return self.counters[key]

    # -- role changes ---------------------------------------------------------------------
    def note_read_only(self, raw: t.Any, error: BaseException) -> None:
        """A statement on *raw* failed with a read-only error: retire its host's connections.

        The failed statement is not re-run (it is not retry-safe); the caller sees the error.
        """
        state: HostState | None = getattr(raw, "poolkit_host", None)
        self.count("read_only_errors")
        if state is None:
            return
        if state.role == "primary":
            state.demoted = time.monotonic()  # a switchover: new connections wait for a primary
        if state.role != "replica":
            logger.warning("poolkit: %s refuses writes (%s): retiring its %d connection(s)",
                           state.address, _reason(error), len(state.connections))
        state.role = "replica"
        self.retire(state)

    def retire(self, state: HostState) -> None:
        """Mark every connection to *state* broken: discarded at its next checkout or return."""
        with self._lock:
            connections = list(state.connections)
        for raw in connections:
            raw.poolkit_broken = True
            raw.poolkit_expires = 0.0  # the engine's checkout fast path looks at this one

    # -- replica lag ----------------------------------------------------------------------
    def _lag_ok(self, state: HostState, raw: t.Any = None) -> bool:
        limit = self.max_replica_lag
        if limit is None:
            return True
        self.refresh_lag(state, raw)
        return state.lag is not None and state.lag <= limit

    def _lag_text(self, state: HostState) -> str:
        if state.lag is None:
            return f"replica lag unknown ({state.lag_error or 'not replicating'})"
        return f"replica {state.lag:g} s behind (POOLKIT_MAX_REPLICA_LAG={self.max_replica_lag:g})"

    def refresh_lag(self, state: HostState, raw: t.Any = None) -> None:
        """Read *state*'s lag if the last reading is older than a second (one thread at a time).

        On *raw* when given (a connection to that host), else on a short probe connection.
        """
        if time.monotonic() - state.lag_checked < LAG_CHECK_INTERVAL:
            return
        if not state.probing.acquire(blocking=False):
            return  # another thread is reading it; use the last value
        try:
            own = raw is None
            if own:
                raw = self.driver.connect({**self.kwargs, "host": state.host,
                                           "port": state.port}, ())
            try:
                state.lag, state.lag_error = self._read_lag(raw)
            finally:
                if own:
                    _close(raw)
        except Exception as error:
            state.lag, state.lag_error = None, _reason(error)
        finally:
            state.lag_checked = time.monotonic()
            state.probing.release()

    def _read_lag(self, raw: t.Any) -> tuple[float | None, str | None]:
        cursor = raw.cursor()
        try:
            while True:
                sql = self._status_sql[0]
                try:
                    cursor.execute(sql)
                    break
                except Exception as error:
                    # SHOW REPLICA STATUS: MariaDB >= 10.5, MySQL >= 8.0.22; else the old name.
                    if error_code(error) != 1064 or len(self._status_sql) < 2:
                        raise
                    with self._lock:
                        if self._status_sql[0] == sql:  # another thread may have done it
                            self._status_sql.pop(0)
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

    def replicas_in_bounds(self) -> list[HostState]:
        """The replicas a read may use now (lag read at most once a second per host)."""
        ready = []
        for state in self.hosts:
            if state.role == "primary":
                continue
            if self.max_replica_lag is not None:
                self.refresh_lag(state)
                if state.lag is None or state.lag > self.max_replica_lag:
                    if state.connections:
                        self.retire(state)
                    continue
            ready.append(state)
        return ready

    # -- state ----------------------------------------------------------------------------
    def describe(self) -> list[dict[str, t.Any]]:
        """Each host's role, lag, last error and open connections, as last seen (no I/O)."""
        return [state.describe() for state in self.hosts]

    def inspect(self) -> list[dict[str, t.Any]]:
        """Ask every host now (one short connection each): role, lag and server facts.

        For ``flask pool-status``; an unreachable host gets ``error`` instead of facts.
        """
        report = []
        for state in self.hosts:
            try:
                raw = self.driver.connect({**self.kwargs, "host": state.host,
                                           "port": state.port}, ())
            except Exception as error:
                state.error = _reason(error)
                report.append(state.describe())
                continue
            try:
                cursor = raw.cursor()
                cursor.execute(_FACTS_SQL)
                version, max_connections, read_only = cursor.fetchone()
                # SHOW, not information_schema.GLOBAL_STATUS: MySQL 8 has no such table.
                cursor.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                row = cursor.fetchone()
                threads = row[1] if row else 0
                cursor.close()
                state.role = "replica" if read_only else "primary"
                state.error = None
                if read_only:
                    state.lag, state.lag_error = self._read_lag(raw)
                    state.lag_checked = time.monotonic()
                entry = state.describe()
                entry.update(version=str(version), max_connections=int(max_connections),
                             threads_connected=int(threads or 0))
            except Exception as error:
                entry = state.describe()
                entry["error"] = _reason(error)
            finally:
                _close(raw)
            report.append(entry)
        return report


_FACTS_SQL = "SELECT VERSION(), @@GLOBAL.max_connections, @@GLOBAL.read_only"


def _galera_not_ready(raw: t.Any) -> bool:
    cursor = raw.cursor()
    try:
        cursor.execute("SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
        row = cursor.fetchone()
    finally:
        cursor.close()
    return bool(row) and str(row[1]).upper() != "ON"


def _scalar(raw: t.Any, sql: str) -> t.Any:
    cursor = raw.cursor()
    try:
        cursor.execute(sql)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return row[0] if row else None


def _close(raw: t.Any) -> None:
    with contextlib.suppress(Exception):  # a server that is gone: nothing to say goodbye to
        raw.close()
