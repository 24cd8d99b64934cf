"""Scenario 9: a pool used in the parent, then ``os.fork()`` (gunicorn --preload, uWSGI).

Figures: the child's CONNECTION_ID()s against the parent's (assertion: no overlap — no shared
socket), and whether the parent's connections, idle and checked out, still answer after the
child exited (assertion: yes, with the same ids).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import ssl
import threading
import time
import typing as t
import warnings

import pytest
from conftest import needs_mysqlclient, scratch_table, server_count
from flask import Flask

from poolkit import Pool, db
from poolkit.pool import pymysql_compat

pytestmark = pytest.mark.faults

CHILD_TIMEOUT = 10.0


def run_in_child(work: t.Callable[[], dict[str, t.Any]]) -> dict[str, t.Any]:
    """Fork; the child runs *work* and sends its JSON result through a pipe, then always
    ``os._exit()``s. The parent reads and reaps it within CHILD_TIMEOUT seconds."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
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


def test_child_return_does_not_touch_the_parents_transaction(
        make_pool: t.Callable[..., Pool], admin: t.Any) -> None:
    # Issue 10 item 3: the child's return used to roll back on the parent's socket (and put
    # it into the child's pool): the parent's later COMMIT succeeded but its row was gone.
    table = scratch_table(admin, "fork_item", "id INT PRIMARY KEY")
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2)
    held = pool.checkout()
    held_id = held.scalar("SELECT CONNECTION_ID()")
    held.execute("BEGIN")
    held.execute(f"INSERT INTO {table} VALUES (1)")

    def child() -> dict[str, t.Any]:
        with pool.connection() as conn:  # the child's own connection works
            own = conn.scalar("SELECT CONNECTION_ID()")
        held.close()  # the parent's connection, returned in the child
        stats = pool.stats()
        return {"own": own, "in_use": stats["in_use"], "idle": stats["idle"]}

    result = run_in_child(child)
    assert "error" not in result, result["error"]
    assert result["own"] != held_id
    assert (result["in_use"], result["idle"]) == (0, 1)  # the parent's was not pooled there
    # The parent's session is untouched: still in its transaction, and the COMMIT keeps it.
    assert held.scalar("SELECT @@in_transaction") == 1
    held.commit()
    held.close()
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 1
    assert pool.stats()["in_use"] == 0


def test_child_can_connect_when_a_parent_thread_held_the_locks(
        make_pool: t.Callable[..., Pool]) -> None:
    # A fork while another thread is inside a connect (the TLS-context lock held) or inside
    # the pool's lock used to hang every connect in the child.
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the backlog) but never greets
    port = silent.getsockname()[1]
    stuck = make_pool(POOLKIT_DATABASE_URL=f"mysql://root:@127.0.0.1:{port}/x",
                      POOLKIT_CONNECT_ARGS={"connect_timeout": 3})
    connecting = threading.Thread(target=lambda: _ignore_errors(stuck.checkout), daemon=True)
    release = threading.Event()
    locked = threading.Barrier(2)

    def hold_locks() -> None:
        with pymysql_compat.sockets._ssl_lock, pool._engine._mutex:
            locked.wait()
            release.wait(10)

    holder = threading.Thread(target=hold_locks, daemon=True)
    connecting.start()
    holder.start()
    locked.wait()
    try:
        def child() -> dict[str, t.Any]:
            context = pymysql_compat.shared_ssl_context(ssl.create_default_context)
            with pool.connection() as conn:
                answer = conn.scalar("SELECT 6 * 7")
            return {"answer": answer, "tls": isinstance(context, ssl.SSLContext)}

        started = time.monotonic()
        result = run_in_child(child)
        took = time.monotonic() - started
    finally:
        release.set()
        holder.join(5)
        connecting.join(10)
        silent.close()
    assert result == {"answer": 42, "tls": True}
    assert took < CHILD_TIMEOUT


def _ignore_errors(call: t.Callable[[], t.Any]) -> None:
    with contextlib.suppress(Exception):
        call()


@needs_mysqlclient
def test_mysqlclient_child_cannot_end_the_parents_session(
        make_pool: t.Callable[..., Pool], admin: t.Any, database_url: str) -> None:
    # mysqlclient always sends COM_QUIT when it closes (or deallocates, at the latest when the
    # child exits): the child's detached copy must not reach the parent's session.
    table = scratch_table(admin, "fork_item_mysqldb", "id INT PRIMARY KEY")
    pool = make_pool(POOLKIT_DATABASE_URL=database_url.replace("mysql://", "mysql+mysqldb://"),
                     POOLKIT_MAX_CONNECTIONS=2)
    held = pool.checkout()
    held_id = held.scalar("SELECT CONNECTION_ID()")
    held.execute(f"INSERT INTO {table} VALUES (1)")  # an open transaction (autocommit off)
    steady = held._con

    def child() -> dict[str, t.Any]:
        held.close()  # detached in the child
        steady.raw.close()  # what deallocation does at exit: COM_QUIT, now to /dev/null
        return {"ok": True}

    assert run_in_child(child) == {"ok": True}
    assert held.scalar("SELECT CONNECTION_ID()") == held_id
    held.commit()
    held.close()
    assert server_count(admin, f"SELECT COUNT(*) FROM {table}") == 1
