"""The load generator of ``flask pool-stress``: threads in this process, or in forked workers.

Every run is bounded three ways: a deadline, an optional request budget and :meth:`stop`.
Threads are daemons and joins are bounded, so a thread stuck on a corrupted shared socket
can delay the end of a run by a few seconds at most (then it is counted as hung).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import threading
import time
import typing as t
from dataclasses import dataclass

from .report import Load, WrongRow, error_key

#: Seconds a run may overrun its deadline while the last requests finish.
GRACE = 5.0


class Session(t.Protocol):
    """One strategy set up in one process: issues requests, knows its connect figures."""

    def request(self, nonce: str) -> None:
        """Send one request through the app; raise on error or :class:`WrongRow`."""

    def connect_figures(self) -> tuple[int, float, float | None]:
        """Connections opened, seconds spent connecting and CPU seconds of it (if known)."""

    def pool_figures(self) -> tuple[int, float, int] | None:
        """The pool's checkouts, seconds waited for a connection and timeouts (None: no pool)."""

    def abort(self) -> None:
        """Unblock threads stuck on a socket (the run is over)."""

    def close(self) -> None:
        """Release everything the session opened."""


@dataclass
class Tick:
    """What happened since the previous poll (latencies of successful requests)."""

    requests: int = 0
    errors: int = 0
    latencies: list[float] | None = None


class _ThreadLoad:
    __slots__ = ("errors", "failed", "latencies", "lost", "wrong")

    def __init__(self) -> None:
        self.latencies: list[float] = []  # successful requests
        self.failed: list[float] = []  # errors, wrong and lost rows
        self.errors: dict[str, int] = {}
        self.wrong = self.lost = 0


class LoadGenerator:
    """*threads* threads calling ``session.request`` until a deadline, a budget or :meth:`stop`."""

    def __init__(self, session: Session, threads: int, seconds: float,
                 budget: int | None = None, tag: str = "") -> None:
        self._session = session
        self._seconds = seconds
        self._budget = budget
        self._tag = tag or str(os.getpid())
        self._issued = itertools.count()
        self._stop = threading.Event()
        self._loads = [_ThreadLoad() for _ in range(threads)]
        self._threads = [threading.Thread(target=self._work, args=(i, load), daemon=True,
                                          name=f"poolkit-stress-{i}")
                         for i, load in enumerate(self._loads)]
        self._seen = [0] * threads
        self._failed_seen = [0] * threads
        self._errors_seen = 0
        self._started = self._deadline = 0.0
        self._finished_at: list[float] = []

    def start(self) -> None:
        """Start the threads; the deadline counts from now."""
        self._started = time.perf_counter()
        self._deadline = self._started + self._seconds
        for thread in self._threads:
            thread.start()

    def running(self) -> bool:
        """True while any load thread is alive."""
        return any(thread.is_alive() for thread in self._threads)

    def stop(self) -> None:
        """Ask every thread to stop after its current request."""
        self._stop.set()

    def poll(self) -> Tick:
        """Requests, errors and latencies since the previous poll (safe while running)."""
        tick = Tick(latencies=[])
        assert tick.latencies is not None
        errors = failed = 0
        for i, load in enumerate(self._loads):
            seen, now = self._seen[i], len(load.latencies)
            tick.latencies.extend(load.latencies[seen:now])
            self._seen[i] = now
            done = len(load.failed)
            failed += done - self._failed_seen[i]
            self._failed_seen[i] = done
            errors += sum(list(load.errors.values())) + load.wrong + load.lost
        tick.requests = len(tick.latencies) + failed
        tick.errors, self._errors_seen = errors - self._errors_seen, errors
        return tick

    def run(self, timeout: float) -> Load:
        """Start, wait for the end (at most *timeout* past the deadline) and return the load."""
        self.start()
        end = self._deadline + timeout
        while self.running() and time.perf_counter() < end:
            time.sleep(0.05)
        return self.finish()

    def finish(self, grace: float = GRACE) -> Load:
        """Stop, join (bounded by *grace* seconds, then abort the session) and sum up."""
        self.stop()
        hung = self._join(time.perf_counter() + grace)
        if hung:
            self._session.abort()
            hung = self._join(time.perf_counter() + 2.0)
        load = Load(hung_threads=hung)
        for part in self._loads:
            load.latencies.extend(part.latencies)
            load.failed_latencies.extend(part.failed)
            load.errors.update(part.errors)
            load.wrong_rows += part.wrong
            load.lost_rows += part.lost
        load.requests = len(load.latencies) + len(load.failed_latencies)
        ended = max(self._finished_at, default=time.perf_counter())
        load.elapsed = max(0.0, ended - self._started)
        return load

    def _join(self, until: float) -> int:
        for thread in self._threads:
            thread.join(max(0.0, until - time.perf_counter()))
        return sum(thread.is_alive() for thread in self._threads)

    def _work(self, index: int, load: _ThreadLoad) -> None:
        perf = time.perf_counter
        request = self._session.request
        budget = self._budget
        issued = self._issued
        stop = self._stop
        deadline = self._deadline
        prefix = f"{self._tag}-{index}-"
        latencies = load.latencies
        failed = load.failed
        errors = load.errors
        for n in itertools.count():
            if stop.is_set() or (budget is not None and next(issued) >= budget):
                break
            started = perf()
            if started >= deadline:
                break
            try:
                request(prefix + str(n))
            except WrongRow as wrong:
                if wrong.lost:
                    load.lost += 1
                else:
                    load.wrong += 1
                failed.append(perf() - started)
            except Exception as error:
                key = error_key(error)
                errors[key] = errors.get(key, 0) + 1
                failed.append(perf() - started)
            else:
                latencies.append(perf() - started)
        self._finished_at.append(perf())


@dataclass(frozen=True)
class Plan:
    """How long and how hard one strategy is driven."""

    threads: int
    seconds: float
    requests: int | None
    warmup: float


_Before = tuple[tuple[int, float, float | None], tuple[int, float, int] | None]


def _figures(session: Session) -> _Before:
    return session.connect_figures(), session.pool_figures()


def _with_connects(load: Load, session: Session, before: _Before) -> Load:
    opened, spent, cpu = session.connect_figures()
    connects, pool_before = before
    load.connections_opened = opened - connects[0]
    load.connect_time_total = spent - connects[1]
    if cpu is not None and connects[2] is not None:
        load.connect_cpu_total = cpu - connects[2]
    pool_now = session.pool_figures()
    if pool_now is not None and pool_before is not None:
        load.checkouts = pool_now[0] - pool_before[0]
        load.wait_time_total = pool_now[1] - pool_before[1]
        load.timeouts = pool_now[2] - pool_before[2]
    return load


class LocalLoad:
    """The load of one strategy in this process (``--workers 1``)."""

    def __init__(self, factory: t.Callable[[], Session], plan: Plan) -> None:
        self._factory = factory
        self._plan = plan
        self._session: Session | None = None
        self._generator: LoadGenerator | None = None
        self._before: _Before = ((0, 0.0, None), None)

    def prepare(self) -> None:
        """Set the strategy up and run the warm-up (not measured)."""
        self._session = self._factory()
        if self._plan.warmup > 0:
            LoadGenerator(self._session, self._plan.threads, self._plan.warmup).run(GRACE)

    def start(self) -> None:
        """Start the measured load."""
        assert self._session is not None
        self._before = _figures(self._session)
        plan = self._plan
        self._generator = LoadGenerator(self._session, plan.threads, plan.seconds, plan.requests)
        self._generator.start()

    def running(self) -> bool:
        """True while load threads run."""
        return self._generator is not None and self._generator.running()

    def poll(self) -> Tick:
        """Counts since the previous poll."""
        return self._generator.poll() if self._generator else Tick()

    def stop(self) -> None:
        """Stop early (Ctrl-C, hard deadline)."""
        if self._generator is not None:
            self._generator.stop()

    def finish(self) -> Load:
        """Join the threads, close the session, return the load."""
        session, generator = self._session, self._generator
        try:
            if session is None or generator is None:
                return Load()
            return _with_connects(generator.finish(), session, self._before)
        finally:
            if session is not None:
                session.close()


def _child(factory: t.Callable[[], Session], plan: Plan, budget: int | None, index: int,
           out: t.Any, go: t.Any) -> None:
    try:
        session = factory()
    except Exception as error:
        out.put(("failed", index, f"{type(error).__name__}: {error}"))
        return
    try:
        if plan.warmup > 0:
            LoadGenerator(session, plan.threads, plan.warmup).run(GRACE)
        out.put(("ready", index, None))
        if not go.wait(60.0):
            return
        before = _figures(session)
        generator = LoadGenerator(session, plan.threads, plan.seconds, budget)
        generator.start()
        while generator.running():
            time.sleep(0.25)
            tick = generator.poll()
            out.put(("tick", index, (tick.requests, tick.errors, tick.latencies)))
            if go.is_set() is False:  # the parent cleared it: stop early
                generator.stop()
        load = _with_connects(generator.finish(), session, before)
        out.put(("done", index, load))
    finally:
        session.close()


class ProcessLoad:
    """The load of one strategy in *workers* forked processes, each with its own connections."""

    def __init__(self, factory: t.Callable[[], Session], plan: Plan, workers: int) -> None:
        self._context = multiprocessing.get_context("fork")
        self._factory = factory
        self._plan = plan
        self._workers = workers
        self._queue: t.Any = self._context.Queue()
        self._go = self._context.Event()
        self._processes: list[t.Any] = []
        self._done: dict[int, Load] = {}
        self._pending = Tick(latencies=[])

    def prepare(self) -> None:
        """Fork the workers; each sets the strategy up and warms up; wait until all are ready."""
        plan = self._plan
        for index in range(self._workers):
            budget = None
            if plan.requests is not None:
                budget = plan.requests // self._workers + (index < plan.requests % self._workers)
            process = self._context.Process(
                target=_child, name=f"poolkit-stress-worker-{index}", daemon=True,
                args=(self._factory, plan, budget, index, self._queue, self._go))
            process.start()
            self._processes.append(process)
        ready = 0
        until = time.monotonic() + plan.warmup + 60.0
        while ready < self._workers:
            kind, index, payload = self._get(until)
            if kind == "failed":
                self._abort()
                raise RuntimeError(f"worker {index} could not start: {payload}")
            ready += kind == "ready"

    def _get(self, until: float) -> tuple[str, int, t.Any]:
        remaining = until - time.monotonic()
        if remaining <= 0:
            self._abort()
            raise RuntimeError("the worker processes did not answer in time")
        try:
            return t.cast(tuple[str, int, t.Any], self._queue.get(timeout=remaining))
        except queue.Empty:
            self._abort()
            raise RuntimeError("the worker processes did not answer in time") from None

    def start(self) -> None:
        """Let every worker start its measured load at once."""
        self._go.set()

    def running(self) -> bool:
        """True until every worker reported its load."""
        self._drain()
        return len(self._done) < self._workers and any(p.is_alive() for p in self._processes)

    def _drain(self) -> None:
        while True:
            try:
                kind, index, payload = self._queue.get_nowait()
            except queue.Empty:
                return
            if kind == "tick":
                requests, errors, latencies = payload
                self._pending.requests += requests
                self._pending.errors += errors
                assert self._pending.latencies is not None
                self._pending.latencies.extend(latencies)
            elif kind == "done":
                self._done[index] = payload

    def poll(self) -> Tick:
        """Counts since the previous poll, summed over the workers."""
        self._drain()
        tick, self._pending = self._pending, Tick(latencies=[])
        return tick

    def stop(self) -> None:
        """Ask the workers to stop early."""
        self._go.clear()

    def finish(self) -> Load:
        """Collect every worker's load (bounded wait), reap the processes, merge."""
        until = time.monotonic() + self._plan.seconds + 2 * GRACE
        while len(self._done) < self._workers and time.monotonic() < until:
            if not any(p.is_alive() for p in self._processes):
                self._drain()
                break
            time.sleep(0.05)
            self._drain()
        self._abort(grace=2.0)
        load = Load()
        for part in self._done.values():
            load.merge(part)
        missing = self._workers - len(self._done)
        if missing:
            load.errors[f"WorkerLost: {missing} worker process(es) did not report"] += 1
        return load

    def _abort(self, grace: float = 0.0) -> None:
        for process in self._processes:
            process.join(grace)
            if process.is_alive():
                process.terminate()
                process.join(2.0)
        self._queue.close()
