"""What metrics cost per checkout + return, on the pool's fast path (no SQL: the worst case).

    POOLKIT_DATABASE_URL=mysql://root:@127.0.0.1:3306/test python benchmarks/bench_metrics.py

One thread checks a connection out of a one-connection pool and returns it, in a loop.
Reported (median of rounds, microseconds per checkout + return):

* poolkit, no signal receivers anywhere (the anchor);
* poolkit while another pool is instrumented: every pool then sends its signals, and the
  receivers look the sender up and skip it;
* poolkit + prometheus metrics (two histogram observations per cycle, through blinker);
* poolkit + OpenTelemetry metrics (SDK, two histogram records per cycle, through blinker);
* the two prometheus observations called directly: what a per-pool observer hook in the
  engine would cost instead of the signal dispatch.

A real request adds a query round trip (~100 µs on loopback); ``bench_pool.py`` shows that.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poolkit import Pool, load_config

DEFAULT_URL = "mysql://root:@127.0.0.1:3306/test"
CYCLES = 20_000
ROUNDS = 7


def make_pool(url: str) -> Pool:
    pool = Pool(load_config({"POOLKIT_DATABASE_URL": url,
                             "POOLKIT_MAX_CONNECTIONS": 1}).pools["default"])
    with pool.connection() as conn:
        conn.scalar("SELECT 1")
    return pool


def per_cycle(call: t.Callable[[], None], cycles: int = CYCLES) -> float:
    """Microseconds per call of *call* (one round)."""
    started = time.perf_counter()
    for _ in range(cycles):
        call()
    return (time.perf_counter() - started) / cycles * 1e6


def cycle(pool: Pool) -> t.Callable[[], None]:
    return lambda: pool.connection().close()


def main() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import Histogram

    from poolkit import signals
    from poolkit.metrics import BUCKETS, otel, prometheus

    url = os.environ.get("POOLKIT_DATABASE_URL", DEFAULT_URL)
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    histogram = Histogram("bench_direct_seconds", "direct observations", buckets=BUCKETS)

    def two_observations() -> None:
        histogram.observe(0.0)
        histogram.observe(0.0001)

    names = ("poolkit, no receivers", "poolkit, another pool instrumented",
             "poolkit + prometheus metrics", "poolkit + opentelemetry metrics",
             "two observations called directly")
    results: dict[str, list[float]] = {name: [] for name in names}
    plain = make_pool(url)
    # Rounds interleave every case; the instrumented pools are made and dropped in each round,
    # so that the anchor runs with no receiver connected at all.
    for _ in range(ROUNDS):
        assert not signals.connection_checked_out.receivers
        results[names[0]].append(per_cycle(cycle(plain)))
        measured, traced = make_pool(url), make_pool(url)
        prometheus.instrument([measured])
        otel.instrument([traced], meter_provider=provider)
        results[names[1]].append(per_cycle(cycle(plain)))
        results[names[2]].append(per_cycle(cycle(measured)))
        results[names[3]].append(per_cycle(cycle(traced)))
        results[names[4]].append(per_cycle(two_observations))
        for pool in (measured, traced):
            pool.close()
        del measured, traced, pool
        gc.collect()
    plain.close()
    provider.shutdown()
    medians = {name: statistics.median(values) for name, values in results.items()}
    base = medians[names[0]]
    print(f"{CYCLES:,} checkout + return cycles × {ROUNDS} interleaved rounds, one thread, "
          f"Python {sys.version.split()[0]}")
    print(f"  {'':38} {'µs/cycle':>9} {'over anchor':>12}")
    for name in names[:4]:
        print(f"  {name:38} {medians[name]:9.2f} {medians[name] - base:+11.2f}")
    hook = medians[names[4]]
    print(f"  {names[4]:38} {hook:9.2f}   (through a per-pool hook instead of the signals: "
          f"~{base + hook:.2f} µs/cycle)")


if __name__ == "__main__":
    main()
