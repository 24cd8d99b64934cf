"""``flask initdb``: apply the project's .sql files the way the mysql client would, once each.

Files come from ``sql/`` beside the app (``POOLKIT_SQL_DIR`` or ``--sql-dir``), in natural
order, or from the command line. Applied files are recorded in ``poolkit_sql_history``; a
re-run skips them and refuses a file changed since (``--force`` re-applies it). A failed
statement stops the run with ``file:line: ERROR code (state): message``. See docs/initdb.md.
"""

from __future__ import annotations

import sys
import time
import typing as t
from pathlib import Path

import click

from poolkit.commands._cli import poolkit_state, with_poolkit_app
from poolkit.errors import PoolkitError
from poolkit.sqlimport.apply import (
    FileResult,
    StatementError,
    apply_file,
    count_statements,
    create_database,
    describe_error,
    import_session,
    kill_running_statement,
    use_database,
    wait_for_server,
)
from poolkit.sqlimport.files import SqlFile, check_files, discover
from poolkit.sqlimport.history import APPLIED, CHANGED, PENDING, History, server_lock, status
from poolkit.sqlimport.parallel import ParallelResult, PooledLoader, is_dump, resolve_jobs
from poolkit.sqlimport.split import Statement

PROGRESS_MIN_BYTES = 4 * 1024 * 1024
_MARKS = {APPLIED: "[X] applied", PENDING: "[ ] pending", CHANGED: "[!] changed"}


def _shown(path: Path) -> str:
    """*path* relative to the working directory when it lies below it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def _report(error: StatementError) -> None:
    """Print the error, then an excerpt of its statement, to stderr."""
    headline = error.headline(_shown(error.path))
    click.secho(headline, fg="red", err=True)
    for number, text in error.excerpt():
        mark = ">" if number == error.line else " "
        click.echo(f" {mark}{number:>6} | {text}", err=True)


def _apply(raw: t.Any, file: SqlFile, database: str, continue_on_error: bool,
           verbose: bool, quiet: bool) -> FileResult:
    use_database(raw, database)
    on_statement = None
    if verbose:
        def on_statement(stmt: Statement, seconds: float) -> None:
            first = stmt.sql.split(b"\n", 1)[0].decode("utf-8", "replace")[:80]
            where = _shown(stmt.path or file.path)
            click.echo(f"  {where}:{stmt.line}: {first}  ({seconds * 1000:.1f} ms)")
    if quiet or file.size < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        return apply_file(raw, file, continue_on_error=continue_on_error,
                          on_statement=on_statement)
    with click.progressbar(length=file.size, label=file.name, file=sys.stderr) as bar:
        done = [0]

        def on_progress(offset: int) -> None:
            bar.update(offset - done[0])
            done[0] = offset

        return apply_file(raw, file, continue_on_error=continue_on_error,
                          on_statement=on_statement, on_progress=on_progress)


@click.command("initdb")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--sql-dir", type=click.Path(path_type=Path),
              help="Folder of .sql files [default: POOLKIT_SQL_DIR, else sql/ beside the app].")
@click.option("--database", "bind", default="default", show_default=True,
              help="The named pool (POOLKIT_BINDS) whose database to load.")
@click.option("--status", "show_status", is_flag=True,
              help="List files as applied, pending or changed; change nothing.")
@click.option("--exit-code", is_flag=True,
              help="With --status: exit 1 when a file is pending or changed.")
@click.option("--dry-run", is_flag=True,
              help="List the files and their statement counts; do not touch the database.")
@click.option("--force", is_flag=True, help="Re-apply files changed since they were applied.")
@click.option("--continue-on-error", is_flag=True,
              help="Run the remaining statements after a failure (still exits 1).")
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
@click.option("-v", "--verbose", is_flag=True, help="Print each statement and its duration.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@with_poolkit_app
def initdb_command(files: tuple[Path, ...], sql_dir: Path | None, bind: str, show_status: bool,
                   exit_code: bool, dry_run: bool, force: bool, continue_on_error: bool,
                   lock_timeout: float, wait_seconds: float, create_db: bool,
                   jobs: str | None, verbose: bool, quiet: bool) -> None:
    """Apply the project's .sql files (sql/*.sql in natural order, or FILES) once each."""
    state = poolkit_state()
    try:
        paths = list(files) if files else discover(sql_dir or state.sql_dir)
        checked = check_files(paths)
        if dry_run:
            _dry_run(checked, quiet)
            return
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
        created = create_db and wait_for_server(lambda: create_database(settings), wait_seconds)
        if created and not quiet:
            click.echo(f"created database {database!r}")
        conn = wait_for_server(lambda: pool.connection().acquire(), wait_seconds)
    except PoolkitError as error:
        raise click.ClickException(str(error)) from None
    except Exception as error:
        hint = "" if create_db else " (add --create-database if it does not exist)"
        raise click.ClickException(f"cannot connect to {settings.url.masked()}: "
                                   f"{describe_error(error)}{hint}") from None
    with import_session(conn) as raw:
        history = History(raw, database)
        if show_status:
            states = status(checked, history.load())
            for file, what in states:
                click.echo(f"{_MARKS[what]}  {file.name}")
            if exit_code and any(what != APPLIED for _, what in states):
                raise SystemExit(1)
            return
        try:
            with server_lock(raw, database, lock_timeout), \
                    PooledLoader(pool, workers, database) as loader:
                parallel = _parallel_apply(loader, jobs == "auto", quiet) if workers else None
                _run(raw, history, checked, database, force, continue_on_error, verbose, quiet,
                     on_interrupt=lambda: kill_running_statement(settings, raw),
                     parallel=parallel)
        except PoolkitError as error:
            raise click.ClickException(str(error)) from None


def _dry_run(files: list[SqlFile], quiet: bool) -> None:
    total = 0
    for file in files:
        count = count_statements(file.path)
        total += count
        if not quiet:
            click.echo(f"{file.name}  {count} statements  {file.size:,} bytes")
    if not quiet:
        click.echo(f"dry run: {len(files)} files, {total} statements; nothing was sent")


ParallelApply = t.Callable[[SqlFile], "FileResult | ParallelResult | None"]


def _parallel_apply(loader: PooledLoader, auto: bool, quiet: bool) -> ParallelApply:
    """Loads a file on the loader's connections (None: not a dump, under --jobs auto)."""
    def apply(file: SqlFile) -> ParallelResult | None:
        if auto and not is_dump(file):
            return None
        try:
            if quiet or file.size < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
                return loader.load(file)
            with click.progressbar(length=file.size, label=file.name, file=sys.stderr) as bar:
                done = [0]

                def on_progress(offset: int) -> None:
                    bar.update(offset - done[0])
                    done[0] = offset

                return loader.load(file, on_progress=on_progress)
        except KeyboardInterrupt as interrupt:
            result: ParallelResult | None = getattr(interrupt, "poolkit_result", None)
            if result is not None:
                click.echo(f"interrupted: every connection stopped; {_progress(result)}",
                           err=True)
            click.echo(f"interrupted: {_shown(file.path)} was not recorded as applied",
                       err=True)
            raise SystemExit(130) from None
    return apply


def _progress(result: ParallelResult) -> str:
    """How far a parallel load got, for messages."""
    done = f"{result.statements} statement{'s' if result.statements != 1 else ''} ran"
    if result.resume is None:
        return done
    where = f"{_shown(result.resume.path or result.file.path)}:{result.resume.line}"
    how = ("everything before it ran" if result.exact else
           "later tables of this data-only dump ran too and would be loaded twice")
    return f"{done}; a serial re-run may resume at {where} ({how}); none was undone"


def _run(raw: t.Any, history: History, files: list[SqlFile], database: str, force: bool,
         continue_on_error: bool, verbose: bool, quiet: bool,
         on_interrupt: t.Callable[[], object] = lambda: None,
         parallel: ParallelApply | None = None) -> None:
    history.ensure()
    applied = history.load()  # read under the lock: another run may just have finished
    states = status(files, applied)
    changed = [file for file, what in states if what == CHANGED]
    if changed and not force:
        file = changed[0]
        row = applied[file.name]
        others = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise click.ClickException(
            f"{_shown(file.path)}: changed since it was applied on "
            f"{row.applied_at:%Y-%m-%d %H:%M:%S} UTC (checksum {row.checksum[:12]}…, now "
            f"{file.checksum[:12]}…){others}: "
            "put the change in a new file, restore the old one, or re-apply with --force")
    todo = [file for file, what in states if what != APPLIED]
    skipped = len(files) - len(todo)
    started = time.perf_counter()
    statements = failed = recorded = 0
    failed_files: list[str] = []
    for file in todo:
        try:
            result = parallel(file) if parallel is not None else None
            if result is None:
                result = _apply(raw, file, database, continue_on_error, verbose, quiet)
        except KeyboardInterrupt:
            on_interrupt()  # stop the server's statement now, as the mysql client does
            click.echo(f"interrupted: {_shown(file.path)} was not recorded as applied", err=True)
            raise click.Abort() from None
        statements += result.statements
        if not result.ok:
            failed += len(result.errors)
            failed_files.append(_shown(file.path))
            for error in result.errors:
                _report(error)
            if isinstance(result, ParallelResult):
                click.echo(f"{_shown(file.path)}: {_progress(result)}", err=True)
            if not continue_on_error:
                before = f" ({recorded} applied before it stay recorded)" if recorded else ""
                raise click.ClickException(
                    f"stopped at {_shown(file.path)}:{result.errors[0].line}: {file.name} was "
                    f"not recorded as applied{before}")
            continue
        history.record(file, round(result.seconds * 1000), result.statements)
        recorded += 1
        if not quiet:
            click.echo(f"applied {file.name}: {result.statements} statements in "
                       f"{result.seconds:.2f} s")
    seconds = time.perf_counter() - started
    if failed:
        raise click.ClickException(
            f"{failed} statement(s) failed in {len(failed_files)} file(s) "
            f"({', '.join(failed_files)}); those files were not recorded as applied")
    if not quiet and not todo:
        click.echo(f"nothing to apply: {skipped} file{'s' if skipped != 1 else ''} already "
                   "applied")
    elif not quiet:
        note = f"; {skipped} already applied" if skipped else ""
        done = len(todo)
        click.echo(f"{done} file{'s' if done != 1 else ''} applied, {statements} statements "
                   f"in {seconds:.2f} s{note}")

