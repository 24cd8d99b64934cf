"""The read snapshot's ROLLBACK is written at return and its answer read at the next checkout.

What must hold: the snapshot (and its metadata locks) ends at return, not at the next
checkout; the next borrower sees a fresh snapshot; a connection whose answer cannot be read
is replaced silently -- the next borrower never sees that error -- and the counts stay right.
"""

from __future__ import annotations

import threading
import time
import typing as t

from conftest import scratch_table, server_count

from poolkit.pool.pymysql_compat import shutdown_socket


def _idle_raw(pool: t.Any) -> t.Any:
    # The connection waiting in the pool (white-box: the test needs its socket).
    return pool._engine._idle[-1].raw


def test_the_next_borrower_sees_a_fresh_snapshot(make_pool: t.Any, admin: t.Any) -> None:
    table = scratch_table(admin, "pk_pipe_snap", "id INT PRIMARY KEY")
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        assert conn.scalar(f"SELECT COUNT(*) FROM {table}") == 0  # opens a snapshot
        first = conn.scalar("SELECT CONNECTION_ID()")
    with admin.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1)")
    with pool.connection() as conn:
        cur = conn.cursor()  # the cursor path: no transparent re-run to hide anything
        cur.execute(f"SELECT COUNT(*), CONNECTION_ID() FROM {table}")
        count, again = cur.fetchone()
        cur.close()
    assert (count, again) == (1, first)  # same connection, new snapshot
    assert pool.stats()["resets"] == 2


def test_the_snapshot_ends_at_return_not_at_the_next_checkout(make_pool: t.Any,
                                                              admin: t.Any) -> None:
    """An ALTER waits for the metadata lock a snapshot holds: it must not wait for the pool."""
    table = scratch_table(admin, "pk_pipe_mdl", "id INT PRIMARY KEY")
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        conn.scalar(f"SELECT COUNT(*) FROM {table}")  # metadata lock until the snapshot ends
    # Nobody borrows again: the answer to the ROLLBACK stays unread in the socket.
    with admin.cursor() as cur:
        cur.execute("SET SESSION lock_wait_timeout = 5")
        started = time.monotonic()
        cur.execute(f"ALTER TABLE {table} ADD COLUMN v INT")
        took = time.monotonic() - started
    assert took < 4, f"the ALTER waited {took:.1f} s for the returned connection's snapshot"
    with pool.connection() as conn:
        assert conn.scalar(f"SELECT COUNT(v) FROM {table}") == 0


def test_an_unreadable_answer_replaces_the_connection(make_pool: t.Any, admin: t.Any) -> None:
    table = scratch_table(admin, "pk_pipe_lost", "id INT PRIMARY KEY")
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1)
    with pool.connection() as conn:
        old = conn.scalar(f"SELECT CONNECTION_ID() FROM {table} RIGHT JOIN (SELECT 1) one "
                          "ON 1")  # reads a table: a snapshot, so a ROLLBACK on return
        assert conn.in_transaction is False
    raw = _idle_raw(pool)
    time.sleep(0.2)
    raw._sock.recv(65536)  # the answer is lost (white-box: taken off the socket) ...
    shutdown_socket(raw)  # ... and the connection dies before it is read
    with pool.connection() as conn:
        cur = conn.cursor()  # no transparent re-run on this path: an error would show
        cur.execute("SELECT CONNECTION_ID()")
        new = cur.fetchone()[0]
        cur.close()
    assert new != old
    stats = pool.stats()
    assert stats["discarded"] == 1
    assert stats["connections_opened"] - stats["connections_closed"] == stats["size"] == 1
    assert server_count(admin, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                        "WHERE ID = %s", old) == 0


def test_waiters_read_the_answer_of_a_handed_off_connection(make_pool: t.Any,
                                                            admin: t.Any) -> None:
    """16 threads on 2 connections: every hand-off carries an unread answer."""
    table = scratch_table(admin, "pk_pipe_many", "id INT PRIMARY KEY")
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2, POOLKIT_TIMEOUT=30)
    errors: list[BaseException] = []
    counts: list[int] = []

    def borrower(index: int) -> None:
        try:
            for n in range(40):
                with pool.connection() as conn:
                    cur = conn.cursor()
                    cur.execute(f"SELECT COUNT(*) FROM {table} WHERE id = %s", (n,))
                    counts.append(cur.fetchone()[0])
                    cur.close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=borrower, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert counts == [0] * 640
    stats = pool.stats()
    assert stats["discarded"] == 0 and stats["connections_opened"] == 2
    assert stats["resets"] == 640
