"""A switchover under write load: failed requests and the time until writes succeed again.

    python benchmarks/bench_failover.py                 # 5 runs, 8 threads, pool 8
    python benchmarks/bench_failover.py --runs 3 --threads 16

Each run starts a private MariaDB primary and replica (poolkit.testing.servers; the shared
server is not touched), sends inserts from ``--threads`` threads, then switches over: the
primary gets ``read_only=1``, the replica catches up and is promoted (``STOP SLAVE``,
``RESET SLAVE ALL``, ``read_only=0``). Two contenders take the same load in the same run:

* poolkit with ``mysql://…@primary,replica/db?target=primary``;
* the anchor: DBUtils ``PooledDB`` over ``pymysql.connect`` to the primary's address, which is
  what a pool on one host does (it never learns of the new primary).

Printed per contender, as medians over the runs: failed requests, the most failures of any one
thread (poolkit's goal: at most 1 per connection in use), and the time from the demotion (the
``SET GLOBAL read_only=1`` returned) to the first write that succeeded after it, beside the time
the promotion itself took (catch-up plus promotion; no pool can be faster than that).

    python benchmarks/bench_failover.py --borrow-checks  # the cost of the state checks

``--borrow-checks`` starts a private 3-node Galera cluster instead and measures what one
borrow and return costs, all in one run, each contender doing the same calls (check out, give
back, no query): DBUtils ``PooledDB`` on one node (the anchor), poolkit's engine without the
checks, poolkit with :meth:`~poolkit.pool.hosts.HostSelector.guard` (the verdict of the last
once-a-second check: the cost every borrow pays), and the guard forced to re-read the node's
state on every borrow (what the one borrow per second and host that does the check pays).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pymysql
from dbutils.pooled_db import PooledDB

from poolkit import Pool, load_config
from poolkit.testing.servers import (
    APP_PASSWORD,
    APP_USER,
    DATABASE,
    ReplicationPair,
    start_galera_cluster,
    start_replication_pair,
)

Checkout = t.Callable[[], t.Any]


class Run:
    """The outcomes of one contender's threads: (thread, started, ended, ok)."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[int, float, float, bool]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, checkout: Checkout, threads: int, table: str) -> None:
        def work(number: int) -> None:
            for n in range(100_000):
                if self.stop.is_set():
                    return
                started = time.monotonic()
                ok = True
                try:
                    con = checkout()
                    try:
                        cur = con.cursor()
                        cur.execute(f"INSERT INTO {table} (writer, n) VALUES (%s, %s)",
                                    (number, n))
                        cur.close()
                        con.commit()
                    finally:
                        con.close()
                except Exception:
                    ok = False
                with self.lock:
                    self.outcomes.append((number, started, time.monotonic(), ok))
                self.stop.wait(0.002)

        for number in range(threads):
            thread = threading.Thread(target=work, args=(number,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def figures(self, demoted: float, promoted: float) -> tuple[int, int, float | None, float]:
        failed = [o for o in self.outcomes if not o[3]]
        per_thread: dict[int, int] = {}
        for number, *_ in failed:
            per_thread[number] = per_thread.get(number, 0) + 1
        after = [o[2] for o in self.outcomes if o[3] and o[1] >= demoted]
        return (len(failed), max(per_thread.values(), default=0),
                (min(after) - demoted) if after else None, promoted - demoted)


def one_run(threads: int, after: float) -> dict[str, tuple[int, int, float | None, float]]:
    pair: ReplicationPair = start_replication_pair(first_id=21)
    try:
        for table in ("poolkit_writes", "anchor_writes"):
            pair.primary.execute(f"CREATE TABLE {DATABASE}.{table} (id INT AUTO_INCREMENT "
                                 "PRIMARY KEY, writer INT, n INT) ENGINE=InnoDB")
        pair.wait_replicated()
        url = pair.url(pair.primary, pair.replica, query="target=primary")
        pool = Pool(load_config({"POOLKIT_DATABASE_URL": url, "POOLKIT_MAX_CONNECTIONS": threads,
                                 "POOLKIT_FAILOVER_TIMEOUT": 10.0}).pools["default"])
        anchor = PooledDB(pymysql, maxconnections=threads, blocking=True, host="127.0.0.1",
                          port=pair.primary.port, user=APP_USER, password=APP_PASSWORD,
                          database=DATABASE, connect_timeout=2)
        runs = {"poolkit target=primary": Run(), "PooledDB, one host (anchor)": Run()}
        runs["poolkit target=primary"].start(pool.connection, threads, "poolkit_writes")
        runs["PooledDB, one host (anchor)"].start(anchor.connection, threads, "anchor_writes")
        time.sleep(0.5)
        pair.primary.execute("SET GLOBAL read_only = 1")
        demoted = time.monotonic()
        pair.wait_replicated()
        pair.replica.execute("STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0")
        promoted = time.monotonic()
        time.sleep(after)
        for run in runs.values():
            run.finish()
        pool.close()
        anchor.close()
        return {name: run.figures(demoted, promoted) for name, run in runs.items()}
    finally:
        pair.destroy()


def _per_borrow(borrow: Checkout, give_back: t.Callable[[t.Any], None], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        give_back(borrow())
    return (time.perf_counter() - started) / count


def borrow_checks(rounds: int, count: int) -> None:
    """Median seconds per borrow+return of each contender, interleaved round by round."""
    cluster = start_galera_cluster()
    try:
        node = cluster.nodes[0]
        pool = Pool(load_config({"POOLKIT_DATABASE_URL": cluster.url()}).pools["default"])
        anchor = PooledDB(pymysql, maxconnections=1, host="127.0.0.1", port=node.port,
                          user=APP_USER, password=APP_PASSWORD, database=DATABASE)
        engine = pool._engine  # the engine itself: what Pool calls without the guard
        guarded = pool.hosts.guard(engine.checkout, engine.checkin)
        state = pool.hosts.hosts[0]

        def forced() -> t.Any:
            state.checked = float("-inf")  # as if the last check were a second old
            return guarded()

        contenders: dict[str, tuple[Checkout, t.Callable[[t.Any], None]]] = {
            "DBUtils PooledDB (anchor)": (anchor.connection, lambda con: con.close()),
            "poolkit engine, no checks": (engine.checkout, engine.checkin),
            "poolkit + guard (cached)": (guarded, engine.checkin),
            "poolkit + guard, state read": (forced, engine.checkin),
        }
        timings: dict[str, list[float]] = {name: [] for name in contenders}
        for borrow, give_back in contenders.values():  # warm: one connection each
            _per_borrow(borrow, give_back, 100)
        for _ in range(rounds):
            for name, (borrow, give_back) in contenders.items():
                slow = name.endswith("state read")
                timings[name].append(_per_borrow(borrow, give_back, count // 20 if slow
                                                 else count))
        assert state.node_state == "Synced"
        anchor_time = statistics.median(timings["DBUtils PooledDB (anchor)"])
        plain = statistics.median(timings["poolkit engine, no checks"])
        print(f"borrow + return on a 3-node Galera pool, {rounds} rounds of {count} "
              "(medians; per borrow)")
        for name, values in timings.items():
            median = statistics.median(values)
            print(f"  {name:30s} {median * 1e6:8.2f} µs  {median / anchor_time:5.2f}x anchor  "
                  f"{(median - plain) * 1e6:+8.2f} µs vs no checks")
        pool.close()
        anchor.close()
    finally:
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--after", type=float, default=2.0,
                        help="seconds of load after the promotion")
    parser.add_argument("--borrow-checks", action="store_true",
                        help="measure the per-borrow cost of the host state checks instead")
    parser.add_argument("--count", type=int, default=20000,
                        help="borrows per round with --borrow-checks")
    args = parser.parse_args()
    if args.borrow_checks:
        borrow_checks(max(args.runs, 3), args.count)
        return
    results: dict[str, list[tuple[int, int, float | None, float]]] = {}
    for number in range(args.runs):
        for name, figures in one_run(args.threads, args.after).items():
            results.setdefault(name, []).append(figures)
        print(f"run {number + 1}/{args.runs} done", file=sys.stderr)
    print(f"switchover under write load: {args.threads} threads, pool {args.threads}, "
          f"{args.runs} runs (medians; worst in brackets)")
    for name, rows in results.items():
        failed = [r[0] for r in rows]
        worst_thread = [r[1] for r in rows]
        recovered = [r[2] for r in rows if r[2] is not None]
        promotion = statistics.median(r[3] for r in rows)
        recovery = (f"{statistics.median(recovered):.3f} s [{max(recovered):.3f} s] after the "
                    f"demotion (the promotion took {promotion:.3f} s)"
                    if len(recovered) == len(rows) else
                    f"never in {len(rows) - len(recovered)} of {len(rows)} runs")
        print(f"  {name:28s} failed requests {statistics.median(failed):g} [{max(failed)}]  "
              f"most per thread {statistics.median(worst_thread):g} [{max(worst_thread)}]  "
              f"writes succeed again after {recovery}")


if __name__ == "__main__":
    main()
