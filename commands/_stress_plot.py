"""The PNGs of ``flask pool-stress --plot``: strategies side by side, or a pool-size sweep.

Latency is that of successful requests only (a request that fails fast would look fast);
failures are drawn as their own bars and named under each strategy.
"""

from __future__ import annotations

import typing as t

import click

from poolkit.stress.report import StressReport
from poolkit.stress.sweep import SweepReport


def plotter() -> t.Any:
    """matplotlib's pyplot on the Agg backend, or a one-line error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException("--plot needs matplotlib: pip install 'poolkit[plot]'"
                                   ) from None
    return plt


def _label(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _threads(threads: int, workers: int) -> str:
    return f"{workers} workers × {threads} threads" if workers > 1 else f"{threads} threads"


def write_strategies(report: StressReport, path: str, plt: t.Any) -> None:
    """Requests/s (successful and failed) and p50/p99 of successful requests, per strategy."""
    data = [r.to_dict() for r in report.results]
    ok = [d["ok"] / d["seconds"] if d["seconds"] else 0.0 for d in data]
    bad = [(d["requests"] - d["ok"]) / d["seconds"] if d["seconds"] else 0.0 for d in data]
    p50 = [d["latency_ms"]["p50"] or 0.0 for d in data]
    p99 = [d["latency_ms"]["p99"] or 0.0 for d in data]
    names = []
    for result, d in zip(report.results, data, strict=True):
        failed = d["requests"] - d["ok"]
        share = f"{failed / d['requests']:.0%} failed" if d["requests"] else "no requests"
        names.append(f"{result.strategy}\n{share}" if failed or not d["requests"]
                     else f"{result.strategy}\n0 failed")
    x = list(range(len(names)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.6), dpi=110)
    width = 0.38
    for axis, series, labels, colors in (
        (left, (ok, bad), ("successful", "failed (errors, wrong rows)"), ("#3b7dd8", "#d8453b")),
        (right, (p50, p99), ("p50", "p99"), ("#8fb4e8", "#1f4e99")),
    ):
        positive = [v for values in series for v in values if v > 0]
        bottom = max(min(positive, default=1.0) / 3, 0.01)
        for i, (values, label, color) in enumerate(zip(series, labels, colors, strict=True)):
            offsets = [v + (i - 0.5) * width for v in x]
            bars = axis.bar(offsets, [v if v > 0 else bottom for v in values], width,
                            label=label, color=color)
            for bar, value in zip(bars, values, strict=True):
                # A zero bar has no height on a log scale: its "0" sits on the axis.
                axis.annotate(_label(value), (bar.get_x() + bar.get_width() / 2,
                                              max(value, bottom)),
                              ha="center", va="bottom", fontsize=8)
        axis.set_xticks(x, names)
        axis.set_yscale("log")
        axis.set_ylim(bottom=bottom, top=max([*positive, 1.0]) * 4)
        axis.legend(fontsize=8, loc="upper left")
        axis.grid(axis="y", alpha=0.3)
        axis.set_xlabel("strategy")
    for i, d in enumerate(data):
        if not d["ok"]:
            right.annotate("no successful\nrequest", (i, bottom), ha="center", va="bottom",
                           fontsize=8, color="#d8453b")
    left.set_title("throughput")
    left.set_ylabel("requests per second (log scale)")
    right.set_title("latency of successful requests (lower is better)")
    right.set_ylabel("milliseconds (log scale)")
    fig.suptitle(f"flask pool-stress — {report.workload}, "
                 f"{_threads(report.threads, report.workers)}, pool {report.pool_size}, "
                 f"{report.seconds:g} s per strategy", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_sweep(report: SweepReport, path: str, plt: t.Any) -> None:
    """Successful requests/s and p99 against pool size; the advice and the rule of thumb."""
    data = report.to_dict()["sweep"]
    sizes = [p["pool_size"] for p in data["points"]]
    ok = [p["ok_per_s"] for p in data["points"]]
    p99 = [p["latency_ms"]["p99"] for p in data["points"]]
    failed = [p["requests"] - p["ok"] for p in data["points"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.9), dpi=110)
    left.plot(sizes, ok, marker="o", color="#3b7dd8", label="successful requests/s")
    right.plot([s for s, v in zip(sizes, p99, strict=True) if v is not None],
               [v for v in p99 if v is not None], marker="o", color="#1f4e99",
               label="p99 of successful requests")
    # A white box under each label: a marker line through a point never crosses its figure.
    box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
           "alpha": 0.85}
    for size, value, bad in zip(sizes, ok, failed, strict=True):
        left.annotate(_label(value) + (f"\n{bad:,} failed" if bad else ""), (size, value),
                      textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8,
                      bbox=box, zorder=5)
    for size, value in zip(sizes, p99, strict=True):
        if value is not None:
            right.annotate(_label(value), (size, value), textcoords="offset points",
                           xytext=(0, 7), ha="center", fontsize=8, bbox=box, zorder=5)
    advised = data["recommended_pool_size"]
    by_throughput_only = data["throughput_only"]
    thumb = data["rule_of_thumb"]["pool_size"]
    workers = report.options.workers
    for axis in (left, right):
        if advised is not None:
            axis.axvline(advised, color="#2a9d4b", linestyle="--",
                         label=f"recommended: {advised}" + (
                             " (by throughput alone: no size also had a near-best p99)"
                             if by_throughput_only else ""))
        if thumb is not None:
            per_worker = thumb / workers
            axis.axvline(per_worker, color="#999999", linestyle=":",
                         label=f"HikariCP rule of thumb: {per_worker:g}"
                         + (" per worker" if workers > 1 else ""))
        axis.set_xscale("log", base=2)
        # Room beside the first and last size, so their labels stay inside the axes.
        axis.set_xlim(min(sizes) / 1.5, max(sizes) * 1.5)
        axis.set_xticks(sizes, [str(s) for s in sizes])
        axis.set_xlabel("pool size (connections per worker)" if workers > 1
                        else "pool size (connections)")
        axis.grid(alpha=0.3)
        # Below the axes: a curve may pass anywhere inside them.
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1,
                    frameon=False)
        axis.set_ylim(bottom=0)
    left.set_ylim(top=max([*ok, 1.0]) * 1.25)
    right.set_ylim(top=max([v for v in p99 if v is not None] + [1.0]) * 1.25)
    left.set_title("throughput (higher is better)")
    left.set_ylabel("successful requests per second")
    right.set_title("p99 latency (lower is better)")
    right.set_ylabel("milliseconds")
    options = report.options
    fig.suptitle(f"flask pool-stress --sweep — {options.workload}, "
                 f"{_threads(options.threads, options.workers)}, {options.time_limit:g} s "
                 "per size", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
