"""Run a planned file (:mod:`.plan`) on N connections at once, myloader-style.

The calling thread reads and plans the file, streaming, and queues *jobs*: a few consecutive
statements of one unit (at most :data:`JOB_BYTES`; a bigger statement is a job by itself).
At most :data:`QUEUE_BYTES` of statements wait at any time, so a 1 GB dump loads in a few MB.
N worker threads, one connection each, take jobs under one lock:

* the first job of a table unit binds a free connection to the unit until the unit is done
  (its statements change that connection's session: ``SET character_set_client``, locks);
* an ``ordered`` job waits until the unit's earlier jobs are done; ``rows`` jobs of the same
  run go to any connection not bound to another unit, at the same time;
* a unit with ``fence`` waits for every earlier unit; a barrier waits for everything before it
  and everything after it waits for the barrier;
* before a job, its connection replays the session log (the file's ``SET``/``USE``/``COMMIT``
  statements before that job) from where it stopped, so every connection has the session a
  serial load would have there; at the end of the file every connection replays the rest
  (the epilogue's ``SET AUTOCOMMIT=1`` commits what it holds).

The first failed statement stops the run: the statements other workers are on get ``KILL
QUERY`` and no more jobs start. Ctrl-C stops every worker the same way (:meth:`Loader.stop`).
The result tells how many statements ran and where a serial re-run may resume: the start of
the first unit that is not complete (a unit begins with ``DROP TABLE IF EXISTS``, so it can
run again), or the failed statement of a barrier run; ``exact`` is False when a data unit
(which cannot run twice) after that point has started.
"""

from __future__ import annotations

import collections
import threading
import time
import typing as t

from ..pool.drivers import error_code, is_disconnect
from . import coalesce
from .apply import BATCH_BYTES
from .coalesce import settle_point
from .facts import ServerFacts
from .files import SqlFile
from .jobs import Job, ParallelResult, Unit
from .outcome import StatementError, locate
from .plan import BARRIER, ROWS, SESSION, SKIP, Step, plan, session_state
from .roundtrip import batchable, drop
from .roundtrip import runner as apply_runner
from .split import CHUNK_SIZE, split_file
from .statement import Statement

if t.TYPE_CHECKING:
    pass

#: A job holds consecutive statements of one unit up to this many bytes (its round trips are
#: apply's batches); a job of rows, which any connection may take, up to ROWS_JOB_BYTES, so
#: that a table's rows spread evenly.
JOB_BYTES = 1 << 20
ROWS_JOB_BYTES = 64 * 1024
#: Statements planned but not yet run, at most (one bigger statement may exceed it).
QUEUE_BYTES = 16 * 1024 * 1024
#: How long the reader waits for all workers after Ctrl-C before giving up on them.
STOP_SECONDS = 10.0

#: Given a connection: (send SQL, handing each result to a callback; result -> (column names,
#: rows) or None), apply's by default.
Runner = t.Callable[[t.Any], tuple[t.Callable[[bytes, t.Callable[[t.Any], None]], None],
                                  t.Callable[[t.Any], t.Any]]]
OnRows = t.Callable[[Statement, list[str], list[tuple[t.Any, ...]]], None]
OnStatement = t.Callable[[Statement, float], None]


_OFF = frozenset({"0", "off", "false"})


def bulk_insert_locks(state: tuple[tuple[str, str], ...]) -> bool:
    """Whether rows inserted in *state* lock their table until the file's ``COMMIT``.

    MariaDB (10.6+) loads an empty InnoDB table in bulk when ``unique_checks`` and
    ``foreign_key_checks`` are 0 inside a transaction (``SET autocommit=0`` dumps: world,
    sakila's data), holding a table lock until it commits: a second connection inserting into
    that table waits for it. Such a table's rows stay on one connection.
    """
    values = {name: value.strip("'\"").lower() for name, value in state}
    return all(values.get(name) in _OFF
               for name in ("autocommit", "unique_checks", "foreign_key_checks"))


class _Replay:
    """What an idle worker does: replay the session log up to its current end."""


_REPLAY = _Replay()


class Worker:
    """One connection and the thread that runs jobs on it."""

    def __init__(self, number: int, raw: t.Any, runner: Runner) -> None:
        self.number = number
        self.raw = raw
        self.send, self.rows_of = runner(raw)
        self.applied = 0  # how much of the session log this connection has run
        self.bound: Unit | None = None
        self.current: Step | None = None
        self.thread: threading.Thread | None = None


class Loader:
    """Loads files on the connections *raws* (already in the database, autocommit on).

    *runner* makes each connection's statement sender (see :data:`Runner`); *kill* sends
    ``KILL QUERY`` for a connection from another one. The session log lives as long as the
    loader, so a second file continues the session the first one left, as a serial load does.
    """

    def __init__(self, raws: t.Sequence[t.Any], runner: Runner | None = None,
                 kill: t.Callable[[t.Any], object] = lambda raw: None,
                 on_statement: OnStatement | None = None, on_rows: OnRows | None = None,
                 batch_bytes: int = BATCH_BYTES, comments: bool = False,
                 queue_bytes: int = QUEUE_BYTES, job_bytes: int = JOB_BYTES,
                 rows_job_bytes: int = ROWS_JOB_BYTES) -> None:
        if not raws:
            raise ValueError("a parallel load needs at least one connection")
        # apply's sender; result rows as the server's bytes, as the client prints them
        runner = runner or (lambda raw: apply_runner(raw, True))
        self.workers = [Worker(i, raw, runner) for i, raw in enumerate(raws)]
        self.kill = kill
        self.on_statement = on_statement
        self.on_rows = on_rows
        self.batch_bytes = batch_bytes
        self.comments = comments
        self.queue_bytes = queue_bytes
        self.job_bytes = job_bytes
        self.rows_job_bytes = rows_job_bytes
        self.log: list[Step] = []
        #: The session after the first i log statements, as far as the planner reads SETs:
        #: a connection further along may still take rows queued at i if both are equal.
        self.states: list[tuple[tuple[str, str], ...]] = [()]
        self.cond = threading.Condition()
        self.lock = threading.Lock()  # for on_statement
        #: INSERTs that may be coalesced (decided when sent, from the server: see _send).
        self.finder = coalesce.Coalescer()

    def append_log(self, step: Step) -> None:
        """Add a session statement (callers hold no lock or :attr:`cond`)."""
        with self.cond:
            self.log.append(step)
            self.states.append(session_state(self.states[-1], step.stmt, len(self.log)))

    # -- the reader -------------------------------------------------------------------------
    def load(self, file: SqlFile, *, statements: t.Iterable[Statement] | None = None,
             on_progress: t.Callable[[int], None] | None = None,
             chunk_size: int = CHUNK_SIZE) -> ParallelResult:
        """Run every statement of *file*; Ctrl-C (KeyboardInterrupt) propagates after the
        workers stopped, with the partial result on the exception's ``poolkit_result``."""
        result = ParallelResult(file)
        self.result = result
        self.units: collections.OrderedDict[int, Unit] = collections.OrderedDict()
        self.queued = 0
        self.failed: list[tuple[int, StatementError]] = []
        self.stopping = False
        self.reading = True
        self.ran = 0
        self.bad_log = len(self.log) + (1 << 62)  # the first log statement that failed
        self.started_units: list[Unit] = []
        self.stopped_at: dict[int, Step] = {}  # worker -> the step it is on
        started = time.perf_counter()
        source = statements if statements is not None else split_file(
            file.path, chunk_size=chunk_size, comments=self.comments)
        for worker in self.workers:
            worker.bound = None
            worker.thread = threading.Thread(target=self._work, args=(worker,), daemon=True,
                                             name=f"poolkit-initdb-{worker.number}")
            worker.thread.start()
        try:
            try:
                self._read(source, result, on_progress)
            finally:
                with self.cond:
                    self.reading = False
                    self.cond.notify_all()
            self._join(None)
            if not self.failed:
                self._replay_rest()
            else:
                self._settle()
        except BaseException as error:
            self.stop()
            self._settle()
            result.interrupted = isinstance(error, KeyboardInterrupt)
            self._finish(result, started)
            error.poolkit_result = result  # type: ignore[attr-defined]
            raise
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        self._finish(result, started)
        return result

    def _read(self, source: t.Iterable[Statement], result: ParallelResult,
              on_progress: t.Callable[[int], None] | None) -> None:
        job: Job | None = None
        top = result.file.path
        for step in plan(source):
            if self.failed:
                break
            if on_progress is not None and step.stmt.path == top:
                on_progress(step.stmt.end_offset)
            if step.kind == SESSION:
                self._submit(job)
                job = None
                self.append_log(step)
                with self.cond:
                    self.ran += 1
                continue
            unit = self.units.get(step.unit)
            if unit is None:
                self._submit(job)
                job = None
                kind = BARRIER if step.kind == BARRIER else "table"
                unit = Unit(step.unit, kind, step, step.fence or kind != "table", len(self.log))
                self.started_units.append(unit)
                with self.cond:
                    for earlier in self.units.values():
                        earlier.closed = True
                    self.units[unit.id] = unit
                    self.cond.notify_all()
            kind = ROWS if step.kind == ROWS else "ordered"
            size = len(step.stmt.sql)
            limit = self.rows_job_bytes if kind == ROWS else self.job_bytes
            if job is not None and (job.unit is not unit or job.kind != kind
                                    or job.nbytes + size > limit):
                self._submit(job)
                job = None
            if job is None:
                job = Job(unit, kind, [], len(self.log))
            job.steps.append(step)
            job.nbytes += size
            job.prefixes.append(self.finder.candidate(step.stmt.sql) if self.batch_bytes
                                else None)
        self._submit(job)
        with self.cond:
            for unit in self.units.values():
                unit.closed = True
            self.cond.notify_all()

    def _submit(self, job: Job | None) -> None:
        """Queue *job*, first waiting while too much is queued."""
        if job is None:
            return None
        with self.cond:
            while self.queued > 0 and self.queued + job.nbytes > self.queue_bytes \
                    and not self.failed and not self.stopping:
                self.cond.wait(0.5)
            job.unit.jobs.append(job)
            self.queued += job.nbytes
            self.result.jobs += 1
            self.cond.notify_all()
        return None

    def _join(self, deadline: float | None) -> bool:
        """Wait for every worker (until *deadline*). Once the run is stopping, a worker still
        waiting for its server :data:`STOP_SECONDS` later has its socket closed: a watchdog,
        so that no wait for a reply is unbounded (its session ends, its locks with it)."""
        stopping_since: float | None = None
        for worker in self.workers:
            assert worker.thread is not None
            while worker.thread.is_alive():
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    return False
                if self.stopping and deadline is None:
                    stopping_since = stopping_since or now
                    if now - stopping_since > STOP_SECONDS:
                        self._abandon()
                        stopping_since = now
                worker.thread.join(0.2)
        return True

    def _abandon(self) -> None:
        """Close the sockets of the workers still running (the watchdog of :meth:`_join`)."""
        for worker in self.workers:
            if worker.thread is not None and worker.thread.is_alive():
                drop(worker.raw)

    def stop(self) -> None:
        """Stop every worker: no new jobs, ``KILL QUERY`` on each busy connection, then wait
        (at most :data:`STOP_SECONDS`)."""
        with self.cond:
            self.stopping = True
            busy = [w for w in self.workers if w.current is not None]
            self.cond.notify_all()
        for worker in busy:
            self.kill(worker.raw)
        self._join(time.monotonic() + STOP_SECONDS)

    def _finish(self, result: ParallelResult, started: float) -> None:
        with self.cond:
            result.statements = self.ran
            if self.failed:
                self.failed.sort(key=lambda item: item[0])
                result.errors = [error for _, error in self.failed[:1]]
            steps = [u.resume_step() for u in self.units.values() if not u.done]
            if self.failed:  # a failed session statement: nothing after it ran
                index, error = self.failed[0]
                steps.append(Step(error.statement, max(index, 0), SESSION, 0))
            if steps:
                first = min(steps, key=lambda step: step.index)
                result.resume, result.resume_index = first.stmt, first.index
                result.exact = not any(u.first.data and u.owner is not None
                                       and u.first.index > first.index
                                       for u in self.started_units)
        result.seconds = time.perf_counter() - started

    # -- the workers --------------------------------------------------------------------------
    def _work(self, worker: Worker) -> None:
        while True:
            with self.cond:
                job = self._take(worker)
                if job is None:
                    return
                upto = self._replay_limit()
            if isinstance(job, _Replay):
                # Idle: catch up now, so that a COMMIT read meanwhile ends this connection's
                # transaction (its locks would block another unit's DDL until its next job).
                if not self._catch_up(worker, upto):
                    return
                continue
            ok = self._run_job(worker, job)
            with self.cond:
                unit = job.unit
                unit.running.remove(job)
                self.queued -= job.nbytes
                if not ok and unit.broken is None:
                    unit.broken = self.stopped_at.get(worker.number, job.steps[0])
                if unit.done:
                    del self.units[unit.id]
                    for other in self.workers:
                        if other.bound is unit:
                            other.bound = None
                self.cond.notify_all()

    def _take(self, worker: Worker) -> Job | _Replay | None:
        """The next job *worker* may run, waiting for one; None when the load is over."""
        while True:
            if self.failed or self.stopping:
                return None
            job = self._eligible(worker)
            if job is not None:
                job.unit.jobs.popleft()
                job.unit.running.append(job)
                return job
            if not self.reading and not any(u.jobs or u.running for u in self.units.values()):
                return None
            if worker.applied < self._replay_limit():
                return _REPLAY
            self.cond.wait(0.5)

    def _replay_limit(self) -> int:
        """How far an idle connection may replay the log: not past a barrier that has not
        finished (``USE db`` after ``CREATE DATABASE db`` needs the database), nor past rows
        still waiting for a connection (it could no longer take them)."""
        limit = len(self.log)
        for unit in self.units.values():
            if unit.alone and not unit.done:
                limit = min(limit, unit.log_at)
            for job in unit.jobs:
                if job.kind == ROWS:
                    limit = min(limit, job.log_at)
                    break
        return limit

    def _eligible(self, worker: Worker) -> Job | None:
        if worker.bound is not None:
            unit = worker.bound
            # Closed and nothing queued: what runs of it runs elsewhere (rows), so its owner
            # may start another unit instead of idling until those rows are in.
            if unit.done or (unit.closed and not unit.jobs):
                worker.bound = None
            else:
                return self._next_of(unit, worker)
        before_alone = False
        live_before = False
        for unit in self.units.values():
            if unit.done:
                continue
            if unit.owner is None:
                startable = not before_alone and not (unit.fence and live_before)
                if startable and unit.jobs:
                    unit.owner = worker
                    worker.bound = unit
                    return self._next_of(unit, worker)
                if unit.alone or unit.fence:
                    return None  # nothing later may start before it
            elif not unit.alone:
                job = self._next_of(unit, worker)
                if job is not None and job.kind == ROWS:
                    return job
            before_alone = before_alone or unit.alone
            live_before = True
        return None

    def _next_of(self, unit: Unit, worker: Worker) -> Job | None:
        """The head job of *unit* if *worker* may start it now."""
        if not unit.jobs:
            return None
        job = unit.jobs[0]
        if job.kind == ROWS:
            if unit.owner is not worker and unit.owner is not None \
                    and bulk_insert_locks(self.states[job.log_at]):
                return None  # another connection would wait for the owner's table lock
            if worker.applied > job.log_at and unit.owner is not worker \
                    and self.states[worker.applied] != self.states[job.log_at]:
                return None  # this connection's session is already past the job's
            if all(r.kind == ROWS for r in unit.running):
                return job
            return None
        if unit.running or unit.owner is not worker:
            return None
        return job

    def _replay_rest(self) -> None:
        """Each connection runs the rest of the session log (the end of the file)."""
        for worker in self.workers:
            if not self._catch_up(worker, len(self.log)):
                return

    def _run_job(self, worker: Worker, job: Job) -> bool:
        """Run *job*'s statements in order, consecutive batchable ones in one round trip."""
        if not self._catch_up(worker, job.log_at):
            return False
        group: list[Step] = []
        merge: list[coalesce.Candidate | None] = []
        size = 0
        for step, prefix in zip(job.steps, job.prefixes, strict=True):
            if step.kind == SKIP:
                if group and not self._send(worker, group, merge=merge):
                    return False
                group, merge, size = [], [], 0
                with self.cond:
                    self.ran += 1
                continue
            length = len(step.stmt.sql) + 2
            if self.batch_bytes and length < self.batch_bytes \
                    and batchable(step.stmt, self.comments):
                if group and size + length > self.batch_bytes:
                    if not self._send(worker, group, merge=merge):
                        return False
                    group, merge, size = [], [], 0
                group.append(step)
                merge.append(prefix)
                size += length
                continue
            if group and not self._send(worker, group, merge=merge):
                return False
            group, merge, size = [], [], 0
            if not self._send(worker, [step]):
                return False
        return not group or self._send(worker, group, merge=merge)

    def _catch_up(self, worker: Worker, log_at: int, settling: bool = False) -> bool:
        """Replay the session log up to *log_at*, consecutive batchable statements in one
        round trip (a dump's prelude is a dozen SETs)."""
        while worker.applied < log_at:
            steps = [self.log[worker.applied]]
            size = len(steps[0].stmt.sql)
            if self.batch_bytes and batchable(steps[0].stmt, self.comments):
                for step in self.log[worker.applied + 1:log_at]:
                    size += len(step.stmt.sql) + 2
                    if size > self.batch_bytes or not batchable(step.stmt, self.comments):
                        break
                    steps.append(step)
            if not self._send(worker, steps, True, settling):
                failed = self.stopped_at.get(worker.number)
                ok = next((i for i, step in enumerate(steps) if step is failed), 0)
                if not settling:
                    self.bad_log = min(self.bad_log, worker.applied + ok)
                worker.applied += ok  # the statements before the failing one ran
                return False
            worker.applied += len(steps)
        return True

    def _settle(self) -> None:
        """After a failure or Ctrl-C: each idle connection replays the log up to the resume
        point, as a serial load would have run it before stopping there. A ``COMMIT`` there
        commits work that the record counts as done (``SET AUTOCOMMIT=0`` dumps); what comes
        after the resume point runs again on a rerun anyway."""
        with self.cond:
            limit = min([self.bad_log, *(u.log_at for u in self.units.values() if not u.done)])
        for worker in self.workers:
            if worker.thread is not None and not worker.thread.is_alive():
                self._catch_up(worker, min(limit, len(self.log)), settling=True)

    def _send(self, worker: Worker, steps: list[Step], replay: bool = False,
              settling: bool = False, merge: list[coalesce.Candidate | None] | None = None
              ) -> bool:
        """Send *steps* in one round trip, INSERTs coalesced as *merge* allows; False (and
        the failure recorded) if one failed."""
        self.stopped_at[worker.number] = steps[0]
        if (self.failed or self.stopping) and not settling:
            return False
        if merge is not None and len(steps) > 2 and any(merge):
            cut = settle_point([step.stmt for step in steps], merge)
            if cut:  # what the candidates depend on runs first: then the server is asked
                if not self._send(worker, steps[:cut], replay, settling, merge[:cut]):
                    return False
                steps, merge = steps[cut:], merge[cut:]
        sqls = [step.stmt.sql for step in steps]
        counts = [1] * len(steps)
        if merge is not None and len(steps) > 2 and any(merge):
            parts = coalesce.pieces(sqls, coalesce.proven(ServerFacts(worker.raw), merge))
            if len(parts) < len(steps):
                sqls, counts = [p.sql for p in parts], [p.count for p in parts]
        done = [0]
        single = len(counts) == 1

        def on_result(res: t.Any) -> None:
            if self.on_rows is not None:
                shown = worker.rows_of(res)
                if shown is not None and shown[1]:
                    with self.lock:
                        at = 0 if single else sum(counts[:done[0]])
                        self.on_rows(steps[at].stmt, *shown)
            if not single:
                done[0] += 1

        worker.current = steps[0]
        before = time.perf_counter()
        try:
            worker.send(b";\n".join(sqls), on_result)
        except Exception as error:
            piece = 0 if single else done[0]
            ok = sum(counts[:piece])
            if counts[piece] > 1 and not is_disconnect(error) and \
                    error_code(error) not in coalesce.NOT_REPLAYED:
                # The coalesced INSERT undid all its rows: again one by one, for the exact row
                worker.current = None
                self._ran(steps[:ok], before, len(steps), replay)
                return self._send(worker, steps[ok:], replay, settling)
            step = steps[ok]
            self.stopped_at[worker.number] = step
            if error_code(error) is None and not is_disconnect(error):
                error_ = StatementError(step.stmt.path or self.result.file.path,
                                        step.stmt.line, None, None,
                                        f"{type(error).__name__}: {error}", step.stmt)
            else:
                error_ = locate(error, step.stmt, self.result.file.path)
            with self.cond:
                if not replay:
                    self.ran += ok
                if self.stopping:  # KILLed after Ctrl-C or another failure: not the cause
                    return False
                self.failed.append((step.index, error_))
                self.stopping = True
                busy = [w for w in self.workers if w.current is not None and w is not worker]
                self.cond.notify_all()
            for other in busy:  # the run has failed: do not wait for their statements
                self.kill(other.raw)
            return False
        finally:
            worker.current = None
        self._ran(steps, before, len(steps), replay)
        return True

    def _ran(self, steps: list[Step], before: float, size: int, replay: bool) -> None:
        """Count and report *steps*, which ran (of *size* sent at *before*)."""
        if replay or not steps:
            return
        with self.cond:
            self.ran += len(steps)
        if self.on_statement is not None:
            each = (time.perf_counter() - before) / size
            with self.lock:
                for step in steps:
                    self.on_statement(step.stmt, each)
