"""Host selection for multi-host URLs: roles, failover and replica lag.

``mysql://app:pw@h1:3306,h2:3306/shop?target=primary`` gives a pool several servers. Every new
connection goes through :meth:`HostSelector.connect`: it tries the hosts in order (shuffled with
``load_balance=random``; hosts last seen in the wanted role first, hosts that failed to connect
in the last few seconds last), asks each new connection ``SELECT @@GLOBAL.read_only`` once
(0: a primary; 1: a replica) and keeps it only if it has the wanted role. When none
qualifies, :class:`~poolkit.errors.NoHostAvailableError` names every host and why it was
passed over.

A role change (a switchover: the primary turns read-only, a replica is promoted) shows as
error 1290, 1836 or 1792 on a write; a Galera node that leaves the primary component answers
1047 (or 1180 on a commit). :meth:`HostSelector.note_read_only` -- called by the driver for
such an error -- reads the role back on that connection (the role query, one round trip) and
believes a change only when the server confirms it: ``read_only`` now 1 where a writable host
was wanted, or a Galera node no longer in an allowed state. A 1792 of the borrower's own
``START TRANSACTION READ ONLY`` or a 1290 of ``--secure-file-priv`` leaves the host alone.
A confirmed change marks that connection and every other one to the same host broken: the
engine discards them at their next checkout or return instead of handing them out again,
and the next connect finds the new primary (or a synced node). After a demotion that poolkit
saw, a connect that finds no primary waits for the promotion, at most ``failover_timeout``
seconds; a primary that is simply gone fails at once.

With ``max_replica_lag``, replica lag (``Seconds_Behind_Master``) is read at most once a second
per host; a lagging replica, or one that does not replicate, is skipped.

A Galera node (``wsrep_on``) gets new connections only in an allowed state
(:attr:`HostSelector.allowed_states`, default ``{"Synced"}``; add ``"Donor"`` to use
desynced donors) with ``wsrep_ready=ON``, whatever the target; the state comes with the role
query. :meth:`HostSelector.at_borrow` re-checks a borrowed connection's host at most once a
second per host: a Galera node's state; for a replica pool, that the host is still a replica
(a promoted one is left) and its lag under ``max_replica_lag``.

The facts it decides on -- :class:`HostState`, the role, Galera state, lag and
``pool-status`` queries -- are :mod:`poolkit.pool.hoststate`'s; this module chooses.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import typing as t

from ..errors import NoHostAvailableError
from ..url import DatabaseURL
from .hoststate import (
    NODE_STATE_CODES,
    READ_ONLY_CODES,
    REFUSAL_CODES,
    HostReader,
    HostState,
    Role,
    close_quietly,
    error_code,
    is_read_only_error,
    reason,
)

# The host facts and error codes live in hoststate; the drivers, retry and the tests import
# them from here too.
__all__ = ["DEFAULT_ALLOWED_STATES", "DOWN_HOST_GRACE", "LAG_CHECK_INTERVAL", "NODE_STATE_CODES",
           "READ_ONLY_CODES", "REFUSAL_CODES", "ROUTING_COUNTER_KEYS", "HostSelector",
           "HostState", "Role", "error_code", "is_read_only_error"]

logger = logging.getLogger("poolkit")

#: Galera states a new connection may use unless told otherwise (wsrep_local_state_comment).
DEFAULT_ALLOWED_STATES = frozenset({"Synced"})

#: Replica lag is read at most this often per host (seconds).
LAG_CHECK_INTERVAL = 1.0

#: A host whose connect failed less than this ago is tried after the others (seconds).
DOWN_HOST_GRACE = 5.0

#: Counters a routed pool adds to ``stats()`` (stable keys, present from the start).
ROUTING_COUNTER_KEYS = ("read_only_errors", "replica_fallbacks", "lag_skips",
                        "node_state_skips", "refusals_explained")


class HostSelector:
    """Opens connections for one pool on the URL's hosts (see the module docstring)."""

    def __init__(self, url: DatabaseURL, driver: t.Any, kwargs: dict[str, t.Any], *,
                 max_replica_lag: float | None = None, failover_timeout: float = 5.0,
                 allowed_states: t.Iterable[str] = DEFAULT_ALLOWED_STATES) -> None:
        self.url = url
        self.driver = driver
        self.kwargs = kwargs
        self.target = url.target
        self.routed = url.routed
        self.max_replica_lag = max_replica_lag
        self.failover_timeout = failover_timeout
        self.hosts = [HostState(host, port) for host, port in url.hosts]
        self.counters = dict.fromkeys(ROUTING_COUNTER_KEYS, 0)
        #: Galera states (``wsrep_local_state_comment`` up to its "/") new and borrowed
        #: connections may use: ``{"Synced"}`` by default, ``{"Synced", "Donor"}`` to use
        #: desynced donors too (Connector/J's galeraAllowedState).
        self.allowed_states = frozenset(
            (allowed_states,) if isinstance(allowed_states, str) else allowed_states)
        self.reader = HostReader()  # role, Galera state, lag and facts (poolkit.pool.hoststate)
        # at_borrow applies: a replica pool, or once a Galera node was seen (never unset).
        self._check_borrows = self.target == "replica"
        self._lock = threading.Lock()

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
        # Hosts last seen in another role after the others (not yet seen: maybe the wanted
        # role, so load_balance=random spreads over them from the start); hosts that failed
        # to connect moments ago last (a black-holed host costs connect_timeout per try), and
        # Galera nodes seen in a state they may not serve in (in URL order again after the
        # grace: a node that resynced is used again); a stable sort.
        now = time.monotonic()
        hosts.sort(key=lambda state: (now - state.failed < DOWN_HOST_GRACE,
                                      now - state.node_seen < DOWN_HOST_GRACE
                                      and self._node_refusal(state) is not None,
                                      self.target != "any" and state.role is not None
                                      and state.role != self.target))
        return hosts

    def _try(self, driver: t.Any, kwargs: dict[str, t.Any], session: t.Sequence[str],
             state: HostState, failures: list[str]) -> t.Any:
        try:
            raw = driver.connect({**kwargs, "host": state.host, "port": state.port}, session)
        except Exception as error:
            state.error = reason(error)
            state.failed = time.monotonic()
            failures.append(f"{state.address}: cannot connect ({state.error})")
            return None
        state.failed = float("-inf")
        try:
            why = self._unwanted(raw, state)
        except Exception as error:
            state.error = reason(error)
            failures.append(f"{state.address}: role check failed ({state.error})")
            why = "?"
        else:
            state.error = None
            if why:
                failures.append(f"{state.address}: {why}")
        if why:
            close_quietly(raw)
            return None
        self._adopt(raw, state)
        return raw

    def _unwanted(self, raw: t.Any, state: HostState) -> str | None:
        """Why *raw* (just opened on *state*) does not serve this pool, or None."""
        found = self.reader.role(raw)
        self._note_role(state, found)
        why = self._node_refusal(state)
        if why is not None:
            # A node that is not synced refuses queries (1047) or serves stale reads.
            self.count("node_state_skips")
            return why
        role = "replica" if found.read_only else "primary"
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

    def _note_role(self, state: HostState, found: Role) -> None:
        state.node_state, state.ready = found.node_state, found.ready
        state.node_seen = time.monotonic()
        if found.node_state is not None:
            self._check_borrows = True

    def _node_refusal(self, state: HostState) -> str | None:
        """Why *state*'s Galera node may not serve (its last known state), or None."""
        node_state = state.node_state
        if node_state is None:
            return None
        if state.ready and node_state.partition("/")[0] in self.allowed_states:
            return None
        allowed = ", ".join(sorted(self.allowed_states))
        return (f"a Galera node that is {node_state} (wsrep_ready="
                f"{'ON' if state.ready else 'OFF'}; allowed: {allowed})")

    def _adopt(self, raw: t.Any, state: HostState) -> None:
        raw.poolkit_host = state
        raw.poolkit_on_read_only = self.note_read_only
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
        """A statement on *raw* failed with a refusal (:data:`REFUSAL_CODES`): read the role
        back on *raw* and, if the host's role or Galera state really changed, retire its
        connections.

        The failed statement is not re-run (it is not retry-safe); the caller sees the error.
        """
        state: HostState | None = getattr(raw, "poolkit_host", None)
        if state is None or getattr(raw, "poolkit_rechecking", False):
            return  # not ours, or the read-back below failing in its turn
        code = error_code(error)
        if self.target == "replica" and code in READ_ONLY_CODES:
            return  # a write through a replica bind: refused, as it should be
        served = state.role != "replica" and self._node_refusal(state) is None
        why = self._changed(raw, state)
        if why is None:
            # The borrower's own READ ONLY transaction (1792), --secure-file-priv (1290) …:
            # the server still has the role this pool wants; nothing to retire.
            self.count("refusals_explained")
            logger.debug("poolkit: %s refused a statement (%s) but still serves",
                         state.address, reason(error))
            return
        self.count("read_only_errors")
        if served:  # the change itself (later refusals of the same change: retired already)
            logger.warning("poolkit: %s %s (%s): retiring its %d connection(s)", state.address,
                           why, reason(error), len(state.connections))
        self.retire(state)

    def _changed(self, raw: t.Any, state: HostState) -> str | None:
        """Why *state* no longer serves this pool, read back on *raw* (None: it still does)."""
        raw.poolkit_rechecking = True
        try:
            found = self.reader.role(raw)
        except Exception as error:
            return f"no longer answers the role query ({reason(error)})"
        finally:
            raw.poolkit_rechecking = False
        self._note_role(state, found)
        why = self._node_refusal(state)
        if why is not None:
            return f"is {why}"
        if found.read_only and self.target != "replica":
            if state.role == "primary":
                state.demoted = time.monotonic()  # a switchover: new connects wait for one
            state.role = "replica"
            return "turned read-only"
        return None

    # -- at borrow ------------------------------------------------------------------------
    @property
    def checks_at_borrow(self) -> bool:
        """True when :meth:`at_borrow` may turn a connection down: a replica pool (a promoted
        replica, the lag limit) or a pool that has seen a Galera node."""
        return self._check_borrows

    def at_borrow(self, raw: t.Any) -> bool:
        """False (and the host's connections retired) when *raw*'s host may not serve now.

        Re-reads the host's Galera state, and a replica's lag under ``max_replica_lag``, on
        *raw* at most once a second per host; in between, one clock read and the last
        verdict.
        """
        state: HostState | None = getattr(raw, "poolkit_host", None)
        if state is None:
            return True
        if (time.monotonic() - state.checked >= LAG_CHECK_INTERVAL
                and state.checking.acquire(blocking=False)):
            try:
                state.refused = self._borrow_verdict(raw, state)
            finally:
                state.checked = time.monotonic()
                state.checking.release()
        if state.refused is None:
            return True
        self.retire(state)
        return False

    def _borrow_verdict(self, raw: t.Any, state: HostState) -> str | None:
        replica = self.target == "replica"
        if state.node_state is not None or replica:
            try:
                found = self.reader.role(raw)
            except Exception as error:
                return f"role query failed ({reason(error)})"
            self._note_role(state, found)
            why = self._node_refusal(state)
            if why is not None:
                self.count("node_state_skips")
                return why
            if replica and not found.read_only:
                state.role = "primary"
                logger.warning("poolkit: %s is writable now (promoted): retiring the replica "
                               "pool's %d connection(s) to it", state.address,
                               len(state.connections))
                return "writable (promoted: the primary, not a replica)"
        if replica and self.max_replica_lag is not None:
            state.lag_checked = float("-inf")  # read now, on this connection
            if not self._lag_ok(state, raw):
                self.count("lag_skips")
                return self._lag_text(state)
        return None

    def guard(self, checkout: t.Callable[[], t.Any],
              checkin: t.Callable[[t.Any], None]) -> t.Callable[[], t.Any]:
        """*checkout* with :meth:`at_borrow` applied: a turned-down connection is given back
        (and discarded: it is marked broken) and another one taken, a bounded number of times.

        For a pool whose checks may apply; otherwise *checkout* itself (no cost).
        """
        if not self.routed:
            return checkout
        tries = 2 * len(self.hosts) + 2

        def checked_checkout() -> t.Any:
            for _ in range(tries):
                con = checkout()
                if not self._check_borrows:
                    return con
                try:
                    if self.at_borrow(con.raw):
                        return con
                except BaseException:
                    checkin(con)
                    raise
                checkin(con)
            reasons = "; ".join(f"{state.address}: {state.refused}" for state in self.hosts
                                if state.refused)
            raise NoHostAvailableError(self._no_host_message([reasons or "turned down"]))

        return checked_checkout

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
                state.lag, state.lag_error = self.reader.lag(raw)
            finally:
                if own:
                    close_quietly(raw)
        except Exception as error:
            state.lag, state.lag_error = None, reason(error)
        finally:
            state.lag_checked = time.monotonic()
            state.probing.release()

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
        """Ask every host now (one short connection each): role, lag, Galera state, facts.

        For ``flask pool-status``: a host that does not answer gets ``error``; one that
        answers but whose lag cannot be read (no ``SLAVE MONITOR``: 1227) keeps its role and
        facts, with the reason in ``lag_error``.
        """
        report = []
        for state in self.hosts:
            try:
                raw = self.driver.connect({**self.kwargs, "host": state.host,
                                           "port": state.port}, ())
            except Exception as error:
                state.error = reason(error)
                report.append(state.describe())
                continue
            try:
                report.append(self.reader.inspect(raw, state, self._note_role))
            except Exception as error:
                entry = state.describe()
                entry["error"] = reason(error)
                report.append(entry)
            finally:
                close_quietly(raw)
        return report
