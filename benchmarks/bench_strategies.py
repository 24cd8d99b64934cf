"""Pooled against per-view requests/s through a Flask app, PyMySQL with its default connect args.

    POOLKIT_DATABASE_URL=mysql://root:@127.0.0.1:3306/test python benchmarks/bench_strategies.py
    python benchmarks/bench_strategies.py --seconds 5 --workers 2 --profile

Runs ``flask pool-stress``'s engine (poolkit.stress) on a minimal app: per-view (the anchor:
``pymysql.connect(...)`` in every request, as a view would write it) then pooled, 16 threads,
pool 8, with 1 worker process and then ``--workers`` processes. Prints req/s, the ratio
pooled / per-view (target ≥ 50×) and the mean connect time of each. ``--profile`` runs one
pooled second under cProfile and prints where the load generator's CPU goes: on 2 cores the
GIL of one process is the ceiling, which is what ``--workers`` lifts.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask

from poolkit import Poolkit
from poolkit.stress.report import StressReport
from poolkit.stress.runner import StressOptions, run_stress

DEFAULT_URL = "mysql://root:@127.0.0.1:3306/test"
TARGET = 50.0


def make_app(url: str, pool_size: int) -> tuple[Flask, Poolkit]:
    """A fresh app with poolkit on *url* (each run registers its stress views on a new app)."""
    app = Flask("bench_strategies")
    app.config.update(POOLKIT_DATABASE_URL=url, POOLKIT_MAX_CONNECTIONS=pool_size)
    return app, Poolkit(app)


def measure(url: str, options: StressOptions) -> StressReport:
    """One pool-stress run on a fresh app."""
    app, extension = make_app(url, options.pool_size or 8)
    try:
        return run_stress(app, options)
    finally:
        extension.close()


def profile(url: str, seconds: float) -> str:
    """The top of a cProfile of every load thread of one pooled run (one profiler each)."""
    app, extension = make_app(url, 8)
    profilers: list[cProfile.Profile] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        if not self.name.startswith("poolkit-stress"):
            return original(self)
        profiler = cProfile.Profile(time.thread_time)  # CPU time: waits do not count
        profilers.append(profiler)
        profiler.runcall(original, self)
        return None

    threading.Thread.run = run  # type: ignore[method-assign]
    cpu = os.times()
    try:
        report = run_stress(app, StressOptions(strategies=("pooled",), seconds=seconds,
                                               threads=16, pool_size=8))
    finally:
        threading.Thread.run = original  # type: ignore[method-assign]
        extension.close()
    used = os.times()
    out = io.StringIO()
    pooled = report.result("pooled")
    assert pooled is not None
    cores = (used.user + used.system - cpu.user - cpu.system) / (used.elapsed - cpu.elapsed)
    out.write(f"{pooled.req_per_s:,.0f} req/s while profiled; this process used {cores:.2f} "
              f"of {os.cpu_count()} cores (one process runs Python on one core at a time)\n")
    stats = pstats.Stats(*profilers, stream=out)
    stats.sort_stats("tottime").print_stats(16)
    return out.getvalue()


def line(report: StressReport, workers: int) -> str:
    per_view, pooled = report.result("per-view"), report.result("pooled")
    assert per_view is not None and pooled is not None
    ratio = pooled.req_per_s / per_view.req_per_s if per_view.req_per_s else float("inf")
    pv_connect = per_view.connect_time_mean_ms or 0.0
    pv_cpu = per_view.connect_cpu_mean_ms or 0.0
    po_connect = pooled.connect_time_mean_ms or 0.0
    verdict = "ok" if ratio >= TARGET else f"BELOW the {TARGET:.0f}× target"
    return (f"workers {workers}:  per-view {per_view.req_per_s:8,.1f} req/s "
            f"(connect {pv_connect:6.1f} ms, {pv_cpu:4.1f} ms CPU, "
            f"{per_view.load.connections_opened:,} connections)   pooled "
            f"{pooled.req_per_s:8,.0f} req/s (connect {po_connect:5.1f} ms, "
            f"{pooled.load.connections_opened} connections, "
            f"{pooled.load.error_count + pooled.load.wrong_rows} errors)   ratio "
            f"{ratio:6.0f}×  {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per strategy and run")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="processes of the second run")
    parser.add_argument("--profile", action="store_true", help="profile one pooled run")
    args = parser.parse_args()
    if not 0 < args.seconds <= 60:
        parser.error("--seconds must be in (0, 60]")
    url = os.environ.get("POOLKIT_DATABASE_URL", DEFAULT_URL)
    print(f"bench_strategies: {args.threads} threads per process, pool 8 per process, "
          f"{args.seconds:g} s per strategy, PyMySQL default connect arguments")
    worst = float("inf")
    for workers in sorted({1, args.workers}):
        report = measure(url, StressOptions(
            strategies=("per-view", "pooled"), threads=args.threads, seconds=args.seconds,
            pool_size=8, workers=workers))
        print(line(report, workers), flush=True)
        per_view, pooled = report.result("per-view"), report.result("pooled")
        assert per_view is not None and pooled is not None
        if per_view.req_per_s:
            worst = min(worst, pooled.req_per_s / per_view.req_per_s)
    if args.profile:
        print("\npooled, 1 process, cProfile of the load threads (by own time):")
        print(profile(url, min(args.seconds, 2.0)))
    return 0 if worst >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
