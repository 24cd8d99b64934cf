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

from poolkit.stress.report import StressReport
from poolkit.stress.runner import Progress, StressError, StressOptions, parse_strategies, run_stress

from ._cli import with_poolkit_app

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


def format_progress(p: Progress) -> str:
    """``[ 3s ] pooled  thr 16  req/s 4,210  p95 4.1 ms  err/s 0``."""
    threads = f"{p.workers}×{p.threads}" if p.workers > 1 else str(p.threads)
    return (f"[{p.elapsed:3.0f}s ] {p.strategy:<8} thr {threads}  req/s {p.req_per_s:,.0f}  "
            f"p95 {p.p95_ms:,.1f} ms  err/s {p.err_per_s:,.0f}")


_COLUMNS = (("strategy", "<"), ("requests", ">"), ("req/s", ">"), ("avg", ">"), ("p50", ">"),
            ("p95", ">"), ("p99", ">"), ("max", ">"), ("errors", ">"), ("wrong rows", ">"),
            ("opened", ">"), ("server conns", ">"), ("peak threads", ">"), ("connect", ">"))


def format_table(report: StressReport) -> list[str]:
    """One row per strategy; latencies in ms; connect is the mean time of one new connection."""
    rows = []
    for result in report.results:
        data = result.to_dict()
        lat = data["latency_ms"]
        connect = data["connect_time_mean_ms"]
        rows.append((
            result.strategy, _int(data["requests"]), _int(data["req_per_s"]),
            _ms(lat["avg"]), _ms(lat["p50"]), _ms(lat["p95"]), _ms(lat["p99"]),
            _ms(lat["max"]), _int(data["errors"]),
            _int(data["wrong_rows"] + data["lost_rows"]), _int(data["connections_opened"]),
            _int(data["server_connections"]),
            _int(data["peak_threads_connected"]),
            "-" if connect is None else f"{_ms(connect)} ms",
        ))
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, (name, _) in
              enumerate(_COLUMNS)]
    header = zip(_COLUMNS, widths, strict=True)
    lines = ["  ".join(f"{name:{align}{w}}" for (name, align), w in header)]
    lines += ["  ".join(f"{cell:{align}{w}}" for cell, (_, align), w in
                        zip(row, _COLUMNS, widths, strict=True)) for row in rows]
    lines.append("latency in ms over every request; opened: connections this run opened; server "
                 "conns: rise of the server's Connections counter (all clients); peak threads: "
                 "highest Threads_connected; connect: mean time to open one connection")
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


def _plotter() -> t.Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException("--plot needs matplotlib: pip install 'poolkit[plot]'"
                                   ) from None
    return plt


def write_plot(report: StressReport, path: str, plt: t.Any) -> None:
    """A PNG: requests/s (ok and failed) and p50/p99 latency, per strategy, log scales."""
    names = [r.strategy for r in report.results]
    data = [r.to_dict() for r in report.results]
    ok = [d["ok"] / d["seconds"] if d["seconds"] else 0.0 for d in data]
    bad = [(d["requests"] - d["ok"]) / d["seconds"] if d["seconds"] else 0.0 for d in data]
    p50 = [d["latency_ms"]["p50"] or 0.0 for d in data]
    p99 = [d["latency_ms"]["p99"] or 0.0 for d in data]
    x = list(range(len(names)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    width = 0.38
    for axis, series, labels, colors in (
        (left, (ok, bad), ("ok", "errors + wrong rows"), ("#3b7dd8", "#d8453b")),
        (right, (p50, p99), ("p50", "p99"), ("#8fb4e8", "#1f4e99")),
    ):
        for i, (values, label, color) in enumerate(zip(series, labels, colors, strict=True)):
            offsets = [v + (i - 0.5) * width for v in x]
            bars = axis.bar(offsets, [max(v, 1e-3) for v in values], width, label=label,
                            color=color)
            for bar, value in zip(bars, values, strict=True):
                if value > 0:
                    axis.annotate(f"{value:,.0f}" if value >= 10 else f"{value:.1f}",
                                  (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                  ha="center", va="bottom", fontsize=8)
        axis.set_xticks(x, names)
        axis.set_yscale("log")
        axis.legend(fontsize=8, loc="upper left")
        axis.grid(axis="y", alpha=0.3)
    left.set_title("requests per second (log)")
    right.set_title("latency, ms (log; lower is better)")
    bottom = max(min([v for v in ok + bad if v > 0], default=1.0) / 3, 0.1)
    left.set_ylim(bottom=bottom, top=max([*ok, *bad, 1.0]) * 4)
    right.set_ylim(bottom=max(min([v for v in p50 if v > 0], default=1.0) / 3, 0.01),
                   top=max([*p99, 1.0]) * 4)
    threads = (f"{report.workers} workers × {report.threads} threads" if report.workers > 1
               else f"{report.threads} threads")
    fig.suptitle(f"flask pool-stress — {report.workload}, {threads}, pool {report.pool_size}, "
                 f"{report.seconds:g} s per strategy", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write every figure to this JSON file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw req/s and latency per strategy into this PNG (needs matplotlib).")
@click.option("-v", "--verbose", is_flag=True, help="Show the settings and every error kind.")
@click.option("-q", "--quiet", is_flag=True, help="Only the verdicts.")
@with_poolkit_app
def pool_stress_command(strategies: str, threads: int, seconds: float | None,
                        requests: int | None, pool_size: int | None, warmup: float,
                        workers: int, query: str | None, endpoint: str | None, write: bool,
                        json_path: str | None, plot_path: str | None, verbose: bool,
                        quiet: bool) -> None:
    """Measure a global shared connection, a connection per view and the pool on this app.

    Each request goes through the app (routing, app context, teardown) on many threads; the
    table shows throughput, latency, errors, wrong rows (replies meant for another request)
    and what the server saw. It only talks to the app's configured database.
    """
    try:
        options = StressOptions(
            strategies=parse_strategies(strategies), threads=threads, seconds=seconds,
            requests=requests, pool_size=pool_size, warmup=warmup, workers=workers,
            query=query, endpoint=endpoint, write=write)
        options.validate()
    except StressError as error:
        raise OptionError(str(error)) from None
    plt = _plotter() if plot_path else None
    show_progress = not quiet and sys.stderr.isatty()

    def progress(p: Progress) -> None:
        if show_progress:
            click.echo(format_progress(p), err=True)

    app = current_app._get_current_object()  # type: ignore[attr-defined]
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
    if json_path:
        with open(json_path, "w", encoding="utf-8") as out:
            json.dump(report.to_dict(), out, indent=2, ensure_ascii=False)
            out.write("\n")
    if plt is not None and plot_path:
        write_plot(report, plot_path, plt)
