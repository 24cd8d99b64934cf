"""``flask initdb``: apply the project's .sql files the way the mysql client would, once each.

Files come from ``sql/`` beside the app (``POOLKIT_SQL_DIR`` or ``--sql-dir``), in natural
order, or from the command line (``-`` is standard input). Applied files are recorded in
``poolkit_sql_history``; a re-run skips them and refuses a file changed since (``--force``
re-applies it). A failed statement stops the run with ``file:line: ERROR code (state):
message`` and a ``failed`` record; the next run resumes after the statements that were
applied if they are unchanged. See docs/initdb.md.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import typing as t
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import click

from poolkit.errors import PoolkitError
from poolkit.pool.drivers import error_code
from poolkit.sqlimport.apply import (
    BATCH_BYTES,
    FileResult,
    StatementError,
    apply,
    count_statements,
    prefix_digest,
)
from poolkit.sqlimport.files import STDIN, SqlFile, check_files, discover
from poolkit.sqlimport.history import (
    APPLIED,
    CHANGED,
    FAILED,
    PENDING,
    Applied,
    History,
    plural,
    server_lock,
    status,
)
from poolkit.sqlimport.jobs import ParallelResult
from poolkit.sqlimport.plan import is_dump, resolve_jobs
from poolkit.sqlimport.pooled import PooledLoader
from poolkit.sqlimport.resume import check_resume
from poolkit.sqlimport.session import (
    DEFAULT_CHARSET,
    create_database,
    describe_error,
    end_file,
    import_session,
    kill_running_statement,
    max_allowed_packet,
    own_connection,
    start_file,
    transaction_open,
    wait_for_server,
)
from poolkit.sqlimport.split import sources_anywhere, split_file
from poolkit.sqlimport.statement import Statement
from poolkit.sqlimport.transaction import transactional

from ._cli import poolkit_state, with_poolkit_app

PROGRESS_MIN_BYTES = 4 * 1024 * 1024
_MARKS = {APPLIED: "[X] applied", PENDING: "[ ] pending", CHANGED: "[!] changed",
          FAILED: "[!] failed"}
_UNKNOWN_DATABASE = 1049


def _shown(path: Path) -> str:
    """*path* relative to the working directory when it lies below it."""
    if path == STDIN:
        return "<stdin>"
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def _n(count: int, word: str) -> str:
    return f"{count} {plural(count, word)}"


def _report(error: StatementError) -> None:
    """Print the error, then an excerpt of its statement, to stderr."""
    headline = error.headline(_shown(error.path))
    if error.origin:
        headline += f" (sourced from {error.origin})"
    click.secho(headline, fg="red", err=True)
    for number, text in error.excerpt():
        mark = ">" if number == error.line else " "
        click.echo(f" {mark}{number:>6} | {text}", err=True)


def _escape(value: t.Any) -> bytes:
    """A value as the client prints it in batch mode (``\\t``, ``\\n``, ``\\\\``, ``\\0``)."""
    if value is None:
        return b"NULL"
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if any(c in data for c in b"\\\t\n\x00"):
        data = (data.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
                .replace(b"\x00", b"\\0"))
    return data


def _print_rows(stmt: Statement, names: list[str], rows: list[tuple[t.Any, ...]]) -> None:
    """Rows the way ``mysql`` prints them in batch mode: a header, then tab-separated rows."""
    out = [b"\t".join(name.encode("utf-8") for name in names)]
    out += [b"\t".join(_escape(value) for value in row) for row in rows]
    click.echo(b"\n".join(out))


@contextmanager
def _interrupts(on_first: t.Callable[[], object]) -> t.Iterator[threading.Event]:
    """The first Ctrl-C sets the event and runs *on_first* (KILL QUERY) in a thread, so the
    run stops after the server answers, knowing exactly what ran; a second one raises."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    killers: list[threading.Thread] = []

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        killer = threading.Thread(target=on_first, name="poolkit-initdb-kill", daemon=True)
        killers.append(killer)
        killer.start()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
        for killer in killers:
            killer.join(10)


@click.command("initdb")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, allow_dash=True))
@click.option("--sql-dir", type=click.Path(path_type=Path),
              help="Folder of .sql, .sql.gz, .sql.bz2, .sql.xz files "
                   "[default: POOLKIT_SQL_DIR, else sql/ beside the app].")
@click.option("--database", "bind", default="default", show_default=True,
              help="The named pool (POOLKIT_BINDS) whose database to load.")
@click.option("--status", "show_status", is_flag=True,
              help="List files as applied, pending, changed or failed; change nothing.")
@click.option("--exit-code", is_flag=True,
              help="With --status: exit 1 when a file is pending, changed or failed.")
@click.option("--dry-run", is_flag=True,
              help="List what a run would apply (files, statements); change nothing.")
@click.option("--force", is_flag=True,
              help="Re-apply files changed since they were applied; re-run failed files whole.")
@click.option("--continue-on-error", is_flag=True,
              help="Run the remaining statements after a failure (still exits 1).")
@click.option("--comments", is_flag=True,
              help="Send comments to the server (the client's --comments); by default they "
                   "are stripped like the client does, keeping /*! */ and /*+ */.")
@click.option("--default-character-set", "charset", default=DEFAULT_CHARSET, show_default=True,
              metavar="NAME", help="The connection's character set (SET NAMES), as the client's "
                                   "option; the client's own default depends on the locale.")
@click.option("--batch-bytes", type=click.IntRange(min=0), default=BATCH_BYTES,
              show_default=True, metavar="BYTES",
              help="Send consecutive statements in multi-statement round trips of up to this "
                   "many bytes (and half of max_allowed_packet); 0: one statement per trip.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds to wait for another initdb run on the same database.")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=0.0,
              help="Seconds to wait for the server to accept connections.")
@click.option("--create-database", "create_db", is_flag=True,
              help="Create the URL's database if it is missing.")
@click.option("-j", "--jobs", metavar="N|auto",
              help="Load dump files (mysqldump / mariadb-dump output) on N connections of the "
                   "pool at once, table by table; 'auto': the machine's cores, capped by the "
                   "pool, for files that look like dumps. Default: one connection, in file "
                   "order. See docs/initdb-parallel.md.")
@click.option("--allow-source-outside", is_flag=True,
              help="Let 'source FILE' read files outside the folder of the files applied "
                   "(by default '..', absolute paths, '~' and symlinks that leave it are "
                   "refused).")
@click.option("-v", "--verbose", is_flag=True,
              help="Print each statement and its duration (one statement per round trip).")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors (not result sets).")
@with_poolkit_app
def initdb_command(files: tuple[Path, ...], sql_dir: Path | None, bind: str, show_status: bool,
                   exit_code: bool, dry_run: bool, force: bool, continue_on_error: bool,
                   comments: bool, charset: str, batch_bytes: int, lock_timeout: float,
                   wait_seconds: float, create_db: bool, jobs: str | None,
                   allow_source_outside: bool, verbose: bool, quiet: bool) -> None:
    """Apply the project's .sql files (sql/*.sql in natural order, or FILES) once each.

    FILES may be '-' to read SQL from standard input (never recorded in history), and
    .sql.gz/.sql.bz2/.sql.xz files, decompressed while they stream; history records those by
    name and the SHA-256 of their compressed bytes. Statements that return rows print them
    like the mysql client in batch mode (-q hides them).

    A file that stops part-way (an error, Ctrl-C) is recorded as failed with the statements
    it applied; the next run resumes at the statement that stopped it if those are unchanged,
    and otherwise refuses (--force re-runs it whole). A file of DML on InnoDB tables only
    runs as one transaction. Exit codes: 0, 1 on an error, 130 on Ctrl-C.
    """
    try:
        with sources_anywhere() if allow_source_outside else nullcontext():
            _initdb(files, sql_dir, bind, show_status, exit_code, dry_run, force,
                    continue_on_error, comments, charset, batch_bytes, lock_timeout,
                    wait_seconds, create_db, verbose, quiet, jobs)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise SystemExit(130) from None


def _initdb(files: tuple[Path, ...], sql_dir: Path | None, bind: str, show_status: bool,
            exit_code: bool, dry_run: bool, force: bool, continue_on_error: bool,
            comments: bool, charset: str, batch_bytes: int, lock_timeout: float,
            wait_seconds: float, create_db: bool, verbose: bool, quiet: bool,
            jobs: str | None = None) -> None:
    state = poolkit_state()
    try:
        paths = list(files) if files else discover(sql_dir or state.sql_dir)
        checked = check_files(paths)
        pool = state.pool(bind)
        workers = resolve_jobs(jobs, pool.settings.max_connections) if jobs else 0
    except PoolkitError as error:
        raise click.ClickException(str(error)) from None
    if workers and continue_on_error:
        raise click.UsageError("--continue-on-error runs the statements in file order: "
                               "drop --jobs")
    settings = pool.settings
    database = settings.url.database
    try:
        created = (create_db and not dry_run and not show_status
                   and wait_for_server(lambda: create_database(settings), wait_seconds))
        if created and not quiet:
            click.echo(f"created database {database!r}")
        conn = wait_for_server(lambda: pool.connection().acquire(), wait_seconds)
    except PoolkitError as error:
        raise click.ClickException(str(error)) from None
    except Exception as error:
        if error_code(error) == _UNKNOWN_DATABASE and (show_status or dry_run):
            _no_history(checked, show_status, exit_code, quiet, comments, database)
            return
        if dry_run:
            _dry_run(checked, {}, quiet, comments, f" (history not read: {describe_error(error)})")
            return
        hint = (" (add --create-database to create it)"
                if error_code(error) == _UNKNOWN_DATABASE and not create_db else "")
        raise click.ClickException(f"cannot connect to {settings.url.masked()}: "
                                   f"{describe_error(error)}{hint}") from None
    try:
        with import_session(conn, charset) as raw, ExitStack() as stack:
            history = History(raw, database)
            if show_status:
                _status(checked, history.load(), exit_code)
                return
            if dry_run:
                _dry_run(checked, history.load(), quiet, comments, "", force)
                return
            keeper = stack.enter_context(own_connection(settings))
            history = History(keeper, database)
            with server_lock(keeper, database, lock_timeout), PooledLoader(
                    pool, workers, database, charset=charset, comments=comments,
                    batch_bytes=0 if verbose else batch_bytes, on_statement=_verbose(verbose),
                    on_rows=None if quiet else _print_rows) as loader:
                parallel = _parallel(loader, jobs == "auto", comments, quiet) if workers else None
                _run(raw, history, checked, database, force, continue_on_error, comments,
                     charset, 0 if verbose else batch_bytes, verbose, quiet, settings, parallel)
    except PoolkitError as error:
        raise click.ClickException(str(error)) from None
    except click.ClickException:
        raise
    except Exception as error:  # what a file did to the session (never a traceback)
        if error_code(error) is None:
            raise
        raise click.ClickException(f"{describe_error(error)}") from None


def _no_history(files: list[SqlFile], show_status: bool, exit_code: bool, quiet: bool,
                comments: bool, database: str) -> None:
    """The database does not exist yet: every file is pending."""
    if show_status:
        _status(files, {}, exit_code)
    else:
        _dry_run(files, {}, quiet, comments, f" (database {database!r} does not exist yet)")


def _status(files: list[SqlFile], applied: dict[str, Applied], exit_code: bool) -> None:
    states = status(files, applied)
    for file, what in states:
        if what == FAILED:
            row = applied[file.name]
            at = f" (at {row.failed_at})" if row.failed_at else ""
            line = f":{row.failed_line}" if row.failed_line and not row.failed_at else ""
            click.echo(f"{_MARKS[what]}  {_shown(file.path)}{line}{at} ({row.progress()})")
        else:
            click.echo(f"{_MARKS[what]}  {file.name}")
    if exit_code and any(what != APPLIED for _, what in states):
        raise SystemExit(1)


def _dry_run(files: list[SqlFile], applied: dict[str, Applied], quiet: bool, comments: bool,
             note: str, force: bool = False) -> None:
    """The real run's plan, not executed: what it refuses (a changed file, a failed one that
    cannot resume) it refuses here too, with the same line and exit code."""
    states = status(files, applied)
    resume = _plan(states, applied, force, comments)
    total = done = count = 0
    for file, what in states:
        if what == APPLIED:
            done += 1
            continue
        statements = count_statements(file.path, comments=comments)
        statements -= resume.get(file.name, (0, None))[0]  # a real run resumes after them
        count += 1
        total += statements
        if not quiet:
            click.echo(f"{file.name}  {_n(statements, 'statement')}  {file.size:,} bytes")
    if not quiet:
        skipped = f", {done} already applied" if done else ""
        click.echo(f"dry run: {_n(count, 'file')}, {_n(total, 'statement')} to apply{skipped}"
                   f"; nothing was sent{note}")


def _plan(files: list[tuple[SqlFile, str]], applied: dict[str, Applied], force: bool,
          comments: bool) -> dict[str, tuple[int, int | None]]:
    """Where each failed file resumes (statements to skip, line); refuses what cannot."""
    changed = [file for file, what in files if what == CHANGED]
    if changed and not force:
        file = changed[0]
        row = applied[file.name]
        others = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise click.ClickException(
            f"{_shown(file.path)}: changed since it was applied on "
            f"{row.applied_at:%Y-%m-%d %H:%M:%S} UTC (checksum {row.checksum[:12]}…, now "
            f"{file.checksum[:12]}…){others}: "
            "put the change in a new file, restore the old one, or re-apply with --force")
    resume: dict[str, tuple[int, int | None]] = {}
    for file, what in files:
        if what != FAILED or force:
            continue
        row = applied[file.name]
        if row.statements == 0:
            continue  # nothing was kept: run it whole
        found = (prefix_digest(file, row.statements, comments=comments)
                 if row.prefix_checksum is not None else None)
        if found is None or found[0] != row.prefix_checksum:
            why = ("the statements it applied have changed since" if row.prefix_checksum
                   else "it ran with --continue-on-error or stopped inside its own transaction, "
                   "so it cannot resume")
            raise click.ClickException(
                f"{_shown(file.path)}: failed at line {row.failed_line} with {row.progress()} "
                f"and {why}: restore them and rerun to resume, or undo what it applied and "
                "re-run it whole with --force")
        blocked = check_resume(split_file(file.path, comments=comments), row.statements)
        if blocked is not None:
            what, stmt = blocked
            raise click.ClickException(
                f"{_shown(file.path)}: cannot resume at statement {row.statements + 1}: "
                f"{_shown(stmt.path or file.path)}:{stmt.line} depends on session state "
                f"({what}) that a new session cannot rebuild: undo what it applied and re-run "
                "it whole with --force")
        resume[file.name] = (row.statements, found[1])
    return resume


def _verbose(verbose: bool) -> t.Callable[[Statement, float], None] | None:
    if not verbose:
        return None

    def on_statement(stmt: Statement, seconds: float) -> None:
        first = stmt.sql.split(b"\n", 1)[0].decode("utf-8", "replace")[:80]
        where = _shown(stmt.path) if stmt.path else "?"
        click.echo(f"  {where}:{stmt.line}: {first}  ({seconds * 1000:.1f} ms)")
    return on_statement


Parallel = t.Callable[[SqlFile, int], "FileResult | None"]


def _parallel(loader: PooledLoader, auto: bool, comments: bool, quiet: bool) -> Parallel:
    """Loads a file on the loader's connections, as a FileResult for the history (None: run
    it serially: not a dump under --jobs auto, or a failed file resuming)."""
    def load(file: SqlFile, skip: int) -> FileResult | None:
        if skip or file.is_stdin or file.compression or (auto and not is_dump(file)):
            return None
        try:
            if quiet or file.size < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
                result = loader.load(file)
            else:
                with click.progressbar(length=file.size, label=file.name,
                                       file=sys.stderr) as bar:
                    done = [0]

                    def on_progress(offset: int) -> None:
                        bar.update(offset - done[0])
                        done[0] = offset

                    result = loader.load(file, on_progress=on_progress)
        except KeyboardInterrupt as interrupt:
            partial: ParallelResult | None = getattr(interrupt, "poolkit_result", None)
            if partial is None:
                raise
            result = partial
        if not result.ok:
            what = "every connection stopped" if result.interrupted else "the run stopped"
            click.echo(f"{_shown(file.path)}: parallel load: {what}; "
                       f"{_parallel_progress(result)}", err=True)
        return _as_file_result(result, comments)
    return load


def _parallel_progress(result: ParallelResult) -> str:
    """How far a parallel load got, for messages."""
    done = f"{_n(result.statements, 'statement')} ran"
    if result.resume is None:
        return done
    where = f"{_shown(result.resume.path or result.file.path)}:{result.resume.line}"
    how = ("every statement before it ran" if result.exact else
           "tables of this data-only dump after it ran too and would be loaded twice")
    return f"{done}; a rerun resumes at {where} ({how})"


def _as_file_result(result: ParallelResult, comments: bool) -> FileResult:
    """What the history records: the statements before the resume point were applied."""
    done = result.resume_index if result.resume is not None else result.statements
    digest = ""  # not resumable: a rerun runs it whole
    if not result.ok and result.exact:
        found = prefix_digest(result.file, done, comments=comments)
        digest = found[0] if found is not None else ""
    stopped = result.errors[0].statement if result.errors else result.resume
    return FileResult(result.file, statements=done, total=None if not result.ok else done,
                      seconds=result.seconds, errors=result.errors,
                      interrupted=result.interrupted, digest=digest, stopped_at=stopped)


def _run(raw: t.Any, history: History, files: list[SqlFile], database: str, force: bool,
         continue_on_error: bool, comments: bool, charset: str, batch_bytes: int,
         verbose: bool, quiet: bool, settings: t.Any, parallel: Parallel | None = None) -> None:
    history.ensure()
    applied = history.load()  # read under the lock: another run may just have finished
    states = status(files, applied)
    resume = _plan(states, applied, force, comments)
    todo = [file for file, what in states if what != APPLIED]
    skipped = len(files) - len(todo)
    batch = min(batch_bytes, max_allowed_packet(raw) // 2)
    started = time.perf_counter()
    statements = failed = recorded = 0
    failed_files: list[str] = []
    for file in todo:
        start_file(raw, database, charset)
        skip, line = resume.get(file.name, (0, None))
        if skip and not quiet:
            at = f" (line {line})" if line is not None else ""
            click.echo(f"resuming {_shown(file.path)} at statement {skip + 1}{at}: the "
                       f"{_n(skip, 'statement')} applied before it "
                       f"{'is' if skip == 1 else 'are'} unchanged")
        loaded = parallel(file, skip) if parallel is not None else None
        if loaded is not None:
            result = loaded
        else:
            one = not continue_on_error and transactional(
                raw, file, database, comments=comments) is not None
            result = _apply(raw, file, history, continue_on_error, comments, batch, skip, one,
                            verbose, quiet, settings)
        statements += result.statements - result.resumed
        if not result.ok and not result.lost and not result.transaction:
            result.open_transaction = transaction_open(raw)
        if not result.lost:
            end_file(raw)  # as the client's exit: an open transaction rolled back, locks freed
        if result.lost:
            for error in result.errors:
                _report(error)
            raise click.ClickException(
                f"the connection was lost at {_stop_where(result)}, so whether that statement "
                f"ran is unknown: {file.name} is not recorded; a rerun runs it whole")
        if result.interrupted:
            _record_failed(history, result, "interrupted (Ctrl-C)", continue_on_error)
            click.echo(f"interrupted at {_stop_where(result)}: {_progress(result)}; "
                       f"{_rerun(result)}", err=True)
            raise SystemExit(130)
        if not result.ok:
            failed += len(result.errors)
            failed_files.append(_shown(file.path))
            for error in result.errors:
                _report(error)
            first = result.errors[0]
            _record_failed(history, result, first.headline(first.path.name), continue_on_error)
            if not continue_on_error:
                before = (f"; {_n(recorded, 'file')} applied before it "
                          f"{'stays' if recorded == 1 else 'stay'} recorded" if recorded else "")
                raise click.ClickException(
                    f"stopped at {_stop_where(result)}: {_progress(result)}; {_rerun(result)}"
                    f"{before}")
            continue
        if not file.is_stdin:
            history.record(file, round(result.seconds * 1000), result.statements)
        recorded += 1
        if history.restored:
            click.echo(f"note: {history.restored}", err=True)
            history.restored = None
        if not quiet:
            click.echo(f"applied {file.name}: {_n(result.statements, 'statement')} in "
                       f"{result.seconds:.2f} s")
    seconds = time.perf_counter() - started
    if failed:
        raise click.ClickException(
            f"{_n(failed, 'statement')} failed in {_n(len(failed_files), 'file')} "
            f"({', '.join(failed_files)}); those files are recorded as failed")
    if not quiet and not todo:
        click.echo(f"nothing to apply: {_n(skipped, 'file')} already applied")
    elif not quiet:
        note = f"; {skipped} already applied" if skipped else ""
        click.echo(f"{_n(len(todo), 'file')} applied, {_n(statements, 'statement')} "
                   f"in {seconds:.2f} s{note}")


def _apply(raw: t.Any, file: SqlFile, history: History, continue_on_error: bool,
           comments: bool, batch: int, skip: int, transaction: bool, verbose: bool,
           quiet: bool, settings: t.Any) -> FileResult:
    options: dict[str, t.Any] = {
        "continue_on_error": continue_on_error, "comments": comments, "batch_bytes": batch,
        "resume": skip, "transaction": transaction, "on_rows": None if quiet else _print_rows}
    if verbose:
        def on_statement(stmt: Statement, seconds: float) -> None:
            first = stmt.sql.split(b"\n", 1)[0].decode("utf-8", "replace")[:80]
            where = _shown(stmt.path or file.path)
            click.echo(f"  {where}:{stmt.line}: {first}  ({seconds * 1000:.1f} ms)")
        options["on_statement"] = on_statement
    try:
        with _interrupts(lambda: kill_running_statement(settings, raw)) as stop:
            options["stop"] = stop
            if (quiet or file.size < PROGRESS_MIN_BYTES or file.compression
                    or not sys.stderr.isatty()):
                return apply(raw, file, **options)
            with click.progressbar(length=file.size, label=file.name, file=sys.stderr) as bar:
                done = [0]

                def on_progress(offset: int) -> None:
                    bar.update(offset - done[0])
                    done[0] = offset

                return apply(raw, file, on_progress=on_progress, **options)
    except KeyboardInterrupt:  # the second Ctrl-C: the session was closed mid-statement
        click.echo(f"interrupted: {_shown(file.path)} stopped mid-statement; the session was "
                   "closed, so how far it got is not recorded", err=True)
        raise SystemExit(130) from None


def _stop_where(result: FileResult) -> str:
    stmt = result.stopped_at
    if result.errors:
        error = result.errors[0]
        where = f"{_shown(error.path)}:{error.line}"
        return where + (f" (sourced from {error.origin})" if error.origin else "")
    if stmt is not None:
        return f"{_shown(stmt.path or result.file.path)}:{stmt.line}"
    return _shown(result.file.path)


def _progress(result: FileResult) -> str:
    name = result.file.name if not result.file.is_stdin else "standard input"
    total = f" of {result.total}" if result.total is not None else ""
    count = result.total if result.total is not None else result.statements
    if result.rolled_back and not result.statements:
        return (f"{name} ran as one transaction and was rolled back: none of its "
                f"{_n(count, 'statement')} were kept")
    if result.rolled_back:  # resumed: only what this run sent was in the transaction
        return (f"what this run sent from statement {result.resumed + 1} on ran as one "
                f"transaction and was rolled back; {result.statements}{total} "
                f"{plural(count, 'statement')} of {name} were applied (by an earlier run) "
                "and not undone")
    verb = "was" if result.statements == 1 and result.total is None else "were"
    with_it = result.rolled_back_with
    undone = (f" (the {_n(with_it, 'statement')} sent with the failing one in one transaction "
              f"{'was' if with_it == 1 else 'were'} rolled back with it)" if with_it else "")
    if result.open_transaction:
        return (f"{name} stopped inside its own transaction, which was rolled back as the "
                f"client's exit does: what it ran since its START TRANSACTION (or SET "
                f"autocommit=0) is not kept")
    return (f"{result.statements}{total} {plural(count, 'statement')} of {name} {verb} "
            f"applied and not undone{undone}")


def _rerun(result: FileResult) -> str:
    if result.file.is_stdin:
        return "standard input is not recorded"
    if result.statements == 0:
        return "it is recorded as failed; a rerun runs it whole"
    if result.open_transaction:
        return ("it is recorded as failed without a resume point: undo what it kept and "
                "re-run it whole with --force")
    return "it is recorded as failed; a rerun resumes at the statement that stopped it"


def _record_failed(history: History, result: FileResult, error: str,
                   continue_on_error: bool) -> None:
    if result.file.is_stdin:
        return
    stmt = result.stopped_at
    line = result.errors[0].line if result.errors else (stmt.line if stmt else None)
    failed_at = None
    if stmt is not None and stmt.path is not None and stmt.path != result.file.path:
        failed_at = f"{stmt.path.name}:{line}"
    # After a rollback the digest is that of the statements still applied (those resumed over).
    resumable = (None if continue_on_error or result.open_transaction
                 or (result.rolled_back and not result.statements) else result.digest)
    for attempt in range(2):
        try:
            history.record_failed(
                result.file, round(result.seconds * 1000), result.statements,
                total=result.total, line=line, failed_at=failed_at,
                statement=stmt.excerpt() if stmt else None, error=error,
                prefix_checksum=resumable)
            return
        except Exception as failure:  # a KILL QUERY that landed after the statement ended
            if attempt or error_code(failure) not in {1317, 1927}:
                raise click.ClickException(
                    f"{_shown(result.file.path)}: could not record how far it got: "
                    f"{describe_error(failure)}") from None
