"""The pool's hot path, layer by layer: every contender does the same calls.

    POOLKIT_DATABASE_URL=mysql://root:@127.0.0.1:3306/test python benchmarks/bench_pool.py
    python benchmarks/bench_pool.py --ops 3000 --rounds 7
    python benchmarks/bench_pool.py --dirty      # also: dirty borrows (a full reset each)
    python benchmarks/bench_pool.py --spike      # also: 50 threads on an empty pool, slow connects

The statement is always the same calls: ``cursor()``, ``execute("SELECT %s", (n,))``,
``fetchone()`` (checked), ``close()``. Layers (1 thread, one connection):

* raw PyMySQL: one dedicated ``pymysql.connect()``;
* poolkit's driver connection: the tracked PyMySQL subclass the pool uses, unpooled;
* ``db.raw`` and ``conn.cursor()`` inside one long borrow; ``conn.scalar()`` (the helper, which
  makes the same calls inside) in one long borrow;
* a borrow each: ``with pool.connection()``, the statement, return -- beside the anchors doing
  the same: DBUtils ``PooledDB``, SQLAlchemy ``QueuePool``, a bare ``LifoQueue``;
* borrow + return with no statement, for each pool.

Each round runs ``--ops`` operations per contender, contenders interleaved (the order rotates
every round) so that machine noise hits them alike; figures are medians over the rounds.
Reported: µs per operation, µs added over raw PyMySQL, the throughput ratio to raw. Then the
borrow-each contenders at 16 threads / 8 connections (the raw baseline: 16 dedicated
connections), ops/s and ratio; and the read-snapshot ROLLBACK options (awaited at return,
pipelined, ``?autocommit=1``).
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
import timeit
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pymysql
from dbutils.pooled_db import PooledDB
from sqlalchemy.pool import QueuePool

from poolkit import Pool, load_config
from poolkit.url import DatabaseURL, parse_url

DEFAULT_URL = "mysql://root:@127.0.0.1:3306/test"
Query = t.Callable[[int], None]  # one operation, checked


def raw_connect(url: DatabaseURL, port: int | None = None, **extra: t.Any) -> t.Any:
    kwargs = url.connect_kwargs() | extra
    if port is not None:
        kwargs["port"] = port
    return pymysql.connect(**kwargs)


def select_on(cur: t.Any, nonce: int) -> None:
    cur.execute("SELECT %s", (nonce,))
    if cur.fetchone()[0] != nonce:
        raise AssertionError("wrong row")


def statement(con: t.Any, nonce: int) -> None:
    """The one statement every contender runs: cursor, execute, fetchone (checked), close."""
    cur = con.cursor()
    cur.execute("SELECT %s", (nonce,))
    if cur.fetchone()[0] != nonce:
        raise AssertionError("wrong row")
    cur.close()


def pool_settings(full_url: str, conns: int, **extra: t.Any) -> t.Any:
    return load_config({"POOLKIT_DATABASE_URL": full_url, "POOLKIT_MAX_CONNECTIONS": conns,
                        **extra}).pools["default"]


class Contender:
    """One way to run the operation: ``worker(i)`` gives thread *i* its function."""

    name = ""
    statement = True  # False: borrow + return only

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int) -> None:
        """Open what the contender needs (subclasses)."""

    def worker(self, index: int) -> Query:
        raise NotImplementedError

    def close(self) -> None:
        """Close every connection (and end any long borrow)."""


class Dedicated(Contender):
    name = "raw PyMySQL (dedicated)"

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int) -> None:
        self.cons = [raw_connect(url) for _ in range(threads)]

    def worker(self, index: int) -> Query:
        con = self.cons[index]
        return lambda nonce: statement(con, nonce)

    def close(self) -> None:
        for con in self.cons:
            con.close()


class TrackedDriver(Dedicated):
    name = "poolkit's driver connection"

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int) -> None:
        settings = pool_settings(full_url, conns)
        pool = Pool(settings)
        self.cons = [pool.driver.connect(settings.driver_kwargs(), settings.session)
                     for _ in range(threads)]
        pool.close()


class LongBorrow(Contender):
    """Statements inside one borrow per thread (held for the whole run)."""

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int) -> None:
        self.pool = Pool(pool_settings(full_url, max(conns, threads)))
        self.handles = [self.pool.connection() for _ in range(threads)]

    def close(self) -> None:
        for handle in self.handles:
            handle.close()
        self.pool.close()


class BorrowedRawLayer(LongBorrow):
    name = "db.raw, one borrow"

    def worker(self, index: int) -> Query:
        raw = self.handles[index].raw
        return lambda nonce: statement(raw, nonce)


class HandleCursor(LongBorrow):
    name = "conn.cursor(), one borrow"

    def worker(self, index: int) -> Query:
        conn = self.handles[index]
        return lambda nonce: statement(conn, nonce)


class HandleScalar(LongBorrow):
    name = "conn.scalar(), one borrow"

    def worker(self, index: int) -> Query:
        conn = self.handles[index]

        def run(nonce: int) -> None:
            if conn.scalar("SELECT %s", (nonce,)) != nonce:
                raise AssertionError("wrong row")
        return run


class PoolkitBorrow(Contender):
    name = "poolkit: borrow each"

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int,
                 **extra: t.Any) -> None:
        self.pool = Pool(pool_settings(full_url, conns, **extra))
        self.setup()

    def setup(self) -> None:
        """Adjust the pool before the run (subclasses)."""

    def worker(self, index: int) -> Query:
        pool = self.pool

        def run(nonce: int) -> None:
            with pool.connection() as conn:
                statement(conn, nonce)
        return run

    def close(self) -> None:
        self.pool.close()


class PoolkitScalarBorrow(PoolkitBorrow):
    name = "poolkit: borrow each, scalar()"

    def worker(self, index: int) -> Query:
        pool = self.pool

        def run(nonce: int) -> None:
            with pool.connection() as conn:
                if conn.scalar("SELECT %s", (nonce,)) != nonce:
                    raise AssertionError("wrong row")
        return run


class PoolkitAlwaysReset(PoolkitBorrow):
    """POOLKIT_RESET="always": no skip decision, a full reset at every return (what a pool
    that cannot prove a session clean must pay)."""

    name = "poolkit: borrow each, reset always"

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int) -> None:
        super().__init__(url, full_url, threads, conns, POOLKIT_RESET="always")


class PoolkitPrometheus(PoolkitBorrow):
    """POOLKIT_METRICS = "prometheus": one histogram observation per checkout and per return,
    from the pool's observer (benchmarks/bench_metrics.py measures the parts)."""

    name = "poolkit + prometheus metrics"

    def setup(self) -> None:
        from poolkit.metrics import prometheus

        prometheus.instrument([self.pool])


class PoolkitAwaitedRollback(PoolkitBorrow):
    """The read snapshot's ROLLBACK sent and its answer read inside the return."""

    name = "poolkit: ROLLBACK awaited"

    def setup(self) -> None:
        self.pool._engine.pipeline_rollback = False


class PoolkitAutocommit(PoolkitBorrow):
    name = "poolkit: ?autocommit=1"

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int) -> None:
        sep = "&" if "?" in full_url else "?"
        super().__init__(url, full_url + sep + "autocommit=1", threads, conns)


class DedicatedAutocommit(Dedicated):
    name = "raw PyMySQL, autocommit=1"

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int) -> None:
        self.cons = [raw_connect(url, autocommit=True) for _ in range(threads)]


class BorrowOnly(PoolkitBorrow):
    name = "poolkit: borrow + return"
    statement = False

    def worker(self, index: int) -> Query:
        pool = self.pool

        def run(nonce: int) -> None:
            with pool.connection() as conn:
                conn.acquire()
        return run


class LifoBorrow(Contender):
    name = "bare LifoQueue: borrow each"

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int) -> None:
        self.idle: queue.LifoQueue[t.Any] = queue.LifoQueue()
        self.cons = [raw_connect(url) for _ in range(conns)]
        for con in self.cons:
            self.idle.put(con)

    def worker(self, index: int) -> Query:
        idle = self.idle
        use = statement if self.statement else None

        def run(nonce: int) -> None:
            con = idle.get()
            try:
                if use is not None:
                    use(con, nonce)
            finally:
                idle.put(con)
        return run

    def close(self) -> None:
        for con in self.cons:
            con.close()


class LifoOnly(LifoBorrow):
    name = "bare LifoQueue: borrow + return"
    statement = False


class PooledDBBorrow(Contender):
    name = "DBUtils PooledDB: borrow each"

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int) -> None:
        self.pool = PooledDB(pymysql, maxconnections=conns, blocking=True,
                             **url.connect_kwargs())

    def worker(self, index: int) -> Query:
        pool = self.pool
        use = statement if self.statement else None

        def run(nonce: int) -> None:
            con = pool.connection()
            try:
                if use is not None:
                    use(con, nonce)
            finally:
                con.close()
        return run

    def close(self) -> None:
        self.pool.close()


class PooledDBOnly(PooledDBBorrow):
    name = "DBUtils PooledDB: borrow + return"
    statement = False


class QueuePoolBorrow(Contender):
    name = "SQLAlchemy QueuePool: borrow each"

    def __init__(self, url: DatabaseURL, full_url: str, threads: int, conns: int) -> None:
        self.pool = QueuePool(lambda: raw_connect(url), pool_size=conns, max_overflow=0)

    def worker(self, index: int) -> Query:
        pool = self.pool
        use = statement if self.statement else None

        def run(nonce: int) -> None:
            con = pool.connect()
            try:
                if use is not None:
                    use(con, nonce)
            finally:
                con.close()
        return run

    def close(self) -> None:
        self.pool.dispose()


class QueuePoolOnly(QueuePoolBorrow):
    name = "SQLAlchemy QueuePool: borrow + return"
    statement = False


def run_round(contender: Contender, threads: int,
              ops: int) -> tuple[float, float, list[float]]:
    """Every thread runs *ops* operations; returns wall seconds, this process's CPU seconds
    and the latencies."""
    barrier = threading.Barrier(threads + 1)
    results: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        query = contender.worker(index)
        lat = results[index]
        nonce = index * 10_000_000
        clock = time.perf_counter
        barrier.wait()
        try:
            for _ in range(ops):
                nonce += 1
                start = clock()
                query(nonce)
                lat.append(clock() - start)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.join(120)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if errors:
        raise errors[0]
    return elapsed, cpu, [x for lat in results for x in lat]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Figures = tuple[float, float, float]  # median wall µs/op, median client CPU µs/op, p99 µs


def measure(kinds: t.Sequence[type[Contender]], url: DatabaseURL, full_url: str, threads: int,
            conns: int, rounds: int, ops: int) -> dict[str, Figures]:
    """Each contender's median wall and CPU time per operation and its p99 latency (µs)."""
    contenders = [kind(url, full_url, threads, conns) for kind in kinds]
    per_op: dict[str, list[float]] = {c.name: [] for c in contenders}
    cpu_op: dict[str, list[float]] = {c.name: [] for c in contenders}
    lats: dict[str, list[float]] = {c.name: [] for c in contenders}
    try:
        for contender in contenders:  # warm-up: open every connection, fill caches
            run_round(contender, threads, max(50, ops // 10))
        for r in range(rounds):
            shift = r % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                elapsed, cpu, latencies = run_round(contender, threads, ops)
                per_op[contender.name].append(elapsed / (ops * threads) * 1e6)
                cpu_op[contender.name].append(cpu / (ops * threads) * 1e6)
                lats[contender.name].extend(latencies)
    finally:
        for contender in contenders:
            contender.close()
    return {name: (statistics.median(values), statistics.median(cpu_op[name]),
                   percentile(lats[name], 0.99) * 1e6) for name, values in per_op.items()}


LAYERS: list[type[Contender]] = [
    Dedicated, TrackedDriver, BorrowedRawLayer, HandleCursor, HandleScalar, PoolkitBorrow,
    PoolkitScalarBorrow, PoolkitAlwaysReset, PoolkitPrometheus, PooledDBBorrow, QueuePoolBorrow,
    LifoBorrow,
    BorrowOnly, PooledDBOnly, QueuePoolOnly, LifoOnly]
SHARED: list[type[Contender]] = [
    Dedicated, PoolkitBorrow, PoolkitScalarBorrow, PooledDBBorrow, QueuePoolBorrow, LifoBorrow]
ROLLBACK: list[type[Contender]] = [
    Dedicated, PoolkitBorrow, PoolkitAwaitedRollback, PoolkitAutocommit, DedicatedAutocommit,
    PooledDBBorrow]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def bench_layers(url: DatabaseURL, full_url: str, rounds: int, ops: int) -> None:
    got = measure(LAYERS, url, full_url, 1, 1, rounds, ops)
    raw, raw_cpu, _ = got[Dedicated.name]
    print(f"\n1 thread, 1 connection: {rounds} rounds × {ops:,} operations, medians (wall: "
          "what a caller waits; CPU: this process's own work, the server's excluded)")
    print(f"  {'layer':38} {'µs/op':>7} {'ratio':>6} {'CPU µs':>7} {'added':>7} {'p99 µs':>7}")
    for kind in LAYERS:
        us, cpu, p99 = got[kind.name]
        if kind.statement:
            print(f"  {kind.name:38} {us:7.1f} {raw / us:5.2f}× {cpu:7.1f} {cpu - raw_cpu:+7.1f} "
                  f"{p99:7.0f}")
        else:
            print(f"  {kind.name:38} {us:7.1f} {'':>6} {cpu:7.1f} {'':>7} {p99:7.0f}")
    ratio = raw / got[PoolkitBorrow.name][0]
    only = got[BorrowOnly.name][0]
    lifo = got[LifoOnly.name][0]
    added = {kind.name: got[kind.name][1] - raw_cpu
             for kind in (HandleCursor, BorrowedRawLayer, HandleScalar)}
    print(f"  goal borrow + statement + return ≥ 0.90× raw: {verdict(ratio >= 0.90)} "
          f"({ratio:.2f}×)")
    print(f"  goal borrow + return ≤ 5 µs: {verdict(only <= 5)} ({only:.1f} µs; a bare "
          f"LifoQueue {lifo:.1f} µs in the same run)")
    worst = max(added.values())
    print(f"  goal ≤ 3 µs (CPU) per statement over raw on a borrowed handle: "
          f"{verdict(worst <= 3)} (" + ", ".join(f"{name.split(',')[0]} {value:+.1f}"
                                                for name, value in added.items()) + ")")


def bench_shared(url: DatabaseURL, full_url: str, rounds: int, ops: int, threads: int,
                 conns: int) -> None:
    got = measure(SHARED, url, full_url, threads, conns, rounds, ops)
    raw = got[Dedicated.name][0]
    print(f"\n{threads} threads / {conns} connections ({threads} dedicated raw connections): "
          f"{rounds} rounds × {ops:,} operations per thread, medians")
    print(f"  {'contender':38} {'ops/s':>8} {'ratio':>6} {'p99 ms':>7} {'CPU µs':>7}")
    for kind in SHARED:
        us, cpu, p99 = got[kind.name]
        print(f"  {kind.name:38} {1e6 / us:8,.0f} {raw / us:5.2f}× {p99 / 1000:7.2f} "
              f"{cpu:7.1f}")
    ratio = raw / got[PoolkitBorrow.name][0]
    print(f"  goal borrow + statement + return ≥ 0.90× raw: {verdict(ratio >= 0.90)} "
          f"({ratio:.2f}×)")


def bench_rollback(url: DatabaseURL, full_url: str, rounds: int, ops: int) -> None:
    for threads, conns in ((1, 1), (16, 8)):
        got = measure(ROLLBACK, url, full_url, threads, conns, rounds, ops)
        raw = got[Dedicated.name][0]
        print(f"\nthe read snapshot's ROLLBACK, {threads} thread(s) / {conns} connection(s)")
        for kind in ROLLBACK:
            us, cpu, _ = got[kind.name]
            print(f"  {kind.name:38} {us:7.1f} µs/op {raw / us:5.2f}× raw, CPU {cpu:6.1f} µs")


def bench_bookkeeping() -> None:
    """What recording a borrow's holder costs per checkout (for PoolTimeout's message)."""
    from poolkit.pool.holders import record_holder

    class Con:
        poolkit_where = None
        poolkit_label = None

    con, where = Con(), (bench_bookkeeping.__code__, 0)
    n = 1_000_000
    per = min(timeit.repeat(lambda: record_holder(con, where, "view 'index'"), number=n,
                            repeat=5)) / n
    empty = min(timeit.repeat(lambda: None, number=n, repeat=5)) / n
    print(f"\nholder bookkeeping per borrow (PoolTimeout's message): {(per - empty) * 1e9:.0f} ns "
          f"(goal ≤ 1 µs: {verdict(per - empty <= 1e-6)})")

# -- dirty borrows ------------------------------------------------------------------------------
def dirty_on(cur: t.Any, nonce: int) -> None:
    cur.execute("SET @v = %s", (nonce,))
    cur.execute("SELECT @v")
    if cur.fetchone()[0] != nonce:
        raise AssertionError("wrong row")


class DedicatedDirty(Dedicated):
    name = "raw PyMySQL, dirty"

    def worker(self, index: int) -> Query:
        con = self.cons[index]

        def run(nonce: int) -> None:
            cur = con.cursor()
            dirty_on(cur, nonce)
            cur.close()
        return run


class PooledDBDirty(PooledDBBorrow):
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


class PoolkitDirty(PoolkitBorrow):
    name = "poolkit, dirty (full reset)"

    def worker(self, index: int) -> Query:
        pool = self.pool

        def run(nonce: int) -> None:
            with pool.connection() as conn:
                cur = conn.cursor()
                dirty_on(cur, nonce)
                cur.close()
        return run


DIRTY: list[type[Contender]] = [DedicatedDirty, PooledDBDirty, PoolkitDirty]


def bench_dirty(url: DatabaseURL, full_url: str, threads: int, conns: int, rounds: int,
                ops: int) -> None:
    got = measure(DIRTY, url, full_url, threads, conns, rounds, ops)
    raw = got[DedicatedDirty.name][0]
    print(f"\ndirty borrows (SET @v + SELECT @v), {threads} thread(s) / {conns} connection(s)")
    for kind in DIRTY:
        us, cpu, _ = got[kind.name]
        print(f"  {kind.name:38} {us:7.1f} µs/op {raw / us:5.2f}× raw, CPU {cpu:6.1f} µs")
    print("  (PooledDB hands @v on to the next borrower; poolkit resets the whole session)")


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
    parser.add_argument("--ops", type=int, default=3000, help="per contender per round")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--spike", action="store_true", help="also run the connect spike")
    parser.add_argument("--spike-only", action="store_true")
    parser.add_argument("--dirty", action="store_true", help="also run the dirty borrows")
    parser.add_argument("--no-rollback", action="store_true",
                        help="skip the ROLLBACK options")
    args = parser.parse_args()
    full_url = os.environ.get("POOLKIT_DATABASE_URL", DEFAULT_URL)
    url = parse_url(full_url)
    print(f"server {url.masked()}, PyMySQL {pymysql.VERSION_STRING}, Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if not args.spike_only:
        bench_layers(url, full_url, args.rounds, args.ops)
        bench_shared(url, full_url, args.rounds, max(100, args.ops // args.threads * 2),
                     args.threads, args.connections)
        if not args.no_rollback:
            bench_rollback(url, full_url, args.rounds, args.ops // 4)
        bench_bookkeeping()
        if args.dirty:
            for threads, conns in ((1, 1), (16, 8)):
                bench_dirty(url, full_url, threads, conns, args.rounds, args.ops // 4)
    if args.spike or args.spike_only:
        spike(url)


if __name__ == "__main__":
    main()
