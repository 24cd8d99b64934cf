"""``flask pool-status``: each pool's settings (password masked), its server and its live stats.

A pool with several hosts (``mysql://…@h1,h2/db?target=…``) lists each host with its role
(primary / replica), replication lag and this process's connections to it.

With ``--workers N`` it checks the capacity plan per host: N processes × the
``POOLKIT_MAX_CONNECTIONS`` of every pool that may connect to that host, against the host's
``max_connections`` (``--strict`` makes an over-commitment exit with status 1, for deploy
scripts). A pool counts in full against each host of the wanted role: after a failover, or
with the other hosts down, all its connections can land on any one of them.
"""

from __future__ import annotations

import json
import typing as t

import click

from poolkit.errors import PoolkitError
from poolkit.url import mask_url

from ._cli import poolkit_state, with_poolkit_app

# MariaDB and MySQL 5.7 have information_schema.GLOBAL_STATUS; MySQL 8 only
# performance_schema.global_status (1109 for the first): tried in this order.
_SERVER_SQL = tuple(
    "SELECT VERSION() AS version, @@GLOBAL.max_connections AS mc, (SELECT VARIABLE_VALUE "
    f"FROM {table} WHERE VARIABLE_NAME = 'THREADS_CONNECTED') AS tc"
    for table in ("information_schema.GLOBAL_STATUS", "performance_schema.global_status"))
_NO_STATUS_TABLE = frozenset({1109, 1146})  # unknown table in information_schema / missing
_SHORT_STATS = ("size", "idle", "in_use", "waiting", "checkouts", "timeouts", "discarded")


def _server_facts(pool: t.Any) -> dict[str, t.Any]:
    """Ask the pool's server about itself through one pooled connection."""
    try:
        with pool.connection() as conn:
            row = _query_facts(conn)
    except Exception as error:  # the status page must show a down server, not crash
        return {"error": _error_text(error)}
    return {"version": str(row["version"]), "max_connections": int(row["mc"]),
            "threads_connected": int(row["tc"] or 0)}


def _query_facts(conn: t.Any) -> dict[str, t.Any]:
    for sql in _SERVER_SQL:
        try:
            row = conn.query_one(sql)
        except Exception as error:
            code = error.args[0] if error.args else None
            if code not in _NO_STATUS_TABLE or sql == _SERVER_SQL[-1]:
                raise
            continue
        assert row is not None
        return t.cast(dict[str, t.Any], row)
    raise AssertionError("unreachable")


def _error_text(error: BaseException) -> str:
    """One line for *error*: poolkit's own errors are masked already, whole; others masked."""
    text = f"{type(error).__name__}: {error}"
    return text if isinstance(error, PoolkitError) else mask_url(text)


def _capacity(pools: dict[str, t.Any], report: dict[str, t.Any],
              workers: int) -> tuple[list[dict[str, t.Any]], list[str]]:
    """Per host: the connections all workers may open against its max_connections."""
    servers: dict[str, dict[str, t.Any]] = {}
    for name, pool in pools.items():
        url = pool.settings.url
        for key, limit in _hosts_of(url, report[name]):
            entry = servers.setdefault(key, {"server": key, "pools": [], "per_worker": 0,
                                             "max_connections": None})
            entry["pools"].append(name)
            entry["per_worker"] += pool.settings.max_connections
            if limit is not None:
                entry["max_connections"] = limit
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
    for name, entry in report.items():
        for host in entry.get("hosts", ()):
            if host.get("error"):
                warnings.append(f"pool {name!r}: host {host['host']} is unreachable: "
                                f"{host['error']}")
    return list(servers.values()), warnings


def _hosts_of(url: t.Any, entry: dict[str, t.Any]) -> list[tuple[str, int | None]]:
    """The hosts a pool may connect to, each with its max_connections if known."""
    if "hosts" not in entry:  # one host: the server facts came through the pool
        key = url.options.get("unix_socket") or f"{url.host}:{url.port}"
        return [(key, entry["server"].get("max_connections"))]
    wanted = {"primary": ("primary", None), "replica": ("replica", None)}.get(url.target)
    return [(host["host"], host.get("max_connections")) for host in entry["hosts"]
            if wanted is None or host["role"] in wanted]


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
        for host in entry.get("hosts", ()):
            click.echo("  host      " + _host_line(host))
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


def _host_line(host: dict[str, t.Any]) -> str:
    if host.get("error"):
        return f"{host['host']}  unreachable: {host['error']}"
    role = host["role"] or "?"
    if host.get("node_state") is not None:  # a Galera node: its state beside the role
        role += f" (galera {host['node_state']}, wsrep_ready {'ON' if host['ready'] else 'OFF'})"
    if role.startswith("replica"):
        lag = ("lag ?" + (f" ({host['lag_error']})" if host["lag_error"] else "")
               if host["lag"] is None else f"lag {host['lag']:g} s")
    else:
        lag = "lag -"
    return (f"{host['host']}  {role}  {lag}  connections {host['connections']}  "
            f"max_connections {host.get('max_connections', '?')}  Threads_connected "
            f"{host.get('threads_connected', '?')}")


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
    report: dict[str, dict[str, t.Any]] = {}
    for name, pool in pools.items():
        entry = report[name] = {"settings": pool.settings.describe(),
                                "server": _server_facts(pool)}
        if pool.hosts.routed:  # several hosts or a role: each host, asked now
            entry["hosts"] = pool.hosts.inspect()
        entry["stats"] = pool.stats()
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
