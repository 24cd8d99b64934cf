"""``flask pool-status``: each pool's settings (password masked), its server and its live stats.

With ``--workers N`` it checks the capacity plan: N processes × every pool's
``POOLKIT_MAX_CONNECTIONS`` against the server's ``max_connections`` (``--strict`` makes an
over-commitment exit with status 1, for deploy scripts).
"""

from __future__ import annotations

import json
import typing as t

import click

from poolkit.url import mask_url

from ._cli import poolkit_state, with_poolkit_app

_SERVER_SQL = ("SELECT VERSION() AS version, @@GLOBAL.max_connections AS mc, "
               "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
               "WHERE VARIABLE_NAME = 'THREADS_CONNECTED') AS tc")
_SHORT_STATS = ("size", "idle", "in_use", "waiting", "checkouts", "timeouts", "discarded")


def _server_facts(pool: t.Any) -> dict[str, t.Any]:
    """Ask the pool's server about itself through one pooled connection."""
    try:
        with pool.connection() as conn:
            row = conn.query_one(_SERVER_SQL)
    except Exception as error:  # the status page must show a down server, not crash
        return {"error": mask_url(f"{type(error).__name__}: {error}")}
    assert row is not None
    return {"version": str(row["version"]), "max_connections": int(row["mc"]),
            "threads_connected": int(row["tc"] or 0)}


def _capacity(pools: dict[str, t.Any], report: dict[str, t.Any],
              workers: int) -> tuple[list[dict[str, t.Any]], list[str]]:
    """Per server: the connections all workers may open against its max_connections."""
    servers: dict[str, dict[str, t.Any]] = {}
    for name, pool in pools.items():
        url = pool.settings.url
        key = url.options.get("unix_socket") or f"{url.host}:{url.port}"
        entry = servers.setdefault(key, {"server": key, "pools": [], "per_worker": 0,
                                         "max_connections": None})
        entry["pools"].append(name)
        entry["per_worker"] += pool.settings.max_connections
        facts = report[name]["server"]
        if "max_connections" in facts:
            entry["max_connections"] = facts["max_connections"]
    warnings: list[str] = []
    for entry in servers.values():
        entry["workers"] = workers
        entry["demand"] = demand = entry["per_worker"] * workers
        limit = entry["max_connections"]
        if limit is not None and demand > limit:
            pools_text = ", ".join(repr(p) for p in entry["pools"])
            warnings.append(
                f"{workers} worker(s) × {entry['per_worker']} connections ({pools_text}) = "
                f"{demand} > max_connections {limit} of {entry['server']}: lower "
                f"POOLKIT_MAX_CONNECTIONS or --workers, or raise the server's max_connections")
    return list(servers.values()), warnings


def _print_text(report: dict[str, t.Any], servers: list[dict[str, t.Any]], verbose: bool) -> None:
    for name, entry in report.items():
        settings, server, stats = entry["settings"], entry["server"], entry["stats"]
        click.echo(f"pool {name!r}  {settings['url']}  ({settings['driver']})")
        if "error" in server:
            click.echo(f"  server    unreachable: {server['error']}")
        else:
            click.echo(f"  server    {server['version']}  max_connections "
                       f"{server['max_connections']}  Threads_connected "
                       f"{server['threads_connected']}")
        shown = settings if verbose else {k: settings[k] for k in (
            "max_connections", "timeout", "max_lifetime", "idle_timeout")}
        click.echo("  settings  " + "  ".join(f"{k}={v}" for k, v in shown.items()
                                               if k not in ("name", "url", "driver")))
        keys = stats if verbose else {k: stats[k] for k in _SHORT_STATS}
        click.echo("  stats     " + "  ".join(f"{k}={_fmt(v)}" for k, v in keys.items()))
    for entry in servers:
        limit = entry["max_connections"]
        click.echo(f"capacity  {entry['server']}: {entry['workers']} worker(s) × "
                   f"{entry['per_worker']} = {entry['demand']} of max_connections "
                   f"{'?' if limit is None else limit}")


def _fmt(value: float) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@click.command("pool-status")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes that each get their own pools (gunicorn -w).")
@click.option("--bind", "binds", multiple=True, help="Only this pool (repeatable).")
@click.option("--strict", is_flag=True, help="Exit with status 1 when a warning is printed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("-v", "--verbose", is_flag=True, help="Every setting and every counter.")
@click.option("-q", "--quiet", is_flag=True, help="Print only warnings and errors.")
@with_poolkit_app
def pool_status_command(workers: int, binds: tuple[str, ...], strict: bool, as_json: bool,
                        verbose: bool, quiet: bool) -> None:
    """Show each pool's settings, its server and live stats; check capacity per --workers."""
    state = poolkit_state()
    pools = {name: state.pool(name) for name in binds} if binds else dict(state.pools)
    report = {name: {"settings": pool.settings.describe(), "server": _server_facts(pool),
                     "stats": pool.stats()} for name, pool in pools.items()}
    servers, warnings = _capacity(pools, report, workers)
    errors = [f"pool {name!r}: {entry['server']['error']}" for name, entry in report.items()
              if "error" in entry["server"]]
    if as_json:
        click.echo(json.dumps({"pools": report, "servers": servers, "warnings": warnings,
                               "errors": errors}, indent=2, sort_keys=False))
    elif not quiet:
        _print_text(report, servers, verbose)
    if not as_json:
        for text in warnings:
            click.secho(f"warning: {text}", fg="yellow", err=True)
        for text in errors:
            click.secho(f"error: {text}", fg="red", err=True)
    if errors or (strict and warnings):
        raise SystemExit(1)
