"""Checkout + ``SELECT %s`` + return: poolkit against a dedicated connection and the anchors.

    POOLKIT_DATABASE_URL=mysql://root:@127.0.0.1:3306/test python benchmarks/bench_pool.py
    python benchmarks/bench_pool.py --spike      # also: 50 threads on an empty pool, slow connects
    python benchmarks/bench_pool.py --no-dirty   # skip the dirty-borrow comparison

Every contender runs in this one process, rounds interleaved (the order rotates each round) so
that machine noise hits them all alike. Shapes: 1 thread / 1 connection and 16 threads /
8 connections (the dedicated baseline has one raw connection per thread). Reported: median
ops/s over the rounds, the ratio to the dedicated baseline, p50/p99 latency of all rounds.

Dirty borrows: each borrow runs ``SET @v = %s`` and ``SELECT @v`` (a changed session). poolkit
resets such a session on return (COM_RESET_CONNECTION, database and session SQL pipelined in
one round trip); PooledDB rolls back on every return -- the same one round trip, and @v stays
behind for the next borrower.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import socket
import statistics
import sys
import threading
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



import pymysql
from dbutils.pooled_db import PooledDB
from sqlalchemy.pool import QueuePool

from poolkit import Pool, load_config
from poolkit.url import DatabaseURL, parse_url

DEFAULT_URL = "mysql://root:@127.0.0.1:3306/test"
Query = t.Callable[[int], None]  # one checkout + SELECT %s + return, checked


def raw_connect(url: DatabaseURL, port: int | None = None) -> t.Any:
    kwargs = url.connect_kwargs()
    if port is not None:
        kwargs["port"] = port
    return pymysql.connect(**kwargs)


def select_on(cur: t.Any, nonce: int) -> None:
    cur.execute("SELECT %s", (nonce,))
    if cur.fetchone()[0] != nonce:
        raise AssertionError("wrong row")


class Contender:
    """One way to get a connection: ``worker(i)`` gives thread *i* its query function."""

    name = ""

    def worker(self, index: int) -> Query:
        raise NotImplementedError

    def close(self) -> None:
        """Close every connection."""


class Dedicated(Contender):
    name = "dedicated raw connection"

    def __init__(self, url: DatabaseURL, threads: int, conns: int) -> None:
        self.cons = [raw_connect(url) for _ in range(threads)]

    def worker(self, index: int) -> Query:
        con = self.cons[index]

        def run(nonce: int) -> None:
            cur = con.cursor()
            select_on(cur, nonce)
            cur.close()
        return run

    def close(self) -> None:
        for con in self.cons:
            con.close()


class BareLifo(Contender):
    name = "bare LifoQueue"

    def __init__(self, url: DatabaseURL, threads: int, conns: int) -> None:
        self.idle: queue.LifoQueue[t.Any] = queue.LifoQueue()
        self.cons = [raw_connect(url) for _ in range(conns)]
        for con in self.cons:
            self.idle.put(con)

    def worker(self, index: int) -> Query:
        def run(nonce: int) -> None:
            con = self.idle.get()
            try:
                cur = con.cursor()
                select_on(cur, nonce)
                cur.close()
            finally:
                self.idle.put(con)
        return run

    def close(self) -> None:
        for con in self.cons:
            con.close()


class DBUtilsDefaults(Contender):
    name = "DBUtils PooledDB defaults"

    def __init__(self, url: DatabaseURL, threads: int, conns: int) -> None:
        self.pool = PooledDB(pymysql, maxconnections=conns, blocking=True,
                             **url.connect_kwargs())

    def worker(self, index: int) -> Query:
        def run(nonce: int) -> None:
            con = self.pool.connection()
            try:
                cur = con.cursor()
                select_on(cur, nonce)
                cur.close()
            finally:
                con.close()
        return run

    def close(self) -> None:
        self.pool.close()


class SQLAlchemyQueuePool(Contender):
    name = "SQLAlchemy QueuePool"

    def __init__(self, url: DatabaseURL, threads: int, conns: int) -> None:
        self.pool = QueuePool(lambda: raw_connect(url), pool_size=conns, max_overflow=0)

    def worker(self, index: int) -> Query:
        def run(nonce: int) -> None:
            con = self.pool.connect()
            try:
                cur = con.cursor()
                select_on(cur, nonce)
                cur.close()
            finally:
                con.close()
        return run

    def close(self) -> None:
        self.pool.dispose()


class Poolkit(Contender):
    name = "poolkit"

    def __init__(self, url: DatabaseURL, threads: int, conns: int, full_url: str = "") -> None:
        settings = load_config({"POOLKIT_DATABASE_URL": full_url,
                                "POOLKIT_MAX_CONNECTIONS": conns}).pools["default"]
        self.pool = Pool(settings)

    def worker(self, index: int) -> Query:
        pool = self.pool

        def run(nonce: int) -> None:
            with pool.connection() as conn:
                if conn.scalar("SELECT %s", (nonce,)) != nonce:
                    raise AssertionError("wrong row")
        return run

    def close(self) -> None:
        self.pool.close()


class PoolkitAlwaysReset(Poolkit):
    """POOLKIT_RESET="always": no skip decision, a full reset at every return (what a pool
    that cannot prove a session clean must pay)."""

    name = "poolkit, reset always"

    def __init__(self, url: DatabaseURL, threads: int, conns: int, full_url: str = "") -> None:
        settings = load_config({"POOLKIT_DATABASE_URL": full_url, "POOLKIT_RESET": "always",
                                "POOLKIT_MAX_CONNECTIONS": conns}).pools["default"]
        self.pool = Pool(settings)


class PoolkitCursor(Poolkit):
    """The same borrow through ``conn.cursor()``: a borrow-bound cursor, and the fail-safe
    check scans the interpolated statement (the helpers' check is cached per template)."""

    name = "poolkit via conn.cursor()"

    def worker(self, index: int) -> Query:
        pool = self.pool

        def run(nonce: int) -> None:
            with pool.connection() as conn:
                cur = conn.cursor()
                select_on(cur, nonce)
                cur.close()
        return run


class PoolkitPrometheus(Poolkit):
    """poolkit with POOLKIT_METRICS = "prometheus": one histogram observation per checkout and
    per return, from the pool's observer (no signal dispatch; the plain "poolkit" row's pool
    has no observer and pays nothing); benchmarks/bench_metrics.py measures the parts."""

    name = "poolkit + prometheus metrics"

    def __init__(self, url: DatabaseURL, threads: int, conns: int, full_url: str = "") -> None:
        super().__init__(url, threads, conns, full_url)
        from poolkit.metrics import prometheus

        prometheus.instrument([self.pool])


def run_round(contender: Contender, threads: int, seconds: float) -> tuple[int, list[float]]:
    """Every thread loops for *seconds*; returns the operations done and their latencies."""
    barrier = threading.Barrier(threads + 1)
    results: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        query = contender.worker(index)
        lat = results[index]
        nonce = index * 10_000_000
        barrier.wait()
        end = time.perf_counter() + seconds
        try:
            while True:
                start = time.perf_counter()
                if start >= end:
                    break
                nonce += 1
                query(nonce)
                lat.append(time.perf_counter() - start)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join(seconds + 30)
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    latencies = [x for lat in results for x in lat]
    return int(len(latencies) / elapsed), latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_shape(url: DatabaseURL, full_url: str, threads: int, conns: int, rounds: int,
                seconds: float) -> None:
    kinds: list[type[Contender]] = [Dedicated, BareLifo, DBUtilsDefaults, SQLAlchemyQueuePool,
                                    Poolkit, PoolkitCursor, PoolkitAlwaysReset,
                                    PoolkitPrometheus]
    contenders = [k(url, threads, conns, full_url) if issubclass(k, Poolkit)
                  else k(url, threads, conns) for k in kinds]
    ops: dict[str, list[int]] = {c.name: [] for c in contenders}
    lats: dict[str, list[float]] = {c.name: [] for c in contenders}
    try:
        for contender in contenders:  # warm-up: open every connection, fill caches
            run_round(contender, threads, 0.1)
        for r in range(rounds):
            shift = r % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                done, latencies = run_round(contender, threads, seconds)
                ops[contender.name].append(done)
                lats[contender.name].extend(latencies)
    finally:
        for contender in contenders:
            contender.close()
    base = statistics.median(ops[Dedicated.name])
    base_p99 = percentile(lats[Dedicated.name], 0.99)
    print(f"\n{threads} thread(s) / {conns} connection(s), {rounds} rounds × {seconds:g} s "
          f"(dedicated: {threads} connection(s))")
    print(f"  {'contender':28} {'ops/s':>9} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'p99/ded':>8}")
    for contender in contenders:
        name = contender.name
        median = statistics.median(ops[name])
        p50 = percentile(lats[name], 0.50) * 1000
        p99 = percentile(lats[name], 0.99)
        print(f"  {name:28} {median:>9,.0f} {median / base:>6.2f}× {p50:>8.3f} "
              f"{p99 * 1000:>8.3f} {p99 / base_p99:>7.2f}×")
    pk = statistics.median(ops[Poolkit.name]) / base
    pk99 = percentile(lats[Poolkit.name], 0.99) / base_p99
    verdict = "met" if pk >= 0.90 and pk99 <= 1.5 else "NOT met"
    print(f"  goal (poolkit ≥ 0.90× dedicated, p99 ≤ 1.5× dedicated): {verdict} "
          f"({pk:.2f}×, p99 {pk99:.2f}×)")


# -- dirty borrows ------------------------------------------------------------------------------
def dirty_on(cur: t.Any, nonce: int) -> None:
    cur.execute("SET @v = %s", (nonce,))
    cur.execute("SELECT @v")
    if cur.fetchone()[0] != nonce:
        raise AssertionError("wrong row")


class DedicatedDirty(Dedicated):
    name = "dedicated raw, dirty"

    def worker(self, index: int) -> Query:
        con = self.cons[index]

        def run(nonce: int) -> None:
            cur = con.cursor()
            dirty_on(cur, nonce)
            cur.close()
        return run


class DBUtilsDirty(DBUtilsDefaults):
    name = "PooledDB, dirty (rollback)"

    def worker(self, index: int) -> Query:
        def run(nonce: int) -> None:
            con = self.pool.connection()
            try:
                cur = con.cursor()
                dirty_on(cur, nonce)
                cur.close()
            finally:
                con.close()
        return run


class PoolkitDirty(Poolkit):
    name = "poolkit, dirty (reset)"

    def worker(self, index: int) -> Query:
        pool = self.pool

        def run(nonce: int) -> None:
            with pool.connection() as conn:
                conn.execute("SET @v = %s", (nonce,))
                if conn.scalar("SELECT @v") != nonce:
                    raise AssertionError("wrong row")
        return run


def bench_dirty(url: DatabaseURL, full_url: str, threads: int, conns: int, rounds: int,
                seconds: float) -> None:
    contenders: list[Contender] = [DedicatedDirty(url, threads, conns),
                                   DBUtilsDirty(url, threads, conns),
                                   PoolkitDirty(url, threads, conns, full_url)]
    ops: dict[str, list[int]] = {c.name: [] for c in contenders}
    lats: dict[str, list[float]] = {c.name: [] for c in contenders}
    try:
        for contender in contenders:
            run_round(contender, threads, 0.1)
        for r in range(rounds):
            shift = r % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                done, latencies = run_round(contender, threads, seconds)
                ops[contender.name].append(done)
                lats[contender.name].extend(latencies)
        resets = t.cast(PoolkitDirty, contenders[2]).pool.stats()["resets"]
    finally:
        for contender in contenders:
            contender.close()
    base = statistics.median(ops[DedicatedDirty.name])
    print(f"\ndirty borrows (SET @v + SELECT @v), {threads} thread(s) / {conns} connection(s), "
          f"{rounds} rounds × {seconds:g} s")
    print(f"  {'contender':28} {'ops/s':>9} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for contender in contenders:
        name = contender.name
        median = statistics.median(ops[name])
        print(f"  {name:28} {median:>9,.0f} {median / base:>6.2f}× "
              f"{percentile(lats[name], 0.50) * 1000:>8.3f} "
              f"{percentile(lats[name], 0.99) * 1000:>8.3f}")
    pk = statistics.median(ops[PoolkitDirty.name])
    dbu = statistics.median(ops[DBUtilsDirty.name])
    print(f"  poolkit's full reset against PooledDB's rollback-on-every-return: {pk / dbu:.2f}× "
          f"the throughput ({resets:,} resets; PooledDB hands @v on to the next borrower)")


# -- spike ------------------------------------------------------------------------------------
class DelayProxy:
    """A loopback TCP proxy that waits *delay* seconds before connecting each client upstream."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._link, args=(client,), daemon=True).start()

    def _link(self, client: socket.socket) -> None:
        time.sleep(self.delay)
        upstream = socket.create_connection(self.target)
        self.sockets += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopped = True
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def spike_once(checkout: t.Callable[[], t.Any], query: t.Callable[[t.Any], None],
               give_back: t.Callable[[t.Any], None], threads: int) -> float:
    """Seconds from a common start until each of *threads* has run its query (all hold on)."""
    barrier = threading.Barrier(threads + 1)
    served: list[float] = []
    release = threading.Event()
    errors: list[BaseException] = []

    def one() -> None:
        barrier.wait()
        try:
            con = checkout()
            query(con)
            served.append(time.perf_counter())
            release.wait(60)  # hold the connection: every thread needs its own
            give_back(con)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    deadline = start + 60
    while len(served) + len(errors) < threads and time.perf_counter() < deadline:
        time.sleep(0.005)
    total = (max(served) if served else deadline) - start
    release.set()
    for worker in workers:
        worker.join(30)
    if errors:
        raise errors[0]
    return total


def spike(url: DatabaseURL, threads: int = 50, delay: float = 0.150) -> None:
    proxy = DelayProxy((url.host, url.port), delay)
    try:
        slow = url.connect_kwargs() | {"port": proxy.port, "host": "127.0.0.1"}
        started = time.perf_counter()
        pymysql.connect(**slow).close()
        one_connect = time.perf_counter() - started
        full = (f"mysql://{url.user}:{url.password}@127.0.0.1:{proxy.port}/{url.database}")
        settings = load_config({"POOLKIT_DATABASE_URL": full,
                                "POOLKIT_MAX_CONNECTIONS": threads}).pools["default"]
        pk = Pool(settings)
        pk_time = spike_once(pk.checkout, lambda c: c.scalar("SELECT 1"), lambda c: c.close(),
                             threads)
        pk.close()

        def dbutils_query(con: t.Any) -> None:
            cur = con.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
            cur.close()

        dbu = PooledDB(pymysql, maxconnections=threads, blocking=True, **slow)
        dbu_time = spike_once(dbu.connection, dbutils_query, lambda c: c.close(), threads)
        dbu.close()
    finally:
        proxy.close()
    print(f"\nspike: {threads} threads at once on an empty pool (max {threads}), each new "
          f"connection delayed {delay * 1000:.0f} ms by a loopback proxy")
    print(f"  one connect through the proxy (the ideal): {one_connect * 1000:8.0f} ms")
    print(f"  poolkit, all {threads} served after:          {pk_time * 1000:8.0f} ms "
          f"({pk_time / one_connect:.1f}× ideal)")
    print(f"  DBUtils PooledDB defaults, all served after: {dbu_time * 1000:8.0f} ms "
          f"({dbu_time / one_connect:.1f}× ideal; connects under its lock)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.4, help="per contender per round")
    parser.add_argument("--spike", action="store_true", help="also run the connect spike")
    parser.add_argument("--spike-only", action="store_true")
    parser.add_argument("--no-dirty", action="store_true", help="skip the dirty borrows")
    args = parser.parse_args()
    full_url = os.environ.get("POOLKIT_DATABASE_URL", DEFAULT_URL)
    url = parse_url(full_url)
    print(f"server {url.masked()}, PyMySQL {pymysql.VERSION_STRING}, Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if not args.spike_only:
        bench_shape(url, full_url, threads=1, conns=1, rounds=args.rounds, seconds=args.seconds)
        bench_shape(url, full_url, threads=16, conns=8, rounds=args.rounds,
                    seconds=args.seconds)
        if not args.no_dirty:
            for threads, conns in ((1, 1), (16, 8)):
                bench_dirty(url, full_url, threads, conns, args.rounds, args.seconds)
    if args.spike or args.spike_only:
        spike(url)


if __name__ == "__main__":
    main()
