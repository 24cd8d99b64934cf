"""``flask pool-status`` through the test CLI runner, on the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask

from poolkit.commands.pool_status import pool_status_command
from poolkit.url import parse_url


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(pool_status_command, list(args))


@pytest.fixture
def status_app(make_app: t.Callable[..., Flask], make_database: t.Callable[[], str]) -> Flask:
    return make_app(POOLKIT_MAX_CONNECTIONS=7,
                    POOLKIT_BINDS={"replica": {"url": make_database(), "max_connections": 3}})


def server_max_connections(app: Flask) -> int:
    with app.extensions["poolkit"].extension.connection() as conn:
        return int(conn.scalar("SELECT @@GLOBAL.max_connections"))


def test_text_report(status_app: Flask) -> None:
    result = run(status_app)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "pool 'default'" in out and "pool 'replica'" in out
    assert "(pymysql)" in out
    assert "MariaDB" in out or "max_connections" in out
    assert f"max_connections {server_max_connections(status_app)}" in out
    assert "Threads_connected" in out
    assert "max_connections=7" in out and "max_connections=3" in out
    assert "checkouts=" in out
    assert "1 worker(s) × 10 = 10 of max_connections" in out
    assert "warning" not in out


def test_json_report(status_app: Flask) -> None:
    result = run(status_app, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert list(data["pools"]) == ["default", "replica"]
    default = data["pools"]["default"]
    assert default["settings"]["max_connections"] == 7
    assert default["server"]["max_connections"] == server_max_connections(status_app)
    assert default["server"]["threads_connected"] >= 1
    assert default["stats"]["checkouts"] >= 1  # the status query itself
    assert set(default["stats"]) >= {"size", "idle", "in_use", "waiting", "checkouts"}
    assert data["servers"][0]["per_worker"] == 10
    assert data["warnings"] == [] and data["errors"] == []


def test_workers_over_max_connections_warn(status_app: Flask) -> None:
    limit = server_max_connections(status_app)
    workers = limit // 10 + 1  # 10 connections per worker on this server
    result = run(status_app, "--workers", str(workers))
    assert result.exit_code == 0
    assert (f"warning: {workers} worker(s) × 10 connections ('default', 'replica') = "
            f"{workers * 10} > max_connections {limit}") in result.output
    strict = run(status_app, "--workers", str(workers), "--strict", "-q")
    assert strict.exit_code == 1
    assert strict.output.startswith("warning:")  # -q: nothing but the warning
    fine = run(status_app, "--workers", str(max(1, limit // 10 - 1)), "--strict")
    assert fine.exit_code == 0
    data = json.loads(run(status_app, "--workers", str(workers), "--json").output)
    assert len(data["warnings"]) == 1


def test_verbose_shows_every_setting_and_counter(status_app: Flask) -> None:
    out = run(status_app, "-v", "--bind", "replica").output
    assert "pool 'default'" not in out
    assert "ping_interval=0.5" in out and "reset=auto" in out
    assert "connect_time_total=" in out and "pings=" in out


def test_password_is_masked(make_app: t.Callable[..., Flask], database_url: str) -> None:
    url = parse_url(database_url)
    secret_url = f"mysql://pk_status_user:Sup3rS3cret@{url.host}:{url.port}/{url.database}"
    app = make_app(POOLKIT_BINDS={"secret": secret_url})
    result = run(app, "--bind", "secret")
    assert "Sup3rS3cret" not in result.output
    assert "mysql://pk_status_user:***@" in result.output
    assert "unreachable" in result.output  # the user does not exist
    assert result.exit_code == 1
    data = run(app, "--bind", "secret", "--json")
    assert "Sup3rS3cret" not in data.output
    assert json.loads(data.output)["errors"]


def test_unknown_bind(status_app: Flask) -> None:
    result = run(status_app, "--bind", "nope")
    assert result.exit_code != 0
    assert "no pool named 'nope'" in str(result.exception) + result.output


def test_app_without_poolkit() -> None:
    result = Flask("bare").test_cli_runner().invoke(pool_status_command, [])
    assert result.exit_code == 1
    assert "does not use poolkit" in result.output


def test_flask_cli_finds_the_command(poolkit_server: t.Any, tmp_path: Path) -> None:
    from poolkit.testing.plugin import _full

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLKIT_")}
    env["POOLKIT_DATABASE_URL"] = _full(poolkit_server)
    flask = Path(sys.executable).with_name("flask")
    result = subprocess.run([str(flask), "--app", "examples.app", "pool-status", "--json"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pools"]["default"]["settings"]["max_connections"] == 8


def test_multi_host_pool_lists_each_host(database_url: str) -> None:
    from poolkit import Poolkit
    from poolkit.testing.servers import free_port

    url = parse_url(database_url)
    live, dead = f"{url.host}:{url.port}", f"127.0.0.1:{free_port()}"
    auth = url.user + (f":{url.password}" if url.password else "")
    app = Flask("multi_host_status")
    app.config.update(POOLKIT_DATABASE_URL=f"mysql://{auth}@{dead},{live}/{url.database}",
                      POOLKIT_MAX_CONNECTIONS=3)
    extension = Poolkit(app)
    try:
        _check_multi_host_report(app, live, dead)
    finally:
        extension.close()


def _check_multi_host_report(app: Flask, live: str, dead: str) -> None:
    result = run(app)
    assert result.exit_code == 0, result.output  # the pool works: a down host is a warning
    assert f"host      {dead}  unreachable: 2003" in result.output
    assert f"host      {live}  primary  lag -  connections 1" in result.output
    assert f"warning: pool 'default': host {dead} is unreachable" in result.output
    data = json.loads(run(app, "--json").output)
    servers = {s["server"]: s for s in data["servers"]}
    assert servers[live]["per_worker"] == 3 and servers[dead]["per_worker"] == 3
    assert servers[live]["max_connections"] == server_max_connections(app)
