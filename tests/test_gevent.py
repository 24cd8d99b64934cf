"""Issue 10 item 8: read and connect timeouts hold under gevent (gunicorn -k gevent).

poolkit lets the kernel enforce socket timeouts (SO_RCVTIMEO) on plain sockets; gevent's
monkey-patched sockets are non-blocking and never hit it, so there poolkit keeps PyMySQL's
Python-level timeouts. The check runs in a subprocess that patches before importing anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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
