"""This checkout's pool against another revision's, in one process: did clean borrows get slower?

    POOLKIT_DATABASE_URL=mysql://root:@127.0.0.1:3306/test python benchmarks/bench_pool_ab.py main

The other revision is taken with ``git archive`` into a temporary directory and imported as
``poolkit_<rev>`` (poolkit's imports are relative), so both engines run against the same
server in the same process, rounds interleaved (the order rotates each round) with a dedicated
connection as the anchor. Shapes: 1 thread / 1 connection and 16 threads / 8 connections.
Reported: median ops/s, the ratio to the dedicated connection, p99 and its ratio.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pymysql  # noqa: E402

import poolkit  # noqa: E402
from poolkit.url import parse_url  # noqa: E402

Query = t.Callable[[int], None]


def import_revision(rev: str, into: Path) -> t.Any:
    """Import poolkit as of git revision *rev* under the name ``poolkit_<rev>``."""
    name = "poolkit_" + re.sub(r"\W", "_", rev)
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "poolkit"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    shutil.move(str(into / "poolkit"), str(into / name))
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def pool_worker(module: t.Any, url: str, conns: int) -> tuple[t.Callable[[int], Query], t.Any]:
    settings = module.load_config({"POOLKIT_DATABASE_URL": url,
                                   "POOLKIT_MAX_CONNECTIONS": conns}).pools["default"]
    pool = module.Pool(settings)

    def worker(index: int) -> Query:
        def run(nonce: int) -> None:
            with pool.connection() as conn:
                if conn.scalar("SELECT %s", (nonce,)) != nonce:
                    raise AssertionError("wrong row")
        return run
    return worker, pool


def dedicated_worker(url: str, threads: int) -> tuple[t.Callable[[int], Query], list[t.Any]]:
    cons = [pymysql.connect(**parse_url(url).connect_kwargs()) for _ in range(threads)]

    def worker(index: int) -> Query:
        con = cons[index]

        def run(nonce: int) -> None:
            cur = con.cursor()
            cur.execute("SELECT %s", (nonce,))
            if cur.fetchone()[0] != nonce:
                raise AssertionError("wrong row")
            cur.close()
        return run
    return worker, cons


def run_round(worker: t.Callable[[int], Query], threads: int,
              seconds: float) -> tuple[float, list[float]]:
    barrier = threading.Barrier(threads + 1)
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def loop(index: int) -> None:
        query, lat, nonce = worker(index), latencies[index], index * 10_000_000
        barrier.wait()
        end = time.perf_counter() + seconds
        while (start := time.perf_counter()) < end:
            nonce += 1
            query(nonce)
            lat.append(time.perf_counter() - start)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in workers:
        thread.join(seconds + 30)
    every = [x for lat in latencies for x in lat]
    return len(every) / (time.perf_counter() - started), every


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the git revision to compare with (e.g. main)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.4)
    args = parser.parse_args()
    url = os.environ.get("POOLKIT_DATABASE_URL", "mysql://root:@127.0.0.1:3306/test")
    home = Path(tempfile.mkdtemp(prefix="poolkit-ab-"))
    try:
        other = import_revision(args.rev, home)
        print(f"server {parse_url(url).masked()}; this checkout against {args.rev}")
        for threads, conns in ((1, 1), (16, 8)):
            ded, cons = dedicated_worker(url, threads)
            theirs, their_pool = pool_worker(other, url, conns)
            ours, our_pool = pool_worker(poolkit, url, conns)
            contenders = {"dedicated": ded, args.rev: theirs, "this checkout": ours}
            ops: dict[str, list[float]] = {k: [] for k in contenders}
            lats: dict[str, list[float]] = {k: [] for k in contenders}
            for worker in contenders.values():
                run_round(worker, threads, 0.1)
            names = list(contenders)
            for r in range(args.rounds):
                for name in names[r % 3:] + names[:r % 3]:
                    done, latencies = run_round(contenders[name], threads, args.seconds)
                    ops[name].append(done)
                    lats[name].extend(latencies)
            their_pool.close()
            our_pool.close()
            for con in cons:
                con.close()
            base, base99 = statistics.median(ops["dedicated"]), p99(lats["dedicated"])
            print(f"\n{threads} thread(s) / {conns} connection(s), {args.rounds} rounds × "
                  f"{args.seconds:g} s")
            for name in names:
                median = statistics.median(ops[name])
                print(f"  {name:16} {median:>9,.0f} ops/s {median / base:>6.2f}×   p99 "
                      f"{p99(lats[name]) * 1000:7.3f} ms ({p99(lats[name]) / base99:.2f}×)")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
