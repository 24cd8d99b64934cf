"""``flask pool-status`` on a multi-host pool: each host with its role, lag and connections."""

from __future__ import annotations

import json
import typing as t

import pytest
from flask import Flask

from poolkit import db
from poolkit.commands.pool_status import pool_status_command
from poolkit.testing.servers import ReplicationPair

pytestmark = pytest.mark.replication


def test_each_host_with_role_lag_and_connections(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items, POOLKIT_MAX_CONNECTIONS=4, POOLKIT_MAX_REPLICA_LAG=5.0)
    with app.app_context():
        db.scalar("SELECT 1")
        db.using("replica").scalar("SELECT 1")
    runner = app.test_cli_runner()
    result = runner.invoke(pool_status_command, [])
    assert result.exit_code == 0, result.output
    out = result.output
    primary, replica = items.primary.address, items.replica.address
    assert f"host      {primary}  primary  lag -  connections 1" in out
    assert f"host      {replica}  replica  lag 0 s  connections 1" in out
    assert "app-secret" not in out and "poolkit_app:***@" in out
    data = json.loads(runner.invoke(pool_status_command, ["--json", "--workers", "3"]).output)
    hosts = {h["host"]: h for h in data["pools"]["replica"]["hosts"]}
    assert hosts[replica]["role"] == "replica" and hosts[replica]["lag"] == 0.0
    assert hosts[primary]["max_connections"] == 200  # the private servers' setting
    # Capacity per host: the default pool (4) can only use the primary, the replica bind (4)
    # only the replica.
    servers = {s["server"]: s for s in data["servers"]}
    assert servers[primary]["pools"] == ["default"] and servers[primary]["demand"] == 12
    assert servers[replica]["pools"] == ["replica"] and servers[replica]["demand"] == 12
    over = runner.invoke(pool_status_command, ["--workers", "60", "--strict"])
    assert over.exit_code == 1
    assert f"= 240 > max_connections 200 of {primary}" in over.output


def test_a_down_host_is_a_warning_not_a_failure(
        fresh_pair: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(fresh_pair)
    fresh_pair.primary.kill()
    result = app.test_cli_runner().invoke(pool_status_command, ["--bind", "replica"])
    assert result.exit_code == 0, result.output
    assert f"host      {fresh_pair.primary.address}  unreachable: 2003" in result.output
    assert f"warning: pool 'replica': host {fresh_pair.primary.address} is unreachable" in (
        result.output)
