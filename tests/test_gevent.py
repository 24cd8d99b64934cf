"""Issue 10 item 8: read and connect timeouts hold under gevent (gunicorn -k gevent).

poolkit lets the kernel enforce socket timeouts (SO_RCVTIMEO) on plain sockets; gevent's
monkey-patched sockets are non-blocking and never hit it, so there poolkit keeps PyMySQL's
Python-level timeouts. The check runs in a subprocess that patches before importing anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import typing as t

import pytest

pytest.importorskip("gevent")

SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import json, socket, sys, time
    import gevent
    from poolkit import Pool, load_config

    def pool(url, **args):
        config = {"POOLKIT_DATABASE_URL": url, "POOLKIT_CONNECT_ARGS": args}
        return Pool(load_config(config).pools["default"])

    def timed(call):
        started = time.monotonic()
        try:
            call()
            outcome = "no error"
        except Exception as error:
            outcome = f"{type(error).__name__} {error.args[0] if error.args else ''}"
        return outcome, time.monotonic() - started

    out = {}
    slow = pool(sys.argv[1], read_timeout=1)
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.1)) for _ in range(8)])

    def sleep3():
        with slow.connection() as conn:
            conn.scalar("SELECT SLEEP(3)")

    out["read"] = timed(sleep3)
    ticker.join()
    out["ticks"] = len(ticks)  # the hub kept running while the query waited

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (the backlog) but never greets
    port = silent.getsockname()[1]
    mute = pool(f"mysql://root:@127.0.0.1:{port}/x", connect_timeout=1, read_timeout=30)
    out["connect"] = timed(lambda: mute.connection().acquire())
    print(json.dumps(out))
""")


def test_timeouts_fire_under_gevent(database_url: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, database_url], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    read_outcome, read_took = out["read"]
    assert read_outcome == "OperationalError 2013", out
    assert 0.8 < read_took < 2.5, out  # read_timeout=1, not the 3 s of SLEEP(3)
    assert out["ticks"] == 8
    connect_outcome, connect_took = out["connect"]
    assert connect_outcome.startswith("OperationalError"), out
    assert 0.8 < connect_took < 2.5, out  # connect_timeout=1, not read_timeout=30


FROZEN = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import json, os, signal, sys, time
    from poolkit import Pool, load_config

    url, server_pid = sys.argv[1], int(sys.argv[2])
    config = {"POOLKIT_DATABASE_URL": url,
              "POOLKIT_CONNECT_ARGS": {"read_timeout": 1, "write_timeout": 1}}
    pool = Pool(load_config(config).pools["default"])
    out = {}
    for name, sql in (("read", "SELECT 1"),
                      ("write", "SELECT LENGTH('" + "x" * (32 * 1024 * 1024) + "')")):
        conn = pool.connection()
        conn.scalar("SELECT 1")  # connected while the server runs
        os.kill(server_pid, signal.SIGSTOP)  # frozen: reads nothing, answers nothing
        started = time.monotonic()
        try:
            conn.scalar(sql)
            outcome = "no error"
        except Exception as error:
            outcome = f"{type(error).__name__} {error.args[0] if error.args else ''}"
        out[name] = (outcome, time.monotonic() - started)
        os.kill(server_pid, signal.SIGCONT)
        conn.close()
    print(json.dumps(out))
""")


@pytest.fixture
def private_server() -> t.Iterator[tuple[str, int]]:
    """A private mariadbd on a free port (it gets frozen: never the shared server)."""
    install, server = shutil.which("mariadb-install-db"), shutil.which("mariadbd") or (
        "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
    if not install or not server:
        pytest.skip("mariadb-install-db / mariadbd not installed")
    home = tempfile.mkdtemp(prefix="poolkit-frozen-")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([install, "--no-defaults", f"--datadir={home}/data", "--user=root",
                    "--auth-root-authentication-method=normal"], check=True,
                   capture_output=True, timeout=120)
    proc = subprocess.Popen([server, "--no-defaults", f"--datadir={home}/data", f"--port={port}",
                             "--bind-address=127.0.0.1", f"--socket={home}/sock",
                             f"--pid-file={home}/pid", f"--tmpdir={home}", "--user=root",
                             "--skip-log-bin",
                             "--skip-grant-tables", "--innodb-buffer-pool-size=32M",
                             "--max-allowed-packet=64M"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the private mariadbd did not start within 60 s")
        yield f"mysql://root:@127.0.0.1:{port}/mysql", proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)


def test_read_and_write_timeouts_fire_on_a_frozen_server_under_gevent(
        private_server: tuple[str, int]) -> None:
    url, pid = private_server
    done = subprocess.run([sys.executable, "-c", FROZEN, url, str(pid)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("read", "write"):
        outcome, took = out[name]
        assert outcome.startswith("OperationalError"), out
        assert 0.8 < took < 3.0, out  # the 1 s timeout, not the freeze
