"""Scenario 9: a pool used in the parent, then ``os.fork()`` (gunicorn --preload, uWSGI).

Figures: the child's CONNECTION_ID()s against the parent's (assertion: no overlap — no shared
socket), and whether the parent's connections, idle and checked out, still answer after the
child exited (assertion: yes, with the same ids).
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
import typing as t

import pytest
from flask import Flask

from poolkit import db

pytestmark = pytest.mark.faults

CHILD_TIMEOUT = 10.0


def run_in_child(work: t.Callable[[], dict[str, t.Any]]) -> dict[str, t.Any]:
    """Fork; the child runs *work* and sends its JSON result through a pipe, then always
    ``os._exit()``s. The parent reads and reaps it within CHILD_TIMEOUT seconds."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            try:
                result = work()
            except BaseException as error:
                result = {"error": f"{type(error).__name__}: {error}"}
            os.write(write_end, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + CHILD_TIMEOUT
    data = b""
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_end], [], [], 0.1)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                data += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(read_end)
        status = 0
        while time.monotonic() < deadline + 2.0:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"child failed: {data!r}"
    return t.cast(dict[str, t.Any], json.loads(data))


def test_fork_child_gets_its_own_connections(fault_app: t.Callable[..., Flask]) -> None:
    app = fault_app(POOLKIT_MAX_CONNECTIONS=4)
    pool = app.extensions["poolkit"].pool()
    held = pool.checkout()  # checked out across the fork
    held_id = held.scalar("SELECT CONNECTION_ID()")
    with app.app_context():
        idle_id = db.scalar("SELECT CONNECTION_ID()")  # idle in the pool across the fork

    def child() -> dict[str, t.Any]:
        ids = []
        with app.app_context():
            ids.append(db.scalar("SELECT CONNECTION_ID()"))
            assert db.scalar("SELECT 6 * 7") == 42
        with pool.connection() as con:
            ids.append(con.scalar("SELECT CONNECTION_ID()"))
        return {"ids": ids, "stats": pool.stats()}

    result = run_in_child(child)
    assert "error" not in result, result["error"]
    child_ids = set(result["ids"])
    held_after = held.scalar("SELECT CONNECTION_ID()")
    held.close()
    again = [pool.checkout() for _ in range(2)]
    after_ids = {con.scalar("SELECT CONNECTION_ID()") for con in again}
    for con in again:
        con.close()
    print(f"\n[scenario 9] parent ids idle {idle_id}, held {held_id}; child ids "
          f"{sorted(child_ids)}; after the child exited the parent's held connection answered "
          f"as {held_after}; the pool then served {sorted(after_ids)}")
    assert not child_ids & {idle_id, held_id}, "the child used a socket of the parent"
    assert held_after == held_id
    assert after_ids == {idle_id, held_id}, "the parent lost a connection to the fork"
    assert pool.stats()["in_use"] == 0
