"""``flask pool-stress``: a global connection, a connection per view and the pool, measured.

Thin: parse the options, call :func:`poolkit.stress.run_stress`, print the progress line, the
table, the errors and the verdicts; write ``--json`` and ``--plot``.
"""

from __future__ import annotations

import json
import math
import sys
import typing as t

import click
from flask import current_app

from poolkit.stress.report import StrategyResult, StressReport
from poolkit.stress.runner import Progress, StressError, StressOptions, parse_strategies, run_stress
from poolkit.stress.sweep import SweepReport, parse_sizes, run_sweep

from ._cli import with_poolkit_app
from ._stress_plot import plotter, write_strategies, write_sweep

_ERROR_LINES = 8  # per strategy, unless -v


class OptionError(click.ClickException):
    """A bad option value: one line, exit code 2 (as click's own usage errors)."""

    exit_code = 2


def _int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _share(part: int, whole: int) -> str:
    return "-" if not whole else f"{part / whole:.0%}" if part else "0"


def format_progress(p: Progress) -> str:
    """``[ 3s ] pooled  thr 16  ok/s 4,210  p95 4.1 ms  err/s 0``: successes and errors apart."""
    threads = f"{p.workers}×{p.threads}" if p.workers > 1 else str(p.threads)
    ok_per_s = max(p.req_per_s - p.err_per_s, 0.0)
    return (f"[{p.elapsed:3.0f}s ] {p.strategy:<8} thr {threads}  ok/s {ok_per_s:,.0f}  "
            f"p95 {p.p95_ms:,.1f} ms  err/s {p.err_per_s:,.0f}")


_COLUMNS = (("strategy", "<"), ("requests", ">"), ("ok/s", ">"), ("failed", ">"), ("avg", ">"),
            ("p50", ">"), ("p95", ">"), ("p99", ">"), ("max", ">"), ("errors", ">"),
            ("wrong rows", ">"),
            ("opened", ">"), ("server conns", ">"), ("peak threads", ">"), ("connect", ">"))


def format_table(report: StressReport) -> list[str]:
    """One row per strategy; latencies in ms; connect is the mean time of one new connection."""
    rows = []
    for result in report.results:
        data = result.to_dict()
        lat = data["latency_ms"]
        connect = data["connect_time_mean_ms"]
        rows.append((
            result.strategy, _int(data["requests"]), _int(data["ok_per_s"]),
            _share(data["requests"] - data["ok"], data["requests"]), _ms(lat["avg"]),
            _ms(lat["p50"]), _ms(lat["p95"]), _ms(lat["p99"]),
            _ms(lat["max"]), _int(data["errors"]),
            _int(data["wrong_rows"] + data["lost_rows"]), _int(data["connections_opened"]),
            _int(data["server_connections"]),
            _int(data["peak_threads_connected"]),
            "-" if connect is None else f"{_ms(connect)} ms",
        ))
    lines = _aligned(_COLUMNS, rows)
    lines.append("ok/s: successful requests per second (failed ones are not counted: see "
                 "failed, errors and wrong rows); latency in ms of successful requests; "
                 "opened: connections this run opened; "
                 "server conns: rise of the server's Connections counter (all clients); peak "
                 "threads: highest Threads_connected; connect: mean time to open one connection")
    return lines


def format_errors(report: StressReport, limit: int | None) -> list[str]:
    """Errors grouped by type and message, most frequent first."""
    lines = []
    for result in report.results:
        groups = result.error_groups()
        shown = groups if limit is None else groups[:limit]
        for key, count in shown:
            lines.append(f"  {result.strategy:<8} {count:>9,}  {key}")
        if len(shown) < len(groups):
            rest = sum(count for _, count in groups[len(shown):])
            lines.append(f"  {result.strategy:<8} {rest:>9,}  … {len(groups) - len(shown)} "
                         "more kinds (-v shows all)")
        if result.load.hung_threads:
            lines.append(f"  {result.strategy:<8} {result.load.hung_threads:>9,}  threads "
                         "still blocked at the end (abandoned)")
    return lines


_SWEEP_COLUMNS = (("pool", ">"), ("requests", ">"), ("ok/s", ">"), ("p50", ">"),
                  ("p99", ">"), ("wait", ">"), ("timeouts", ">"), ("errors", ">"),
                  ("server conns", ">"), ("peak threads", ">"))


def _aligned(columns: tuple[tuple[str, str], ...],
             rows: t.Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(name), *(len(row[i]) for row in rows)) if rows else len(name)
              for i, (name, _) in enumerate(columns)]
    lines = ["  ".join(f"{name:{align}{w}}" for (name, align), w in
                       zip(columns, widths, strict=True))]
    lines += ["  ".join(f"{cell:{align}{w}}" for cell, (_, align), w in
                        zip(row, columns, widths, strict=True)) for row in rows]
    return lines


def sweep_row(result: StrategyResult) -> tuple[str, ...]:
    """One pool size: successful req/s, latency of successful requests, pool and server."""
    data = result.to_dict()
    lat = data["latency_ms"]
    return (str(result.pool_size), _int(data["requests"]), _int(data["ok_per_s"]),
            _ms(lat["p50"]), _ms(lat["p99"]),
            "-" if data["wait_mean_ms"] is None else f"{data['wait_mean_ms']:,.2f}",
            _int(data["timeouts"]), _int(data["errors"] + data["wrong_rows"]
                                         + data["lost_rows"]),
            _int(data["server_connections"]), _int(data["peak_threads_connected"]))


def format_sweep(report: SweepReport) -> list[str]:
    """The sweep table, the recommended size and HikariCP's rule of thumb beside it."""
    lines = _aligned(_SWEEP_COLUMNS, [sweep_row(r) for r in report.points])
    lines.append("ok/s: successful requests per second; p50/p99 in ms of successful requests; "
                 "wait: mean ms to obtain a connection; server conns: rise of the server's "
                 "Connections counter")
    advice = report.recommendation()
    lines.append("")
    if advice.pool_size is None:
        lines.append(f"no recommendation: {advice.reason}")
    else:
        lines.append(f"recommended pool size: {advice.pool_size} — {advice.reason} "
                     f"({advice.best_ok_per_s:,.0f} ok/s at {advice.best_ok_per_s_size}, p99 "
                     f"{_ms(advice.best_p99_ms)} ms at {advice.best_p99_size})")
    rule = report.rule
    workers = report.options.workers
    if rule.pool_size is None:
        lines.append(f"HikariCP's rule of thumb (cores × 2 + spindles): server cores "
                     f"{rule.cores_from}")
    else:
        spindles = f"{rule.spindles} spindle" + ("s" if rule.spindles != 1 else "")
        text = (f"HikariCP's rule of thumb for this server: {rule.cores} cores × 2 + "
                f"{spindles} = {rule.pool_size} connections (cores from {rule.cores_from})")
        if workers > 1:
            text += f", {rule.pool_size / workers:g} per worker with {workers} workers"
        lines.append(text)
    return lines


@click.command("pool-stress")
@click.option("--strategy", "strategies", default="global,per-view,pooled", show_default=True,
              help="Comma-separated strategies to run, one after another.")
@click.option("--threads", type=int, default=16, show_default=True,
              help="Concurrent request threads (per worker).")
@click.option("--seconds", type=float, default=None,
              help="Seconds per strategy [default: 3; with --requests: at most 600].")
@click.option("--requests", type=int, default=None,
              help="Stop a strategy after this many requests (in all workers).")
@click.option("--pool-size", type=int, default=None,
              help="Connections of the pooled strategy's pool, per worker "
                   "[default: the app's POOLKIT_MAX_CONNECTIONS].")
@click.option("--warmup", type=float, default=0.0, show_default=True,
              help="Seconds of unmeasured load before each strategy.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes (forked), each with its own threads and connections.")
@click.option("--query", default=None, help="SQL each request runs instead of SELECT <nonce>.")
@click.option("--endpoint", default=None,
              help="GET this path of the app (its own view) instead of the stress view.")
@click.option("--write", is_flag=True,
              help="INSERT a row then SELECT it back in a scratch table (dropped afterwards).")
@click.option("--sweep", default=None, metavar="SIZES",
              help="Comma-separated pool sizes (e.g. 1,2,4,8,16): run the pooled strategy at "
                   "each with the same threads and workload, and recommend a size.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write every figure to this JSON file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw req/s and latency per strategy (with --sweep: against pool size) "
                   "into this PNG (needs matplotlib).")
@click.option("-v", "--verbose", is_flag=True, help="Show the settings and every error kind.")
@click.option("-q", "--quiet", is_flag=True, help="Only the verdicts.")
@with_poolkit_app
def pool_stress_command(strategies: str, threads: int, seconds: float | None,
                        requests: int | None, pool_size: int | None, warmup: float,
                        workers: int, query: str | None, endpoint: str | None, write: bool,
                        sweep: str | None, json_path: str | None, plot_path: str | None,
                        verbose: bool, quiet: bool) -> None:
    """Measure a global shared connection, a connection per view and the pool on this app.

    Each request goes through the app (routing, app context, teardown) on many threads; the
    table shows throughput, latency, errors, wrong rows (replies meant for another request)
    and what the server saw. It only talks to the app's configured database.

    With --sweep 1,2,4,8,16 it runs only the pooled strategy, once per pool size, and
    recommends the smallest size within 5 % of the best throughput and 10 % of the best p99,
    beside HikariCP's rule of thumb (server cores × 2 + spindles) for the measured server.
    """
    ctx = click.get_current_context()
    try:
        sizes = parse_sizes(sweep) if sweep is not None else ()
        if sizes:
            for name in ("strategies", "pool_size"):
                if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
                    flag = "--strategy" if name == "strategies" else "--pool-size"
                    raise StressError(f"--sweep runs the pooled strategy at each of its sizes; "
                                      f"drop {flag}")
            strategies = "pooled"
        options = StressOptions(
            strategies=parse_strategies(strategies), threads=threads, seconds=seconds,
            requests=requests, pool_size=pool_size, warmup=warmup, workers=workers,
            query=query, endpoint=endpoint, write=write)
        options.validate()
    except StressError as error:
        raise OptionError(str(error)) from None
    plt = plotter() if plot_path else None
    show_progress = not quiet and sys.stderr.isatty()

    def progress(p: Progress) -> None:
        if show_progress:
            click.echo(format_progress(p), err=True)

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if sizes:
        _sweep(app, options, sizes, progress, json_path, plot_path, plt, quiet)
        return
    try:
        report = run_stress(app, options, progress)
    except StressError as error:
        raise click.ClickException(str(error)) from None
    if verbose:
        click.echo(f"database {report.database}  workload {report.workload}  "
                   f"threads {report.threads}  workers {report.workers}  "
                   f"pool {report.pool_size}  {report.seconds:g} s per strategy", err=True)
    if not quiet:
        click.echo("\n".join(format_table(report)))
        errors = format_errors(report, None if verbose else _ERROR_LINES)
        if errors:
            click.echo("\nerrors by type and message:")
            click.echo("\n".join(errors))
        click.echo("")
    for verdict in report.verdicts():
        click.echo(verdict.text)
    _write(report.to_dict(), json_path, quiet)
    if plt is not None and plot_path:
        write_strategies(report, plot_path, plt)
        _wrote(plot_path, quiet)


def _wrote(path: str, quiet: bool) -> None:
    if not quiet:
        click.echo(f"wrote {path}")


def _write(data: dict[str, t.Any], json_path: str | None, quiet: bool) -> None:
    if json_path:
        with open(json_path, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, ensure_ascii=False)
            out.write("\n")
        _wrote(json_path, quiet)


def _sweep(app: t.Any, options: StressOptions, sizes: tuple[int, ...],
           progress: t.Callable[[Progress], None], json_path: str | None,
           plot_path: str | None, plt: t.Any, quiet: bool) -> None:
    try:
        report = run_sweep(app, options, sizes, progress)
    except StressError as error:
        raise click.ClickException(str(error)) from None
    lines = format_sweep(report)
    if quiet:  # only the advice
        lines = [line for line in lines if line.startswith(("recommended", "no rec",
                                                             "HikariCP"))]
    click.echo("\n".join(lines))
    _write(report.to_dict(), json_path, quiet)
    if plt is not None and plot_path:
        write_sweep(report, plot_path, plt)
        _wrote(plot_path, quiet)
