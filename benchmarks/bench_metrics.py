"""What metrics cost per checkout + return, on the pool's fast path (no SQL: the worst case).

    POOLKIT_DATABASE_URL=mysql://root:@127.0.0.1:3306/test python benchmarks/bench_metrics.py

One thread checks a connection out of a one-connection pool and returns it, in a loop.
Reported (median of rounds, microseconds per checkout + return, and the ratio to the anchor):

* poolkit, a pool without metrics beside two instrumented pools (the anchor): metrics are a
  per-pool observer, so the pools that have none pay one attribute check per event;
* poolkit + prometheus metrics (the pool's observer: two histogram observations per cycle);
* poolkit + OpenTelemetry metrics (SDK, two histogram records per cycle, same observer hook);
* before: the same two prometheus observations from per-pool blinker receivers, the wiring
  the metrics used before the observer hook, and what a pool *without* metrics paid while
  such receivers were connected for another pool (every pool dispatched its signals);
* the two prometheus observations called directly (the floor of any wiring).

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


def through_signals(pool: Pool, wait: t.Any, use: t.Any) -> tuple[t.Any, ...]:
    """The former wiring: per-pool blinker receivers observing *wait* and *use*."""
    from poolkit import signals

    def checked_out(sender: t.Any, wait_time: float = 0.0, **_: t.Any) -> None:
        wait.observe(wait_time)

    def returned(sender: t.Any, held_time: float = 0.0, **_: t.Any) -> None:
        use.observe(held_time)

    signals.connection_checked_out.connect(checked_out, sender=pool, weak=True)
    signals.connection_returned.connect(returned, sender=pool, weak=True)
    return checked_out, returned  # the caller keeps them (weak receivers)


def main() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import Histogram

    from poolkit import signals
    from poolkit.metrics import BUCKETS, otel, prometheus

    url = os.environ.get("POOLKIT_DATABASE_URL", DEFAULT_URL)
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    histogram = Histogram("bench_direct_seconds", "direct observations", buckets=BUCKETS)
    wait = Histogram("bench_signal_wait_seconds", "wait, through signals", buckets=BUCKETS)
    use = Histogram("bench_signal_use_seconds", "use, through signals", buckets=BUCKETS)

    def two_observations() -> None:
        histogram.observe(0.0)
        histogram.observe(0.0001)

    names = ("poolkit, a pool without metrics", "poolkit + prometheus metrics",
             "poolkit + opentelemetry metrics", "before: prometheus through signals",
             "before: a pool without, signals in use", "two observations called directly")
    results: dict[str, list[float]] = {name: [] for name in names}
    plain = make_pool(url)
    # Each round makes and drops its instrumented pools, and rotates the order of the cases in
    # each phase, so that machine noise and position effects hit every case alike.
    for n in range(ROUNDS):
        # Observer wiring: the anchor is a pool beside instrumented ones, which cost it nothing.
        measured, traced = make_pool(url), make_pool(url)
        prometheus.instrument([measured])
        otel.instrument([traced], meter_provider=provider)
        assert not signals.connection_checked_out.receivers and plain.observer is None
        cases = [(names[0], cycle(plain)), (names[1], cycle(measured)),
                 (names[2], cycle(traced)), (names[5], two_observations)]
        for name, call in cases[n % 4:] + cases[:n % 4]:
            results[name].append(per_cycle(call))
        # Signal wiring (before the observer hook): while connected, every pool dispatches.
        signalled = make_pool(url)
        receivers = through_signals(signalled, wait, use)
        cases = [(names[3], cycle(signalled)), (names[4], cycle(plain))]
        for name, call in cases[n % 2:] + cases[:n % 2]:
            results[name].append(per_cycle(call))
        for pool in (measured, traced, signalled):
            pool.close()
        del measured, traced, signalled, pool, receivers, cases
        gc.collect()
    plain.close()
    provider.shutdown()
    medians = {name: statistics.median(values) for name, values in results.items()}
    base = medians[names[0]]
    print(f"{CYCLES:,} checkout + return cycles × {ROUNDS} interleaved rounds, one thread, "
          f"Python {sys.version.split()[0]}")
    print(f"  {'':38} {'µs/cycle':>9} {'over anchor':>12} {'ratio':>7}")
    for name in names[:5]:
        print(f"  {name:38} {medians[name]:9.2f} {medians[name] - base:+11.2f} "
              f"{medians[name] / base:6.2f}×")
    print(f"  {names[5]:38} {medians[names[5]]:9.2f}   (the floor: anchor + this = "
          f"{base + medians[names[5]]:.2f} µs/cycle)")


if __name__ == "__main__":
    main()
