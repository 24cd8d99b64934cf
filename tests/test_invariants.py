"""The pool's invariants under a seeded random workload (issue 10, "Tests").

32 threads borrow from a pool of 8 in rounds. Each round every thread runs one to three random
actions: clean and dirty borrows (user variables, sql_mode, time zone, isolation, autocommit,
temporary tables), exceptions inside ``with`` blocks, transactions that commit, roll back or
are returned open, slow queries and handles held into the next round (so waiters time out),
handles dropped without ``close()``, and now and then a ``fork()`` while holding an open
transaction. Meanwhile an admin connection KILLs random pool connections. Between rounds,
with every thread parked, the main thread checks:

* no connection was held by two borrowers (same pooled object or same server session);
* the process's open sockets to the server == ``stats()["size"]`` == opened − closed;
* ``stats()["in_use"]`` == the handles alive; nobody waiting, nothing opening;
* every PoolTimeout came within its deadline + 50 ms (plus any stall of the whole process that
  a canary thread measured at that moment: the machine's delay, not the pool's);
* no borrower saw session state that another left behind;
* every committed row is there, no rolled-back row is;
* a checkout interrupted by a signal while waiting (SIGALRM raising, as a request time limit
  does) leaves no ghost waiter: the whole pool can be checked out again at once; a checkout on
  the exhausted pool times out on time.

The workload is drawn from ``POOLKIT_STRESS_SEED`` (random if unset, printed and named in every
failure; thread interleavings are not reproducible, the workload is). ``POOLKIT_STRESS_SECONDS``
sets the duration (default 20).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import random
import signal
import sys
import threading
import time
import typing as t
import warnings

import pymysql
import pytest

from poolkit import Pool, PoolTimeout
from poolkit.testing.plugin import admin_connect
from poolkit.url import parse_url

pytestmark = [
    pytest.mark.stress,
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="counts sockets in /proc and forks (Linux; CI runs it)"),
]

THREADS = 32
MAX_CONNECTIONS = 8
TIMEOUT = 0.25  # POOLKIT_TIMEOUT: short, so that waiters time out often
LATE = 0.05  # a PoolTimeout may come this much after its deadline
#: Errors a borrower may see when an admin KILLed its connection.
KILLED_CODES = frozenset({1053, 1927, 2006, 2013, 2055})
ACTIONS = ("clean", "dirty", "raise", "commit", "rollback", "return_open", "hold", "drop", "slow")
WEIGHTS = (4, 6, 2, 3, 2, 2, 1, 1, 1)


class Boom(Exception):
    """Raised inside a ``with`` block on purpose."""


class Interrupted(BaseException):
    """What the SIGALRM handler raises, like a request time limit."""


def open_sockets(port: int) -> int:
    """This process's open TCP sockets whose remote port is *port* (Linux /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:[") and link[8:-1] in inodes:
                count += 1
    return count


class Run:
    """The state every thread shares, and the record of what went wrong."""

    def __init__(self, seed: int, pool: Pool, admin: t.Any,
                 baseline: dict[str, t.Any]) -> None:
        self.seed = seed
        self.pool = pool
        self.admin = admin
        self.baseline = baseline
        self.lock = threading.Lock()
        self.round = 0
        self.plan: list[list[str]] = []
        self.forker = -1
        self.stop = False
        self.violations: list[str] = []
        self.by_object: dict[int, str] = {}
        self.by_session: dict[int, str] = {}
        self.live = 0
        self.drops = 0
        self.kills = 0
        self.committed: set[int] = set()
        self.rolled_back: set[int] = set()
        self.uncertain: set[int] = set()
        self.counts: collections.Counter[str] = collections.Counter()
        self.max_late = 0.0
        self.next_id = collections.Counter[int]()
        self.recent: collections.deque[int] = collections.deque(maxlen=2 * MAX_CONNECTIONS)
        self.late: list[tuple[str, float, float]] = []  # PoolTimeouts past deadline + LATE
        self.stalls: collections.deque[tuple[float, float]] = collections.deque(maxlen=100_000)

    def watch_stalls(self) -> None:
        """Record how late a 5 ms sleep wakes: the machine's and the GIL's delay, not the pool's.

        2 shared cores and 32 threads can stall this process for longer than LATE; a late
        PoolTimeout is the pool's fault only when this thread was not delayed as much then.
        """
        while not self.stop:
            before = time.monotonic()
            time.sleep(0.005)
            after = time.monotonic()
            self.stalls.append((after, after - before - 0.005))

    def unexplained_lateness(self) -> list[str]:
        """The late PoolTimeouts that the process's own stalls do not explain."""
        found = []
        for who, started, ended in self.late:
            late = ended - started - TIMEOUT
            deadline = started + TIMEOUT
            stall = max((over for at, over in list(self.stalls)
                         if deadline <= at <= ended + 0.1), default=0.0)
            if late > LATE + stall:
                found.append(f"{who}: PoolTimeout {late * 1000:.0f} ms after its deadline "
                             f"(the process itself stalled at most {stall * 1000:.0f} ms then)")
            else:
                self.counts["late, machine stalled"] += 1
        self.late.clear()
        return found

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def row_id(self, worker: int) -> int:
        with self.lock:
            self.next_id[worker] += 1
            return worker * 10_000_000 + self.next_id[worker]

    def killed(self, error: BaseException) -> bool:
        """True for the errors a KILL explains (only once a KILL was sent)."""
        code = error.args[0] if error.args and isinstance(error.args[0], int) else None
        is_kill = ((isinstance(error, pymysql.OperationalError) and code in KILLED_CODES)
                   or (isinstance(error, pymysql.InterfaceError) and code == 0))
        return is_kill and self.kills > 0


class Borrow:
    """One checked-out handle, registered so that double lending is seen."""

    def __init__(self, run: Run, who: str) -> None:
        self.run = run
        self.who = who
        self.session = -1
        started = time.monotonic()
        try:
            self.conn = run.pool.connection()
        except PoolTimeout:
            ended = time.monotonic()
            late = ended - started - TIMEOUT
            with run.lock:
                run.counts["timeouts"] += 1
                run.max_late = max(run.max_late, late)
                if late > LATE:
                    run.late.append((who, started, ended))
            raise
        self.key = id(self.conn._con)
        with run.lock:
            run.live += 1
            other = run.by_object.get(self.key)
            run.by_object[self.key] = who
        if other is not None:
            run.violation(f"{who} got the pooled connection that {other} still holds")

    def check_clean(self) -> None:
        """What a fresh connection shows, nothing that an earlier borrower left."""
        row = self.conn.query_one(
            "SELECT CONNECTION_ID() AS session, @stress_mark AS mark, @@SESSION.sql_mode AS "
            "sql_mode, @@SESSION.time_zone AS time_zone, @@SESSION.tx_isolation AS isolation, "
            "@@SESSION.autocommit AS autocommit, DATABASE() AS db")
        assert row is not None
        self.session = row.pop("session")
        run = self.run
        with run.lock:
            other = run.by_session.get(self.session)
            run.by_session[self.session] = self.who
            run.recent.append(self.session)
        if other is not None:
            run.violation(f"{self.who} got server session {self.session} that {other} holds")
        if row != run.baseline:
            left = {k: v for k, v in row.items() if run.baseline[k] != v}
            run.violation(f"{self.who} (session {self.session}) saw state left behind: {left}")

    def dirty(self, rng: random.Random) -> None:
        """Change the session the ways an application does."""
        conn = self.conn
        conn.execute("SET @stress_mark = %s", (self.who,))
        conn.execute("SET SESSION sql_mode = 'ANSI_QUOTES', SESSION time_zone = '+05:00'")
        if rng.random() < 0.5:
            conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        if rng.random() < 0.3:
            try:
                conn.execute("CREATE TEMPORARY TABLE stress_scratch (x INT)")
            except pymysql.OperationalError as error:
                if error.args[0] != 1050:
                    raise
                self.run.violation(f"{self.who} found another borrower's temporary table")
        if rng.random() < 0.2:
            conn.raw.autocommit(True)

    def close(self) -> None:
        run = self.run
        with run.lock:
            run.by_object.pop(self.key, None)
            if run.by_session.get(self.session) == self.who:
                del run.by_session[self.session]
            run.live -= 1
        self.conn.close()

    def drop(self) -> None:
        """Lose the handle without close(): the garbage collector gives it back."""
        run = self.run
        with run.lock:
            run.by_object.pop(self.key, None)
            if run.by_session.get(self.session) == self.who:
                del run.by_session[self.session]
            run.live -= 1
            run.drops += 1
        del self.conn  # the last reference: returned right here, with a ResourceWarning


# -- the actions ------------------------------------------------------------------------------
def act(run: Run, worker: int, action: str, rng: random.Random) -> Borrow | None:
    """Run one action; returns a handle to hold into the next round, if any."""
    who = f"worker {worker} ({action})"
    borrow = Borrow(run, who)
    keep = False
    try:
        borrow.check_clean()
        if action == "clean":
            assert borrow.conn.scalar("SELECT %s + 1", (worker,)) == worker + 1
        elif action == "dirty":
            borrow.dirty(rng)
        elif action == "raise":
            with pytest.raises(Boom), borrow.conn:  # returned by the with block
                borrow.dirty(rng)
                raise Boom
        elif action in ("commit", "rollback", "return_open"):
            transact(run, borrow, worker, action)
        elif action == "slow":  # a slow query: holds its connection past others' deadlines
            assert borrow.conn.scalar("SELECT SLEEP(%s)", (TIMEOUT * 1.5,)) == 0
        elif action == "hold":
            borrow.conn.execute("SET @stress_mark = %s", (who,))
            keep = True
            run.count(action)
            return borrow
        elif action == "drop":
            borrow.dirty(rng)
            keep = True
            borrow.drop()
        run.count(action)
    finally:
        if not keep:
            borrow.close()
    return None


def transact(run: Run, borrow: Borrow, worker: int, action: str) -> None:
    row = run.row_id(worker)
    insert = "INSERT INTO stress_rows (id, worker) VALUES (%s, %s)"
    conn = borrow.conn
    if action == "return_open":  # left to the pool to roll back on return
        conn.execute(insert, (row, worker))
        with run.lock:
            run.rolled_back.add(row)
        return
    phase = "insert"
    try:
        with conn.transaction():
            conn.execute(insert, (row, worker))
            if action == "rollback":
                raise Boom
            phase = "commit"
    except Boom:
        with run.lock:
            run.rolled_back.add(row)
        return
    except Exception:
        with run.lock:
            (run.uncertain if phase == "commit" else run.rolled_back).add(row)
        raise
    with run.lock:
        run.committed.add(row)


def finish_hold(run: Run, borrow: Borrow) -> None:
    """The held handle's session is still ours: nobody else was lent it meanwhile."""
    try:
        row = borrow.conn.query_one("SELECT CONNECTION_ID() AS session, @stress_mark AS mark")
        assert row is not None
        if row["session"] != borrow.session and run.kills:
            pass  # KILLed while held: the statement was re-run on a fresh connection
        elif row["mark"] != borrow.who:
            run.violation(f"{borrow.who}: held session {row['session']} shows mark "
                          f"{row['mark']!r}")
    except Exception as error:
        if not run.killed(error):
            run.violation(f"{borrow.who}: held handle failed: {error!r}")
    finally:
        borrow.close()


def act_fork(run: Run, worker: int) -> None:
    """fork() while holding an open transaction; the child's copy must never touch it."""
    row = run.row_id(worker)
    borrow = Borrow(run, f"worker {worker} (fork)")
    try:
        borrow.check_clean()
        borrow.conn.execute("INSERT INTO stress_rows (id, worker) VALUES (%s, %s)", (row, worker))
        pid = os.fork()
        if pid == 0:  # the child: only this thread exists here
            code = 2
            try:
                borrow.conn.close()  # the inherited handle: detached, not rolled back
                with run.pool.connection() as conn:
                    seen = conn.scalar("SELECT COUNT(*) FROM stress_rows WHERE id = %s", (row,))
                    code = 0 if seen == 0 else 1  # the parent's row is not committed yet
            finally:
                os._exit(code)
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            run.violation("the forked child hung (killed after 15 s)")
        if status is not None and os.waitstatus_to_exitcode(status) != 0:
            run.violation(f"the forked child failed: exit {os.waitstatus_to_exitcode(status)}")
        borrow.conn.commit()
        with run.lock:
            run.committed.add(row)
        run.count("fork")
    finally:
        borrow.close()


def worker_loop(run: Run, worker: int, start: threading.Barrier, end: threading.Barrier) -> None:
    held: Borrow | None = None
    try:
        while True:
            start.wait()
            if run.stop:
                return
            rng = random.Random(f"{run.seed}:{run.round}:{worker}")
            if held is not None:
                finish_hold(run, held)
                held = None
            for action in run.plan[worker]:
                if action == "hold" and held is not None:
                    action = "clean"  # one held handle per worker
                try:
                    held = act(run, worker, action, rng) or held
                except PoolTimeout:
                    pass  # measured in Borrow
                except Exception as error:
                    if not run.killed(error):
                        run.violation(f"worker {worker} ({action}): {error!r}")
            if run.forker == worker:
                try:
                    act_fork(run, worker)
                except PoolTimeout:
                    pass
                except Exception as error:
                    run.violation(f"worker {worker} (fork): {error!r}")
            end.wait()
    except threading.BrokenBarrierError:
        return
    finally:
        if held is not None:
            with contextlib.suppress(Exception):
                held.close()


# -- the checks between rounds ----------------------------------------------------------------
def kill_one(run: Run, rng: random.Random) -> None:
    # Candidates: sessions borrowed now and the ones seen lately (idle ones among them). Not
    # from information_schema.PROCESSLIST: polling it under load is what MariaDB 10.11 crashed
    # on once, during a shutdown.
    with run.lock:
        ids = sorted(set(run.by_session) | set(run.recent))
    if not ids:
        return
    run.kills += 1
    with run.admin.cursor() as cur:
        try:
            cur.execute(f"KILL CONNECTION {rng.choice(ids)}")
        except pymysql.OperationalError as error:
            if error.args[0] != 1094:  # unknown thread: it ended meanwhile
                raise


def check(run: Run, port: int, sockets_before: int) -> None:
    def fail(text: str) -> t.NoReturn:
        raise AssertionError(f"POOLKIT_STRESS_SEED={run.seed} round {run.round}: {text}")

    run.violations.extend(run.unexplained_lateness())
    if run.violations:
        fail("; ".join(run.violations[:10]))
    # A dropped handle that an exception's traceback keeps in a reference cycle is given back
    # only when the cycle is collected.
    gc.collect()
    stats = run.pool.stats()
    if stats["in_use"] != run.live:
        fail(f"in_use {stats['in_use']} but {run.live} handles alive ({stats})")
    if stats["waiting"] or stats["opening"]:
        fail(f"nobody waits or opens now, yet {stats}")
    if stats["connections_opened"] - stats["connections_closed"] != stats["size"]:
        fail(f"opened - closed != size: {stats}")
    sockets = open_sockets(port) - sockets_before
    if sockets != stats["size"]:
        fail(f"{sockets} open sockets but size {stats['size']}")
    if stats["dropped"] != run.drops:
        fail(f"{run.drops} handles dropped, stats()['dropped'] = {stats['dropped']}")
    with run.admin.cursor() as cur:
        cur.execute("SELECT id FROM stress_rows")
        present = {r[0] for r in cur.fetchall()}
    if run.committed - present:
        fail(f"committed rows missing: {sorted(run.committed - present)[:10]}")
    if run.rolled_back & present:
        fail(f"rolled-back rows present: {sorted(run.rolled_back & present)[:10]}")


def interrupted_wait(run: Run) -> None:
    """Exhaust the pool, interrupt a waiting checkout with a signal, then take it all again."""
    pool = run.pool
    armed = threading.Event()

    def alarm(signum: int, frame: t.Any) -> None:
        if armed.is_set():
            armed.clear()
            raise Interrupted

    held = take_all(run, "main")
    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        armed.set()
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT / 5)
        try:
            Borrow(run, "main (interrupted)").close()
            run.violation("a checkout on an exhausted pool succeeded")
        except Interrupted:
            run.count("interrupted")
        except PoolTimeout:
            pass  # the machine stalled past the alarm
    finally:
        armed.clear()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        for borrow in held:
            borrow.close()
    if pool.stats()["waiting"]:
        run.violation(f"a ghost waiter after the interrupt: {pool.stats()}")
    held = take_all(run, "main")
    try:
        Borrow(run, "main (timed out)").close()
        run.violation("a checkout on an exhausted pool succeeded")
    except PoolTimeout:
        pass  # its lateness is checked in Borrow
    finally:
        for borrow in held:
            borrow.close()
    for borrow in take_all(run, "main, after the interrupt,"):
        borrow.close()


def take_all(run: Run, who: str) -> list[Borrow]:
    """Check out every connection the workers do not hold (each must come at once)."""
    taken: list[Borrow] = []
    try:
        for _ in range(MAX_CONNECTIONS - run.live):
            taken.append(Borrow(run, who))
    except PoolTimeout:
        run.violation(f"{who} could take only {len(taken)} of the {MAX_CONNECTIONS} "
                      f"connections that nobody holds: {run.pool.stats()}")
    return taken


# -- the test ---------------------------------------------------------------------------------
def test_pool_invariants_under_random_load(make_pool: t.Callable[..., Pool],
                                           make_database: t.Callable[[], str]) -> None:
    seed = int(os.environ.get("POOLKIT_STRESS_SEED") or random.SystemRandom().randrange(2**32))
    duration = float(os.environ.get("POOLKIT_STRESS_SECONDS", "20"))
    print(f"POOLKIT_STRESS_SEED={seed}")
    rng = random.Random(seed)
    url = make_database()
    parsed = parse_url(url)
    admin = admin_connect(parsed)
    try:
        with admin.cursor() as cur:
            cur.execute("CREATE TABLE stress_rows (id BIGINT PRIMARY KEY, worker INT) "
                        "ENGINE=InnoDB")
        sockets_before = open_sockets(parsed.port)
        pool = make_pool(POOLKIT_DATABASE_URL=url, POOLKIT_MAX_CONNECTIONS=MAX_CONNECTIONS,
                         POOLKIT_TIMEOUT=TIMEOUT)
        with pool.connection() as conn:
            baseline = conn.query_one(
                "SELECT NULL AS mark, @@SESSION.sql_mode AS sql_mode, @@SESSION.time_zone AS "
                "time_zone, @@SESSION.tx_isolation AS isolation, @@SESSION.autocommit AS "
                "autocommit, DATABASE() AS db")
        assert baseline is not None
        run = Run(seed, pool, admin, baseline)
        start = threading.Barrier(THREADS + 1, timeout=60)
        end = threading.Barrier(THREADS + 1, timeout=60)
        threads = [threading.Thread(target=worker_loop, args=(run, n, start, end), daemon=True,
                                    name=f"stress-{n}") for n in range(THREADS)]
        with warnings.catch_warnings():
            # Dropped handles warn by design; Python >= 3.12 warns about fork() with threads.
            warnings.simplefilter("ignore", ResourceWarning)
            warnings.filterwarnings("ignore", ".*fork", DeprecationWarning)
            for thread in threads:
                thread.start()
            canary = threading.Thread(target=run.watch_stalls, daemon=True, name="stress-canary")
            canary.start()
            began = time.monotonic()
            try:
                while time.monotonic() - began < duration and run.round < 1000:
                    run.plan = [rng.choices(ACTIONS, WEIGHTS, k=rng.randint(1, 3))
                                for _ in range(THREADS)]
                    forking = run.round % 15 == 5
                    run.forker = rng.randrange(THREADS) if forking else -1
                    start.wait()
                    if not forking:  # a KILL would hit the child's connection too
                        for _ in range(rng.choice((0, 0, 1, 2))):
                            time.sleep(rng.uniform(0, 0.05))
                            kill_one(run, rng)
                    end.wait()
                    check(run, parsed.port, sockets_before)
                    if run.round % 4 == 3:
                        interrupted_wait(run)
                        check(run, parsed.port, sockets_before)
                    run.round += 1
                run.stop = True
                start.wait()
            finally:
                run.stop = True
                start.abort()
                end.abort()
                for thread in [*threads, canary]:
                    thread.join(timeout=30)
            gc.collect()
        check(run, parsed.port, sockets_before)
        elapsed = time.monotonic() - began
        print(f"stress: {run.round} rounds in {elapsed:.1f} s, {dict(run.counts)}, "
              f"kills {run.kills}, drops {run.drops}, max PoolTimeout lateness "
              f"{run.max_late * 1000:.0f} ms, longest stall of the process "
              f"{max((o for _, o in run.stalls), default=0) * 1000:.0f} ms, "
              f"stats {pool.stats()}")
        assert run.counts["fork"] >= 1 and run.counts["interrupted"] >= 1
        assert run.counts["timeouts"] >= 1 and run.kills >= 1
        assert len(run.committed) >= 10 and len(run.rolled_back) >= 10
    finally:
        admin.close()
