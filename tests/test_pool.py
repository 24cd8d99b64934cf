"""The pool's safety features on the real server: timeouts, lifetime, dead connections, errors
that must not be re-run, leaks and fork safety."""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import typing as t
import warnings

import pytest
from conftest import server_count

from poolkit import Pool, PoolTimeout


def connection_id(pool: Pool) -> int:
    with pool.connection() as conn:
        return int(conn.scalar("SELECT CONNECTION_ID()"))


def wait_until_gone(admin: t.Any, cid: int) -> None:
    """Wait (bounded) until the server no longer lists connection *cid*."""
    for _ in range(100):
        if not server_count(admin, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                   "WHERE ID = %s", cid):
            return
        time.sleep(0.02)
    raise AssertionError(f"connection {cid} is still on the server")


# -- checkout timeout -----------------------------------------------------------------------
def test_waiter_gets_pool_timeout_with_the_pool_figures(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.2)
    held = pool.checkout()
    try:
        started = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            pool.checkout()
        assert time.monotonic() - started >= 0.19
    finally:
        held.close()
    text = str(info.value)
    assert "pool 'default'" in text
    assert "no connection free after 0.2 s" in text
    assert "size 1, in use 1, idle 0, waiting 0, max 1" in text
    assert "POOLKIT_MAX_CONNECTIONS" in text
    stats = pool.stats()
    assert (stats["timeouts"], stats["in_use"], stats["waiting"]) == (1, 0, 0)


def test_timeout_message_counts_other_waiters(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.5)
    held = pool.checkout()
    errors: list[str] = []

    def wait() -> None:
        try:
            pool.checkout()
        except PoolTimeout as error:
            errors.append(str(error))

    threads = [threading.Thread(target=wait) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(100):  # until all three wait
        if pool.stats()["waiting"] == 3:
            break
        time.sleep(0.01)
    assert pool.stats()["waiting"] == 3
    for thread in threads:
        thread.join(timeout=10)
    held.close()
    assert len(errors) == 3
    # Whoever gave up first saw the other two still waiting.
    assert any("waiting 2" in e for e in errors), errors
    assert pool.stats()["timeouts"] == 3


def test_waiter_is_served_when_a_connection_comes_back(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=10)
    held = pool.checkout()
    first = held.scalar("SELECT CONNECTION_ID()")
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(connection_id(pool)))
    waiter.start()
    for _ in range(100):
        if pool.stats()["waiting"] == 1:
            break
        time.sleep(0.01)
    assert pool.stats()["waiting"] == 1
    held.close()
    waiter.join(timeout=10)
    assert got == [first]
    assert pool.stats()["timeouts"] == 0


def test_non_blocking_pool_raises_at_once(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2, POOLKIT_BLOCKING=False, POOLKIT_TIMEOUT=30)
    held = [pool.checkout(), pool.checkout()]
    try:
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match=r"after 0\.0 s \(size 2, in use 2"):
            pool.checkout()
        assert time.monotonic() - started < 5  # not the 30 s timeout
    finally:
        for conn in held:
            conn.close()
    assert connection_id(pool) > 0


# -- lifetime and idle retirement -----------------------------------------------------------
def test_connection_past_its_lifetime_is_replaced(make_pool: t.Callable[..., Pool],
                                                  admin: t.Any) -> None:
    pool = make_pool(POOLKIT_MAX_LIFETIME=0.3)
    first = connection_id(pool)
    assert connection_id(pool) == first  # within its lifetime: reused
    time.sleep(0.35)
    second = connection_id(pool)
    assert second != first
    wait_until_gone(admin, first)  # closed on the server, not just forgotten
    stats = pool.stats()
    assert (stats["connections_opened"], stats["connections_closed"], stats["discarded"]) == (
        2, 1, 1)


def test_idle_connection_is_retired(make_pool: t.Callable[..., Pool], admin: t.Any) -> None:
    pool = make_pool(POOLKIT_IDLE_TIMEOUT=0.3, POOLKIT_PING_INTERVAL=0.1)
    first = connection_id(pool)
    time.sleep(0.45)
    assert connection_id(pool) != first
    wait_until_gone(admin, first)
    assert pool.stats()["discarded"] == 1


def test_lifetime_zero_means_forever(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_LIFETIME=0, POOLKIT_IDLE_TIMEOUT=0)
    first = connection_id(pool)
    time.sleep(0.1)
    assert connection_id(pool) == first


def test_max_usage_retires_the_connection(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_USAGE=2)
    with pool.connection() as conn:
        first = conn.scalar("SELECT CONNECTION_ID()")
        conn.scalar("SELECT 1")
    assert connection_id(pool) != first


# -- the server's wait_timeout --------------------------------------------------------------
def test_connection_closed_by_wait_timeout_is_never_handed_out(
        make_pool: t.Callable[..., Pool], admin: t.Any) -> None:
    pool = make_pool(POOLKIT_SESSION="SET SESSION wait_timeout=1")
    with pool.connection() as conn:
        first = conn.scalar("SELECT CONNECTION_ID()")
        assert conn.scalar("SELECT @@SESSION.wait_timeout") == 1
    wait_until_gone(admin, first)  # the server closes it after ~1 s
    with pool.connection() as conn, conn.transaction():  # no transparent re-run in here
        assert conn.scalar("SELECT CONNECTION_ID()") != first
        assert conn.scalar("SELECT @@SESSION.wait_timeout") == 1  # session SQL re-applied


def test_wait_timeout_set_by_session_sql_is_respected(make_pool: t.Callable[..., Pool],
                                                      admin: t.Any) -> None:
    # The ping is skipped for 5 s after a use, longer than the 1 s the server keeps the
    # connection: the pool must know the session's wait_timeout, not the global one.
    pool = make_pool(POOLKIT_SESSION="SET SESSION wait_timeout=1", POOLKIT_PING_INTERVAL=5)
    first = connection_id(pool)
    wait_until_gone(admin, first)
    with pool.connection() as conn, conn.transaction():
        assert conn.scalar("SELECT CONNECTION_ID()") != first


# -- dead connections -----------------------------------------------------------------------
@pytest.mark.parametrize("pause", [0.0, 0.6], ids=["used-just-now", "pinged"])
def test_killed_connection_is_discarded(make_pool: t.Callable[..., Pool], admin: t.Any,
                                        pause: float) -> None:
    pool = make_pool()
    first = connection_id(pool)
    with admin.cursor() as cur:
        cur.execute(f"KILL {first}")
    wait_until_gone(admin, first)
    time.sleep(pause)
    with pool.connection() as conn:
        second = conn.scalar("SELECT CONNECTION_ID()")
        assert conn.query("SELECT 'works' AS v") == [{"v": "works"}]
    assert second != first
    stats = pool.stats()
    assert stats["connections_opened"] == 2
    assert (stats["discarded"], stats["connections_closed"]) == (1, 1), stats
    assert stats["size"] == 1


def test_connection_killed_inside_a_transaction_raises(make_pool: t.Callable[..., Pool],
                                                       admin: t.Any) -> None:
    pool = make_pool()
    with pool.connection() as conn:
        conn.scalar("SELECT 1")
        with pytest.raises(pool.driver.module.OperationalError), conn.transaction():
            cid = conn.scalar("SELECT CONNECTION_ID()")
            with admin.cursor() as cur:
                cur.execute(f"KILL {cid}")
            conn.scalar("SELECT 2")
    assert connection_id(pool) != cid
    assert pool.stats()["in_use"] == 0


# -- errors that are not disconnects are never re-run ---------------------------------------
@pytest.fixture
def attempts(admin: t.Any) -> t.Iterator[t.Callable[[], int]]:
    """``CALL poolkit_attempt()`` and ``SELECT poolkit_attempt_fn(sleep)`` record one row per
    execution in a non-transactional table (so even a failed attempt leaves its mark); the
    procedure then updates a locked InnoDB row, the function sleeps."""
    with admin.cursor() as cur:
        cur.execute("DROP PROCEDURE IF EXISTS poolkit_attempt")
        cur.execute("DROP FUNCTION IF EXISTS poolkit_attempt_fn")
        cur.execute("CREATE TABLE IF NOT EXISTS pk_attempt (id INT AUTO_INCREMENT PRIMARY KEY)"
                    " ENGINE=Aria")
        cur.execute("CREATE TABLE IF NOT EXISTS pk_locked (id INT PRIMARY KEY, n INT)"
                    " ENGINE=InnoDB")
        cur.execute("TRUNCATE pk_attempt")
        cur.execute("REPLACE INTO pk_locked VALUES (1, 0)")
        cur.execute("CREATE PROCEDURE poolkit_attempt() BEGIN "
                    "INSERT INTO pk_attempt VALUES (NULL); "
                    "UPDATE pk_locked SET n = n + 1 WHERE id = 1; END")
        cur.execute("CREATE FUNCTION poolkit_attempt_fn(sleep_for DOUBLE) RETURNS INT BEGIN "
                    "INSERT INTO pk_attempt VALUES (NULL); RETURN SLEEP(sleep_for); END")
    yield lambda: int(server_count(admin, "SELECT COUNT(*) FROM pk_attempt"))


@pytest.fixture
def row_lock(admin: t.Any, database_url: str) -> t.Iterator[None]:
    """Hold the lock of pk_locked row 1 from another connection."""
    from poolkit.testing.plugin import admin_connect
    from poolkit.url import parse_url

    locker = admin_connect(parse_url(database_url), autocommit=False)
    with locker.cursor() as cur:
        cur.execute("SELECT n FROM pk_locked WHERE id = 1 FOR UPDATE")
    yield
    locker.rollback()
    locker.close()


@pytest.mark.parametrize("api", ["execute", "cursor"])
def test_lock_wait_timeout_is_raised_and_not_rerun(make_pool: t.Callable[..., Pool],
                                                   attempts: t.Callable[[], int],
                                                   row_lock: None, api: str) -> None:
    pool = make_pool(POOLKIT_SESSION="SET SESSION innodb_lock_wait_timeout=1")
    with pool.connection() as conn:
        with pytest.raises(pool.driver.module.OperationalError) as info:
            if api == "execute":
                conn.execute("CALL poolkit_attempt()")
            else:
                conn.cursor().execute("CALL poolkit_attempt()")
        assert info.value.args[0] == 1205
        assert conn.scalar("SELECT 'still usable'") == "still usable"
    assert attempts() == 1
    assert pool.stats()["connections_opened"] == 1


@pytest.mark.parametrize("api", ["execute", "cursor"])
def test_statement_timeout_is_raised_and_not_rerun(make_pool: t.Callable[..., Pool],
                                                   attempts: t.Callable[[], int],
                                                   api: str) -> None:
    pool = make_pool()
    sql = "SET STATEMENT max_statement_time=0.2 FOR SELECT poolkit_attempt_fn(2)"
    with pool.connection() as conn:
        with pytest.raises(pool.driver.module.Error) as info:
            if api == "execute":
                conn.execute(sql)
            else:
                conn.cursor().execute(sql)
        assert info.value.args[0] == 1969
    assert attempts() == 1
    assert pool.stats()["connections_opened"] == 1


def test_deadlock_is_raised_and_not_rerun(make_pool: t.Callable[..., Pool],
                                          admin: t.Any) -> None:
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS pk_dead (id INT PRIMARY KEY, n INT) "
                    "ENGINE=InnoDB")
        cur.execute("REPLACE INTO pk_dead VALUES (1, 0), (2, 0)")
    pool = make_pool(POOLKIT_SESSION="SET SESSION innodb_lock_wait_timeout=10")
    a, b = pool.checkout(), pool.checkout()
    errors: list[BaseException] = []
    try:
        a.execute("UPDATE pk_dead SET n = n + 1 WHERE id = 1")
        b.execute("UPDATE pk_dead SET n = n + 1 WHERE id = 2")

        def cross(conn: t.Any, row: int) -> None:
            try:
                conn.execute("UPDATE pk_dead SET n = n + 1 WHERE id = %s", (row,))
                conn.commit()
            except pool.driver.module.OperationalError as error:
                errors.append(error)
                conn.rollback()

        first = threading.Thread(target=cross, args=(a, 2))
        first.start()
        time.sleep(0.2)  # a waits for b's row lock, then b closes the cycle
        cross(b, 1)
        first.join(timeout=15)
    finally:
        a.close()
        b.close()
    assert [e.args[0] for e in errors] == [1213]
    # One transaction committed both its updates exactly once, the victim none.
    assert server_count(admin, "SELECT SUM(n) FROM pk_dead") == 2


# -- leaks ------------------------------------------------------------------------------------
def test_leak_warning_carries_the_borrowers_stack(make_pool: t.Callable[..., Pool],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    pool = make_pool(POOLKIT_LEAK_THRESHOLD=0.1)
    with caplog.at_level(logging.WARNING, logger="poolkit"):
        conn = pool.checkout()
        try:
            for _ in range(200):
                if "held for" in caplog.text:
                    break
                time.sleep(0.01)
        finally:
            conn.close()
    warnings_ = [r for r in caplog.records if "held for" in r.getMessage()]
    assert len(warnings_) == 1
    text = warnings_[0].getMessage()
    assert "pool 'default'" in text
    assert "POOLKIT_LEAK_THRESHOLD=0.1" in text
    assert "test_leak_warning_carries_the_borrowers_stack" in text
    assert "conn = pool.checkout()" in text
    assert pool.stats()["leaks"] == 1


def test_no_leak_warning_below_the_threshold(make_pool: t.Callable[..., Pool],
                                             caplog: pytest.LogCaptureFixture) -> None:
    pool = make_pool(POOLKIT_LEAK_THRESHOLD=5)
    with caplog.at_level(logging.WARNING, logger="poolkit"):
        for _ in range(3):
            connection_id(pool)
    assert "held for" not in caplog.text
    assert pool.stats()["leaks"] == 0


def test_every_borrow_held_past_the_threshold_is_reported_once(
        make_pool: t.Callable[..., Pool], caplog: pytest.LogCaptureFixture) -> None:
    # Issue 10 item 9: reports were keyed by connection, so a connection borrowed again before
    # the watch ran was never reported again (2 warnings for these 52 borrows).
    pool = make_pool(POOLKIT_LEAK_THRESHOLD=0.1, POOLKIT_MAX_CONNECTIONS=4)

    def borrower() -> None:
        for _ in range(13):
            with pool.connection() as conn:
                conn.acquire()
                time.sleep(0.3)

    with caplog.at_level(logging.WARNING, logger="poolkit"):
        threads = [threading.Thread(target=borrower) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    reports = [r for r in caplog.records if "held for" in r.getMessage()]
    assert len(reports) == 52
    assert pool.stats()["leaks"] == 52
    assert pool.stats()["checkouts"] == 52


# -- fork ------------------------------------------------------------------------------------
def test_forked_child_gets_its_own_connection(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    parent_id = connection_id(pool)
    reader, writer = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(reader)
            child_id = connection_id(pool)
            reused = connection_id(pool)
            os.write(writer, f"{child_id} {reused} {pool.stats()['connections_opened']}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    try:
        ready, _, _ = select.select([reader], [], [], 30)
        assert ready, "the child did not answer within 30 s"
        answer = os.read(reader, 200).decode()
    finally:
        os.close(reader)
        for _ in range(300):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the child did not exit")
    assert os.waitstatus_to_exitcode(status) == 0
    child_id, reused, opened = (int(x) for x in answer.split())
    assert child_id != parent_id
    assert reused == child_id  # the child's new pool pools
    assert opened == 1  # counted by the child's fresh engine
    # The child neither closed nor used the parent's socket: it still answers, same session.
    with pool.connection() as conn:
        assert conn.scalar("SELECT CONNECTION_ID()") == parent_id
        assert conn.scalar("SELECT 'parent ok'") == "parent ok"
