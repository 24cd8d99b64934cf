"""Scenario 8: bad input — each gets one clear line, the password never shows, nothing hangs.

Figures: how long an unreachable server takes to fail (closed port: at once; a connect that
hangs: connect_timeout, assertion within +0.5 s), and the error line of each bad input.
The ``sql/`` cases (binary, non-UTF-8, empty file, a folder named x.sql) need ``flask
initdb`` and live with scenario 7.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import typing as t

import pytest

from poolkit import ConfigError, load_config
from poolkit.config import PoolSettings
from poolkit.pool.drivers import get_driver
from poolkit.testing.faultproxy import FaultProxy
from poolkit.url import DatabaseURL

pytestmark = pytest.mark.faults

SECRET = "Xy7-s3cret-pw"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(("config", "says"), [
    ({"POOLKIT_DATABASE_URL": f"mysql//root:{SECRET}@127.0.0.1/db"}, "unknown scheme"),
    ({"POOLKIT_DATABASE_URL": f"mysql://root:{SECRET}@127.0.0.1:99999/db"}, "not a valid URL"),
    ({"POOLKIT_DATABASE_URL": f"mysql://root:{SECRET}@127.0.0.1:3306/"}, "no database name"),
    ({"POOLKIT_DATABASE_URL": f"mysql://root:{SECRET}@127.0.0.1/db?read_timout=1"},
     "did you mean 'read_timeout'"),
    ({"POOLKIT_DATABASE_URL": f"mysql://root:{SECRET}@127.0.0.1/db", "POOLKIT_MAX_CONECTIONS": 3},
     "did you mean POOLKIT_MAX_CONNECTIONS"),
], ids=["scheme", "port", "database", "option", "key"])
def test_bad_config_is_one_clear_line_without_the_password(config: dict[str, t.Any],
                                                           says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    message = str(caught.value)
    print(f"\n[scenario 8] {message}")
    assert says in message and "\n" not in message and SECRET not in message


def settings_for(url: str) -> PoolSettings:
    return load_config({"POOLKIT_DATABASE_URL": url}, environ={}).pools["default"]


def test_wrong_password_names_the_user_never_the_password(poolkit_server: DatabaseURL) -> None:
    settings = settings_for(f"mysql://{poolkit_server.user}:{SECRET}@{poolkit_server.host}:"
                            f"{poolkit_server.port}/{poolkit_server.database}")
    with pytest.raises(Exception) as caught:
        get_driver("pymysql").connect(settings.driver_kwargs())
    text = f"{caught.value} {caught.value!r}"
    print(f"\n[scenario 8] wrong password: {caught.value}")
    assert f"Access denied for user '{poolkit_server.user}'" in text
    assert SECRET not in text and SECRET not in repr(settings) and SECRET not in str(settings.url)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_closed_port_fails_at_once() -> None:
    settings = settings_for(f"mysql://root:@127.0.0.1:{closed_port()}/db?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(Exception, match="Can't connect to MySQL server"):
        get_driver("pymysql").connect(settings.driver_kwargs())
    took = time.monotonic() - started
    print(f"\n[scenario 8] closed port refused after {took * 1000:.0f} ms")
    assert took < 1.0


def test_connect_that_hangs_fails_within_connect_timeout(poolkit_server: DatabaseURL) -> None:
    # The proxy accepts the TCP connection but the server's greeting never comes: the
    # handshake is part of connecting and must be bounded by connect_timeout, not by the much
    # longer read_timeout (as libmysqlclient does).
    with FaultProxy(poolkit_server.host, poolkit_server.port) as proxy:
        proxy.black_hole()
        settings = settings_for(f"mysql://root:@127.0.0.1:{proxy.port}/db"
                                "?connect_timeout=1&read_timeout=10")
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            get_driver("pymysql").connect(settings.driver_kwargs())
        took = time.monotonic() - started
    print(f"\n[scenario 8] connect into a black hole failed after {took:.2f} s "
          f"(connect_timeout=1, read_timeout=10): {caught.value}")
    assert 1.0 <= took < 1.5


def flask_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, POOLKIT_DATABASE_URL=url, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "flask", "--app", "examples.app", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("url", "says"), [
    (f"mysql//root:{SECRET}@127.0.0.1/db", "unknown scheme"),
    (f"mysql://root:{SECRET}@127.0.0.1/db?read_timout=1", "did you mean 'read_timeout'"),
], ids=["malformed", "unknown-option"])
def test_cli_with_a_bad_url_prints_one_clear_line(url: str, says: str) -> None:
    done = flask_cli(url, "pool-status")
    output = done.stdout + done.stderr
    print(f"\n[scenario 8] flask pool-status, exit {done.returncode}: {done.stderr.strip()}")
    assert done.returncode != 0
    assert SECRET not in output
    assert "Traceback" not in output, "a config error reaches the user as a traceback"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], done.stderr


def test_cli_with_a_wrong_password_names_the_user(poolkit_server: DatabaseURL) -> None:
    done = flask_cli(f"mysql://{poolkit_server.user}:{SECRET}@{poolkit_server.host}:"
                     f"{poolkit_server.port}/{poolkit_server.database}", "pool-status")
    output = done.stdout + done.stderr
    print(f"\n[scenario 8] flask pool-status, exit {done.returncode}: {done.stderr.strip()}")
    assert done.returncode != 0
    assert SECRET not in output
    assert f"Access denied for user '{poolkit_server.user}'" in done.stderr
