"""``flask pool-stress --sweep 1,2,4,8,16``: the pooled strategy at each pool size, and advice.

Every size runs with the same threads, workers and workload (:func:`run_sweep`); the advice is
the smallest size whose successful throughput is within 5 % of the best and whose p99 is within
10 % of the best p99 (:func:`recommend`), shown beside HikariCP's rule of thumb, server cores
× 2 + effective spindles, for the server that was measured (:func:`rule_of_thumb`). Nothing
here prints.
"""

from __future__ import annotations

import os
import typing as t
from dataclasses import dataclass, field, replace

from flask import Flask

from ..extension import EXTENSION_KEY
from ..url import DatabaseURL
from .report import SCHEMA, StrategyResult
from .runner import Progress, ServerMonitor, StressError, StressOptions, run_stress

#: Within this share of the best throughput…
THROUGHPUT_SLACK = 0.05
#: …and of the best p99, the smallest pool wins.
P99_SLACK = 0.10
#: HikariCP's "effective spindle count": one disk (or 0 when the data set is fully cached).
SPINDLES = 1
_LOCAL = ("127.0.0.1", "localhost", "::1")
MAX_SIZES = 12


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"1,2,4,8,16"`` → ``(1, 2, 4, 8, 16)``, sorted, without repeats, each 1–1000."""
    sizes: set[int] = set()
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        try:
            size = int(raw)
        except ValueError:
            raise StressError(f"--sweep: {raw!r} is not a pool size; give whole numbers such "
                              "as 1,2,4,8,16") from None
        if not 1 <= size <= 1000:
            raise StressError(f"--sweep: pool sizes must be between 1 and 1000, not {size}")
        sizes.add(size)
    if not sizes:
        raise StressError("--sweep needs pool sizes, such as 1,2,4,8,16")
    if len(sizes) > MAX_SIZES:
        raise StressError(f"--sweep: at most {MAX_SIZES} sizes (each runs --seconds), "
                          f"not {len(sizes)}")
    return tuple(sorted(sizes))


@dataclass(frozen=True)
class RuleOfThumb:
    """HikariCP's ``connections = cores × 2 + effective spindles`` for the measured server."""

    cores: int | None
    cores_from: str  # where the core count came from
    spindles: int = SPINDLES

    @property
    def pool_size(self) -> int | None:
        """The rule's connections for the whole server (None when the cores are unknown)."""
        return None if self.cores is None else self.cores * 2 + self.spindles

    def to_dict(self) -> dict[str, t.Any]:
        """Stable-key JSON."""
        return {"pool_size": self.pool_size, "cores": self.cores,
                "cores_from": self.cores_from, "spindles": self.spindles}


def rule_of_thumb(monitor: ServerMonitor, url: DatabaseURL) -> RuleOfThumb:
    """The server's cores from MariaDB's ``@@thread_pool_size`` (its default is the number of
    CPUs), else this machine's CPUs when the server is local, else unknown."""
    value = monitor.variable("thread_pool_size")
    if value is not None and value.isdigit() and int(value) > 0:
        return RuleOfThumb(int(value), "@@thread_pool_size")
    if url.host in _LOCAL or url.options.get("unix_socket"):
        return RuleOfThumb(os.cpu_count(), "os.cpu_count() (the server runs on this machine)")
    return RuleOfThumb(None, "unknown (the server does not say; count its cores)")


@dataclass(frozen=True)
class Recommendation:
    """The advised size, and the bests it was measured against."""

    pool_size: int | None
    best_ok_per_s: float
    best_ok_per_s_size: int | None
    best_p99_ms: float | None
    best_p99_size: int | None
    reason: str
    #: No size was near both bests: the advice follows throughput alone.
    throughput_only: bool = False


def _p99(result: StrategyResult) -> float | None:
    p99 = result.to_dict()["latency_ms"]["p99"]
    return None if p99 is None else float(p99)


def recommend(points: t.Sequence[StrategyResult]) -> Recommendation:
    """The smallest size within 5 % of the best throughput and 10 % of the best p99.

    Sizes whose run had errors (PoolTimeout included) or no successful request are left out
    while some size ran clean; if no size is near both bests, throughput decides.
    """
    served = [p for p in points if p.ok > 0 and _p99(p) is not None]
    clean = [p for p in served if p.ok == p.load.requests] or served
    if not clean:
        return Recommendation(None, 0.0, None, None, None, "no size served a request")
    best = max(clean, key=lambda p: p.ok_per_s)
    fastest = min(clean, key=lambda p: t.cast(float, _p99(p)))
    best_p99 = t.cast(float, _p99(fastest))
    near = [p for p in clean if p.ok_per_s >= (1 - THROUGHPUT_SLACK) * best.ok_per_s]
    both = [p for p in near if t.cast(float, _p99(p)) <= (1 + P99_SLACK) * best_p99]
    chosen = min(both or near, key=lambda p: p.pool_size or 0)
    reason = ("the smallest pool within 5 % of the best throughput and 10 % of the best p99"
              if both else "the smallest pool within 5 % of the best throughput (no size was "
              "also within 10 % of the best p99)")
    return Recommendation(chosen.pool_size, best.ok_per_s, best.pool_size, best_p99,
                          fastest.pool_size, reason, throughput_only=not both)


@dataclass
class SweepReport:
    """One pooled result per size, the recommendation and the rule of thumb."""

    database: str
    options: StressOptions
    sizes: tuple[int, ...]
    rule: RuleOfThumb
    points: list[StrategyResult] = field(default_factory=list)

    def recommendation(self) -> Recommendation:
        """See :func:`recommend`."""
        return recommend(self.points)

    def to_dict(self) -> dict[str, t.Any]:
        """Stable-key JSON: ``settings`` and ``sweep`` with ``points`` and the advice."""
        options = self.options
        advice = self.recommendation()
        points = []
        for result in self.points:
            data = result.to_dict()
            points.append({"pool_size": result.pool_size,
                           **{k: v for k, v in data.items() if k != "pool_size"}})
        return {
            "schema": SCHEMA,
            "database": self.database,
            "settings": {"workload": options.workload, "threads": options.threads,
                         "workers": options.workers, "seconds": options.time_limit,
                         "requests": options.requests, "warmup": options.warmup,
                         "sizes": list(self.sizes)},
            "sweep": {
                "points": points,
                "recommended_pool_size": advice.pool_size,
                "reason": advice.reason,
                "throughput_only": advice.throughput_only,
                "best_ok_per_s": round(advice.best_ok_per_s, 1),
                "best_ok_per_s_pool_size": advice.best_ok_per_s_size,
                "best_p99_ms": advice.best_p99_ms,
                "best_p99_pool_size": advice.best_p99_size,
                "rule_of_thumb": self.rule.to_dict(),
            },
        }


def run_sweep(app: Flask, options: StressOptions, sizes: t.Sequence[int],
              progress: t.Callable[[Progress], None] | None = None,
              point: t.Callable[[StrategyResult], None] | None = None) -> SweepReport:
    """Run the pooled strategy of *options* once per size in *sizes* (*point* gets each)."""
    if not sizes:
        raise StressError("--sweep needs pool sizes, such as 1,2,4,8,16")
    if EXTENSION_KEY not in app.extensions:
        raise StressError(f"the Flask app {app.name!r} does not use poolkit: call "
                          "Poolkit(app) or pool.init_app(app) in it first")
    url = app.extensions[EXTENSION_KEY].pool().settings.url
    base = replace(options, strategies=("pooled",), pool_size=None)
    base.validate()
    monitor = ServerMonitor(url.connect_kwargs(), url.masked())
    try:
        rule = rule_of_thumb(monitor, url)
    finally:
        monitor.close()
    report = SweepReport(url.masked(), base, tuple(sizes), rule)
    for size in sizes:
        stress = run_stress(app, replace(base, pool_size=size), progress)
        result = stress.results[0]
        report.points.append(result)
        if point is not None:
            point(result)
    return report
