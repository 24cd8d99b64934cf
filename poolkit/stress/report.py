"""The figures of a ``flask pool-stress`` run: raw load, percentiles, error groups, verdicts.

Nothing here prints: :class:`StressReport.to_dict` gives the stable-key JSON and
:meth:`StressReport.verdicts` one sentence per claim of the lesson; the command formats both.
Times in the figures are milliseconds (``*_ms``) or seconds (``seconds``), as the keys say.
"""

from __future__ import annotations

import math
import re
import typing as t
from array import array
from collections import Counter
from dataclasses import dataclass, field

#: Version of the JSON layout; bumped when a key changes meaning or disappears.
SCHEMA = 2  # 2: latency_ms counts successful requests only; failed_latency_ms, wait

#: Strategies in the order they are run and reported.
STRATEGIES = ("global", "per-view", "pooled")

_MAX_GROUPS = 50
_DIGITS = re.compile(r"\d+")


class WrongRow(Exception):
    """A request got another request's row (``lost=False``) or no row at all (``lost=True``)."""

    def __init__(self, message: str, *, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


def error_key(error: BaseException) -> str:
    """``Type: message`` with the numbers that vary per request folded to ``#``.

    A driver error keeps its error code: ``OperationalError 1040: Too many connections``.
    """
    name = type(error).__name__
    args: tuple[t.Any, ...] = tuple(getattr(error, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        message = _DIGITS.sub("#", str(args[1]))
        return f"{name} {args[0]}: {message}"[:160]
    text = _DIGITS.sub("#", str(error))
    return f"{name}: {text}"[:160] if text else name


def percentile(ordered: t.Sequence[float], q: float) -> float:
    """The *q*-th percentile (0–100) of already sorted values, interpolating between ranks.

    Same as numpy's default (``linear``): p50 of ``[1, 2, 3, 4]`` is 2.5; ``nan`` when empty.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, not {q!r}")
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_ms(latencies: t.Iterable[float]) -> dict[str, float | None]:
    """avg, p50, p95, p99 and max in milliseconds of latencies given in seconds."""
    ordered = sorted(latencies)
    if not ordered:
        return {"avg": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "avg": round(sum(ordered) / len(ordered) * 1000, 3),
        "p50": round(percentile(ordered, 50) * 1000, 3),
        "p95": round(percentile(ordered, 95) * 1000, 3),
        "p99": round(percentile(ordered, 99) * 1000, 3),
        "max": round(ordered[-1] * 1000, 3),
    }


@dataclass
class Load:
    """What the load threads of one strategy saw; loads of several processes merge."""

    requests: int = 0
    wrong_rows: int = 0
    lost_rows: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))  # successful requests
    failed_latencies: array[float] = field(default_factory=lambda: array("d"))
    elapsed: float = 0.0
    connections_opened: int = 0
    connect_time_total: float = 0.0
    connect_cpu_total: float | None = None  # CPU seconds in connect, when measured
    hung_threads: int = 0
    checkouts: int | None = None  # the pool's figures (pooled only)
    wait_time_total: float = 0.0
    timeouts: int = 0

    @property
    def error_count(self) -> int:
        """Requests that ended in an exception or an HTTP error status."""
        return sum(self.errors.values())

    def merge(self, other: Load) -> None:
        """Add *other* (another process's load of the same strategy) to this one."""
        self.requests += other.requests
        self.wrong_rows += other.wrong_rows
        self.lost_rows += other.lost_rows
        self.errors.update(other.errors)
        self.latencies.extend(other.latencies)
        self.failed_latencies.extend(other.failed_latencies)
        if other.checkouts is not None:
            self.checkouts = (self.checkouts or 0) + other.checkouts
            self.wait_time_total += other.wait_time_total
            self.timeouts += other.timeouts
        self.elapsed = max(self.elapsed, other.elapsed)
        self.connections_opened += other.connections_opened
        self.connect_time_total += other.connect_time_total
        if other.connect_cpu_total is not None:
            self.connect_cpu_total = (self.connect_cpu_total or 0.0) + other.connect_cpu_total
        self.hung_threads += other.hung_threads


@dataclass(frozen=True)
class ServerFigures:
    """What the server's status counters said about one strategy's run."""

    connections: int  # delta of SHOW GLOBAL STATUS 'Connections'
    peak_threads_connected: int
    threads_connected_before: int


@dataclass(frozen=True)
class StrategyResult:
    """The figures of one strategy, ready for the table, the verdicts and the JSON."""

    strategy: str
    load: Load
    server: ServerFigures
    pool_size: int | None = None

    @property
    def req_per_s(self) -> float:
        """Requests (of any outcome) per second of the measured window."""
        return self.load.requests / self.load.elapsed if self.load.elapsed > 0 else 0.0

    @property
    def ok(self) -> int:
        """Requests that succeeded (no error, no wrong or lost row)."""
        load = self.load
        return load.requests - load.error_count - load.wrong_rows - load.lost_rows

    @property
    def ok_per_s(self) -> float:
        """Successful requests per second."""
        return self.ok / self.load.elapsed if self.load.elapsed > 0 else 0.0

    @property
    def wait_mean_ms(self) -> float | None:
        """Mean wait for a pooled connection, in ms (None when no pool was used)."""
        load = self.load
        if not load.checkouts:
            return None
        return load.wait_time_total / load.checkouts * 1000

    @property
    def connect_time_mean_ms(self) -> float | None:
        """Mean time of one connect, in ms (None when the run opened none)."""
        load = self.load
        if not load.connections_opened:
            return None
        return load.connect_time_total / load.connections_opened * 1000

    @property
    def connect_cpu_mean_ms(self) -> float | None:
        """Mean CPU time (this process) of one connect, in ms, when it was measured."""
        load = self.load
        if not load.connections_opened or load.connect_cpu_total is None:
            return None
        return load.connect_cpu_total / load.connections_opened * 1000

    def error_groups(self) -> list[tuple[str, int]]:
        """Errors by type and message, most frequent first (at most 50 groups)."""
        groups = self.load.errors.most_common()
        if len(groups) > _MAX_GROUPS:
            rest = sum(count for _, count in groups[_MAX_GROUPS - 1:])
            groups = [*groups[:_MAX_GROUPS - 1], ("(other errors)", rest)]
        return groups

    def to_dict(self) -> dict[str, t.Any]:
        """The stable-key JSON object of this strategy."""
        load = self.load
        mean, cpu, wait = self.connect_time_mean_ms, self.connect_cpu_mean_ms, self.wait_mean_ms
        return {
            "requests": load.requests,
            "seconds": round(load.elapsed, 3),
            "req_per_s": round(self.req_per_s, 1),
            "ok_per_s": round(self.ok_per_s, 1),
            "latency_ms": latency_ms(load.latencies),
            "failed_latency_ms": latency_ms(load.failed_latencies),
            "ok": self.ok,
            "errors": load.error_count,
            "wrong_rows": load.wrong_rows,
            "lost_rows": load.lost_rows,
            "server_connections": self.server.connections,
            "peak_threads_connected": self.server.peak_threads_connected,
            "threads_connected_before": self.server.threads_connected_before,
            "connections_opened": load.connections_opened,
            "connect_time_mean_ms": None if mean is None else round(mean, 3),
            "connect_cpu_mean_ms": None if cpu is None else round(cpu, 3),
            "pool_size": self.pool_size,
            "checkouts": load.checkouts,
            "wait_mean_ms": None if wait is None else round(wait, 3),
            "timeouts": load.timeouts if load.checkouts is not None else None,
            "hung_threads": load.hung_threads,
            "error_groups": [{"error": key, "count": count}
                             for key, count in self.error_groups()],
        }


@dataclass(frozen=True)
class Verdict:
    """One claim of the lesson, whether this run bore it out, and the numbers that say so."""

    strategy: str
    holds: bool
    text: str


@dataclass
class StressReport:
    """Every strategy's figures plus the settings they were measured with."""

    database: str  # masked URL
    workload: str
    threads: int
    workers: int
    seconds: float
    requests: int | None
    warmup: float
    pool_size: int
    results: list[StrategyResult] = field(default_factory=list)

    def result(self, strategy: str) -> StrategyResult | None:
        """The result of *strategy*, if it ran."""
        return next((r for r in self.results if r.strategy == strategy), None)

    def verdicts(self) -> list[Verdict]:
        """One line per strategy that ran, each backed by the run's numbers."""
        per_view = self.result("per-view")
        out: list[Verdict] = []
        for result in self.results:
            if result.strategy == "global":
                out.append(_global_verdict(result, self.threads * self.workers))
            elif result.strategy == "per-view":
                out.append(_per_view_verdict(result))
            else:
                out.append(_pooled_verdict(result, self.workers, per_view, self.warmup))
        return out

    def to_dict(self) -> dict[str, t.Any]:
        """The whole run as JSON-ready data with stable keys (see ``SCHEMA``)."""
        return {
            "schema": SCHEMA,
            "database": self.database,
            "settings": {
                "workload": self.workload, "threads": self.threads, "workers": self.workers,
                "seconds": self.seconds, "requests": self.requests, "warmup": self.warmup,
                "pool_size": self.pool_size,
            },
            "strategies": {r.strategy: r.to_dict() for r in self.results},
            "verdicts": [{"strategy": v.strategy, "holds": v.holds, "text": v.text}
                         for v in self.verdicts()],
        }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} ms"


def _global_verdict(result: StrategyResult, threads: int) -> Verdict:
    load = result.load
    bad = load.wrong_rows + load.lost_rows + load.error_count
    parts = [f"{load.wrong_rows:,} wrong rows"]
    if load.lost_rows:
        parts.append(f"{load.lost_rows:,} lost rows")
    parts.append(f"{load.error_count:,} errors")
    figures = f"{', '.join(parts[:-1])} and {parts[-1]} in {load.elapsed:.1f} s"
    if bad:
        return Verdict("global", True, f"global: {figures} ({load.requests:,} requests) — "
                       "never share a connection between threads")
    return Verdict("global", False, f"global: {figures} with {threads} thread(s) — sharing "
                   "breaks only under concurrency; try more --threads or --seconds")


def _server_note(result: StrategyResult) -> str:
    server = result.server.connections
    if server == result.load.connections_opened:
        return ""
    note = f"; the server counted {server:,}"
    return note + (", other clients included" if server > result.load.connections_opened else "")


def _per_view_verdict(result: StrategyResult) -> Verdict:
    load = result.load
    opened = load.connections_opened
    cpu = result.connect_cpu_mean_ms
    per_request = opened / load.requests if load.requests else 0.0
    text = (f"per-view: {per_request:.2f} connections per request ({opened:,} opened for "
            f"{load.requests:,} requests{_server_note(result)}), mean connect "
            f"{_ms(result.connect_time_mean_ms)}"
            + (f" ({_ms(cpu)} of it CPU)" if cpu is not None else "")
            + f", {result.ok_per_s:,.0f} ok/s — every request pays a full connect")
    holds = load.requests > 0 and min(opened, result.server.connections) >= load.requests
    return Verdict("per-view", holds, text)


def _pooled_verdict(result: StrategyResult, workers: int, per_view: StrategyResult | None,
                    warmup: float) -> Verdict:
    load = result.load
    bound = (result.pool_size or 0) * workers
    opened = load.connections_opened
    bad = load.error_count + load.wrong_rows + load.lost_rows
    text = (f"pooled: {load.error_count:,} errors, {load.wrong_rows + load.lost_rows:,} wrong "
            f"rows, {opened:,} connections opened for {load.requests:,} requests (pool "
            f"{result.pool_size}" + (f" × {workers} workers" if workers > 1 else "")
            + (", the rest opened during the warm-up" if warmup else "")
            + f"{_server_note(result)})")
    if per_view is not None and per_view.ok_per_s > 0:
        text += f", {result.ok_per_s / per_view.ok_per_s:,.0f}× the per-view throughput"
    holds = bad == 0 and opened <= bound
    if holds:
        text += " — reuse a bounded set of connections"
    elif bad:
        text += " — see the errors above"
    else:
        text += f" — more than the bound of {bound}: connections were replaced"
    return Verdict("pooled", holds, text)
