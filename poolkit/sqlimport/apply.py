"""Apply .sql files through a DB-API connection like ``mysql``, in multi-statement batches.

Statements go to the server as the bytes of the file, with no parameters, so a ``%`` is never
interpreted and binary literals arrive unchanged. Consecutive statements are joined into one
multi-statement round trip of up to :data:`BATCH_BYTES` (and below ``max_allowed_packet``);
the server runs them in order and stops at the first that fails, and the results are read in
order, so the failing statement, and how many ran before it, are known exactly. A statement
whose results cannot be told apart from its neighbours' (``CALL``, a ``DELIMITER`` block that
may hold several statements, ``LOAD DATA``) is sent on its own. A file's own transaction
(``SET autocommit=0`` … ``COMMIT``, as in mysqldump's world) is batched like any other run of
statements. Batches start at :data:`FIRST_BATCH_BYTES` and double; each is sent before the
next one is split, and its results are read after that, so the server works while Python
splits (nothing more is sent until they are read: a failure still stops the file there).

A failed statement becomes a :class:`StatementError` that names the file's own line: the
statement's first line plus the server's "at line N", minus one. The library never prints:
callers get callbacks per statement, per result set and per progress step, and a
:class:`FileResult` per file, which says how many statements were applied and carries the
digest of those statements (to resume a failed file, see :func:`prefix_digest`).

With ``transaction=True`` (see :func:`.transaction.transactional`) a file runs as one
transaction: a failure undoes what this run sent (all of it, unless it resumed after
statements a previous run applied, which stay).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

from ..pool.drivers import error_code, is_disconnect
from . import coalesce
from .facts import Counters, ServerFacts
from .files import SqlFile
from .outcome import FileResult as FileResult
from .outcome import StatementError as StatementError
from .outcome import locate as locate
from .readahead import READ_AHEAD_MIN_BYTES as READ_AHEAD_MIN_BYTES
from .readahead import read_ahead as read_ahead
from .resume import Replay
from .roundtrip import batchable, drop, pipeline, runner
from .session import import_session as import_session  # re-exported: it lived here before
from .split import CHUNK_SIZE, split_file
from .statement import Statement
from .transaction import GroupCommit

#: Bytes of SQL per multi-statement round trip (the probe of issue 12: ~1 MB is the knee).
BATCH_BYTES = 1 << 20
#: The first batch of a file: small, so that the server starts while the rest is split.
FIRST_BATCH_BYTES = 64 * 1024
#: After a failure, the rest of a file up to this size is split to count its statements.
COUNT_REST_MAX_BYTES = 256 * 1024 * 1024
_ER_QUERY_INTERRUPTED = frozenset({1317, 1927})

OnStatement = t.Callable[[Statement, float], None]
OnProgress = t.Callable[[int], None]
#: (statement, column names, rows of server bytes or None for NULL)
OnRows = t.Callable[[Statement, list[str], list[tuple[t.Any, ...]]], None]


class _Digest:
    """SHA-256 over the applied statements, each framed by its length."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def copy(self) -> _Digest:
        """A digest that goes on from this one's state."""
        copied = _Digest()
        copied.hash = self.hash.copy()
        return copied

    def add(self, stmt: Statement) -> None:
        self.hash.update(len(stmt.sql).to_bytes(8, "big"))
        self.hash.update(stmt.sql)

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


def prefix_digest(file: SqlFile, count: int, *, comments: bool = False,
                  chunk_size: int = CHUNK_SIZE) -> tuple[str, int | None] | None:
    """(digest of *file*'s first *count* statements as a run would send them, line of the
    statement after them or None at the end); None when the file has fewer. The digest
    equals :attr:`FileResult.digest` of a run that applied *count*."""
    digest = _Digest()
    seen = 0
    for stmt in split_file(file.path, chunk_size=chunk_size, comments=comments):
        if seen == count:
            return digest.hexdigest(), stmt.line
        digest.add(stmt)
        seen += 1
    return (digest.hexdigest(), None) if seen == count else None


@dataclass
class _Pending:
    """A batch sent whose results are not read yet."""

    batch: list[Statement]
    wrap: bool
    started: float
    #: Statements of the batch per statement sent (coalesced INSERTs count several).
    counts: list[int]
    error: Exception | None = None


def apply_file(raw: t.Any, file: SqlFile, *, continue_on_error: bool = False,
               on_statement: OnStatement | None = None, on_progress: OnProgress | None = None,
               on_rows: OnRows | None = None, chunk_size: int = CHUNK_SIZE,
               comments: bool = False, batch_bytes: int = BATCH_BYTES, resume: int = 0,
               transaction: bool = False, stop: threading.Event | None = None,
               before_commit: t.Callable[[FileResult], None] | None = None,
               group_commit: bool = True, raw_values: bool = False) -> FileResult:
    """Run every statement of *file* on the DB-API connection *raw*.

    Stops at the first failed statement unless *continue_on_error*; a lost connection always
    stops, and so does *stop* being set (checked before each round trip; a statement killed
    with ``KILL QUERY`` meanwhile counts as interrupted, not failed). *resume* skips that many
    statements (a previous run applied them), re-running only those that set up the session
    (``SET``, ``USE``). *batch_bytes* 0 sends one statement per round trip. With *transaction*
    the statements this call sends run inside ``START TRANSACTION``; *before_commit* runs
    inside it on success (history), and a failure rolls them back (the *resume* statements a
    previous run applied stay applied, and counted). With *group_commit* (and neither
    *transaction* nor *continue_on_error*), a batch of DML on transactional tables commits once
    (:class:`.transaction.GroupCommit`); a failure in it rolls that batch back.
    :class:`~poolkit.errors.SqlFileError` (unreadable file, bad client command) and
    ``KeyboardInterrupt`` propagate; the latter drops the session (its state is unknown).
    """
    run, rows_of = runner(raw, raw_values)
    begin, collect = pipeline(raw, raw_values)
    result = FileResult(file, transaction=transaction)
    server = ServerFacts(raw)  # what shortcuts ask of the server, as batches are sent
    # Not with continue_on_error: statements rolled back with a failure would be lost.
    commits = (GroupCommit(raw, server) if group_commit and batch_bytes and not transaction
               and not continue_on_error else None)
    # AUTO_INCREMENT counters to put back on a rollback: of the wrapped batch in flight, or
    # (transaction) of the whole file.
    counters = Counters(server)
    replay = Replay()
    digest = _Digest()
    kept = digest.copy()  # the statements a rollback of this run's transaction leaves applied
    started = time.perf_counter()
    top = file.path
    statements = split_file(file.path, chunk_size=chunk_size, comments=comments)
    if file.size >= READ_AHEAD_MIN_BYTES:
        statements = read_ahead(statements)
    group: list[Statement] = []
    # Per statement of the group: the INSERT it is if it may be coalesced (decided at send).
    prefixes: list[coalesce.Candidate | None] = []
    finder = coalesce.Coalescer() if batch_bytes else None
    group_dml = False
    size = 0
    # Batches grow from FIRST_BATCH_BYTES to batch_bytes: the server starts early, and runs
    # each batch while the next one is read and split (see start/finish).
    limit = min(FIRST_BATCH_BYTES, batch_bytes)
    count = 0  # statements read from the file so far
    stopped = False
    pending: _Pending | None = None

    def coalescible(found: coalesce.Candidate | None, wrap: bool) -> bytes | None:
        """The candidate's prefix if the server's answers prove coalescing it equal."""
        if found is None:
            return None
        table = server.table(found.table)
        strict, _ = server.session()
        if not table.safe or (found.null and not strict):
            return None
        # A rolled-back multi-row INSERT burns the ids it drew: only where every id is
        # written, or the counter is put back.
        if table.auto_increment and not (wrap or transaction
                                         or coalesce.writes_ids(found, table)):
            return None
        return found.prefix

    def start(batch: list[Statement], merge: list[coalesce.Candidate | None] | None = None,
              wrappable: bool = True) -> bool:
        """Send *batch* without waiting for it (its INSERTs coalesced as *merge* allows, in
        one transaction if *wrappable* and group commit allows); False when stopped."""
        nonlocal stopped, pending
        if stop is not None and stop.is_set():  # Ctrl-C: send nothing more
            result.interrupted = stopped = True
            result.stopped_at = result.stopped_at or batch[0]
            return False
        if merge is not None and len(batch) > 2:
            cut = coalesce.settle_point(batch, merge)
            if cut:  # what the candidates depend on runs first: then the server is asked
                if not send(batch[:cut], merge[:cut]) or stopped:
                    return False
                batch, merge = batch[cut:], merge[cut:]
        sqls = [s.sql for s in batch]
        wrap = wrappable and commits is not None and commits.allowed(sqls)
        if wrap and commits is not None:
            counters.remember(commits.targets(sqls) or ())
        counts = [1] * len(batch)
        if merge is not None and len(batch) > 2:
            chosen = [coalescible(found, wrap) for found in merge]
            parts = coalesce.pieces(sqls, chosen)
            if len(parts) < len(batch):
                sqls, counts = [p.sql for p in parts], [p.count for p in parts]
                counters.remember({found.table for found, prefix in zip(merge, chosen,
                                                                        strict=True)
                                   if found is not None and prefix is not None})
        for stmt in batch:  # a statement other than DML may change what the server said
            server.sent(stmt.sql)
        sql = b";\n".join(sqls)
        if wrap:  # one commit for the batch (SET autocommit keeps LOCK TABLES, unlike BEGIN)
            sql = b"SET autocommit=0;\n" + sql + b";\nCOMMIT;\nSET autocommit=1"
        pending = _Pending(batch, wrap, time.perf_counter(), counts)
        try:
            begin(sql)
        except Exception as failure:  # the write failed: reported by finish, as a read would
            if error_code(failure) is None and not is_disconnect(failure):
                raise
            pending.error = failure
        return True

    def send(batch: list[Statement], merge: list[coalesce.Candidate | None] | None = None,
             wrappable: bool = True) -> bool:
        """Run *batch* and wait for it; True to go on."""
        return finish() if start(batch, merge, wrappable) else False

    def account(applied: list[Statement], before: float, size: int, sent: bool = True) -> None:
        """Count, digest and report statements that ran (of a batch of *size* sent at
        *before*); with *sent*, note them for group commit too."""
        each = (time.perf_counter() - before) / size
        for stmt in applied:
            if sent and commits is not None:
                commits.sent(stmt.sql)
            result.statements += 1
            digest.add(stmt)
            if on_statement is not None:
                on_statement(stmt, each)

    def sent_before() -> bool:
        """Wait for the batch in flight, if any; True to go on."""
        return finish() if pending is not None else True

    def finish() -> bool:
        """Read the results of the batch in flight; True to go on. Counts, digests and
        reports each statement."""
        nonlocal stopped, pending
        assert pending is not None
        batch, wrap, before, error = pending.batch, pending.wrap, pending.started, pending.error
        counts = pending.counts
        pending = None
        done = [0]
        single = len(counts) == 1
        skip = 1 if wrap else 0  # the result of "SET autocommit=0"
        merged = len(counts) < len(batch)

        def on_result(res: t.Any) -> None:
            index = 0 if single else done[0] - skip
            if on_rows is not None and 0 <= index < len(counts):
                shown = rows_of(res)
                if shown is not None and shown[1]:
                    on_rows(batch[sum(counts[:index]) if merged else index], *shown)
            done[0] += 1

        if error is None:
            try:
                collect(on_result)
            except Exception as failure:
                if error_code(failure) is None and not is_disconnect(failure):
                    raise
                error = failure
        ok = len(batch) if error is None else (
            0 if single else max(0, min(done[0] - skip, len(counts) - 1)))
        if error is not None and merged:
            failed_piece, ok = ok, sum(counts[:ok])
            if counts[failed_piece] > 1 and not is_disconnect(error) and \
                    error_code(error) not in coalesce.NOT_REPLAYED:
                # The coalesced INSERT undid all its rows: send them again one by one, so that
                # the failure is the exact row's (a wrapped batch was rolled back whole).
                if wrap:
                    run(b"ROLLBACK", lambda res: None)
                    run(b"SET autocommit=1", lambda res: None)
                    counters.restore()
                    return send(batch, merge=None, wrappable=False)
                account(batch[:ok], before, len(batch))
                return send(batch[ok:], merge=None)
        if error is not None and wrap and not is_disconnect(error) and \
                error_code(error) not in coalesce.NOT_REPLAYED:
            # Rolled back whole: again statement by statement, so that the statements before
            # the failing one are kept and its error is the plain path's, as with the client.
            run(b"ROLLBACK", lambda res: None)
            run(b"SET autocommit=1", lambda res: None)
            counters.restore()
            return send(batch, merge=None, wrappable=False)
        if error is not None and wrap:
            if not is_disconnect(error):
                run(b"ROLLBACK", lambda res: None)
                run(b"SET autocommit=1", lambda res: None)
                counters.restore()
            result.rolled_back_with += ok  # the batch's statements before the failure
            failed_at, ok = ok, 0
        else:
            failed_at = ok
        if commits is not None:
            for stmt in batch[:failed_at + 1] if error is not None else batch:
                commits.sent(stmt.sql)
        each = (time.perf_counter() - before) / len(batch)
        account(batch[:ok], before, len(batch), sent=False)
        last = batch[failed_at] if error is not None else batch[-1]
        if on_progress is not None and last.path == top:
            on_progress(last.end_offset)
        if error is None:
            if not transaction:
                counters.clear()  # committed: the ids it drew are the plain path's
            return True
        failed = batch[failed_at]
        if result.stopped_at is None:
            result.stopped_at = failed
        if stop is not None and stop.is_set() and error_code(error) in _ER_QUERY_INTERRUPTED:
            result.interrupted = stopped = True
            return False
        result.errors.append(locate(error, failed, top, batched=not single))
        if on_statement is not None:
            on_statement(failed, each)
        if is_disconnect(error):
            result.lost = stopped = True
            return False
        if not continue_on_error:
            stopped = True
            return False
        rest = batch[failed_at + 1:]  # the server ran nothing after the failure: the rest
        return send(rest) if rest else True

    try:
        if transaction:
            run(b"START TRANSACTION", lambda res: None)
        for stmt in statements:
            count += 1
            if count <= resume:
                if replay.note(stmt):  # sets up the session from constants (see .resume)
                    run(stmt.sql, lambda res: None)
                    server.sent(stmt.sql)
                    if commits is not None:  # a re-run SET autocommit=0 rules out wrapping
                        commits.wrappable(stmt.sql)
                        commits.sent(stmt.sql)
                result.statements += 1
                result.resumed += 1
                digest.add(stmt)
                kept = digest.copy()
                continue
            if batch_bytes and batchable(stmt, comments) and len(stmt.sql) < batch_bytes:
                dml = commits is not None and commits.wrappable(stmt.sql)
                if group and (size + len(stmt.sql) + 2 > limit or dml != group_dml):
                    sent, group, size = group, [], 0
                    merge, prefixes = prefixes, []
                    limit = min(limit * 2, batch_bytes)
                    # the batch before runs on the server while this one was split
                    if not sent_before() or not start(sent, merge):
                        break
                prefixes.append(finder.candidate(stmt.sql) if finder is not None else None)
                group.append(stmt)
                group_dml = dml  # a run of DML is batched apart, to commit once (GroupCommit)
                size += len(stmt.sql) + 2
                continue
            if group:
                sent, group, size = group, [], 0
                merge, prefixes = prefixes, []
                if not sent_before() or not start(sent, merge):
                    break
            if not sent_before() or not send([stmt]):
                break
        if group and not stopped and sent_before():
            start(group, prefixes)
        if pending is not None:
            finish()
        if stopped and file.size <= COUNT_REST_MAX_BYTES and not result.lost:
            count += sum(1 for _ in statements)  # the rest of the file, for "2 of 5"
            result.total = count
        elif not stopped:
            result.total = count
        if transaction:
            if result.ok:
                if before_commit is not None:
                    before_commit(result)
                run(b"COMMIT", lambda res: None)
            else:
                run(b"ROLLBACK", lambda res: None)
                counters.restore()  # the ids the rolled-back rows drew, as before the run
                # Only what this run sent is undone: a previous run's statements stay.
                result.statements = result.resumed
                digest = kept
    except BaseException as error:
        if pending is not None and isinstance(error, Exception):
            with contextlib.suppress(Exception):  # read what the server did before raising
                finish()
        if not isinstance(error, Exception):
            # Ctrl-C may land mid-statement, leaving a reply unread: the session cannot be
            # trusted any more. Close it now (its locks go with it) without a COM_QUIT.
            drop(raw)
        raise
    finally:
        result.seconds = time.perf_counter() - started
        result.digest = digest.hexdigest()
        close = getattr(statements, "close", None)
        if close is not None:
            close()
    return result


def apply(raw: t.Any, file: SqlFile, **options: t.Any) -> FileResult:
    """:func:`apply_file` with result rows as the server's bytes (for printing them)."""
    return apply_file(raw, file, raw_values=True, **options)


def count_statements(path: Path, chunk_size: int = CHUNK_SIZE, comments: bool = False) -> int:
    """How many statements the file (and what it sources) would send."""
    return sum(1 for _ in split_file(path, chunk_size=chunk_size, comments=comments))


