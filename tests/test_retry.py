"""poolkit.retry on the real server: a deadlock (1213) re-runs the whole transaction."""

from __future__ import annotations

import threading
import typing as t

import pytest

from poolkit import Pool
from poolkit.retry import retry_transaction, run_transaction

TABLE = "poolkit_retry_accounts"


@pytest.fixture
def accounts(make_pool: t.Callable[..., Pool]) -> t.Iterator[Pool]:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=4)
    with pool.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, balance INT NOT NULL) "
                     "ENGINE=InnoDB")
        conn.execute(f"INSERT INTO {TABLE} VALUES (1, 100), (2, 100)")
        conn.commit()
    yield pool
    with pool.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def test_a_deadlock_victim_is_run_again_whole(accounts: Pool) -> None:
    # Two transfers lock the two rows in opposite order; both wait at a barrier after their
    # first UPDATE, so the server must pick a deadlock victim (1213) and roll it back.
    barrier = threading.Barrier(2, timeout=10)
    attempts: list[str] = []

    @retry_transaction(retries=3)
    def transfer(conn: t.Any, source: int, target: int, name: str) -> None:
        attempts.append(name)
        conn.execute(f"UPDATE {TABLE} SET balance = balance - 10 WHERE id = %s", (source,))
        if attempts.count(name) == 1:  # only the first run of each meets the other
            barrier.wait()
        conn.execute(f"UPDATE {TABLE} SET balance = balance + 10 WHERE id = %s", (target,))

    errors: list[BaseException] = []

    def run(source: int, target: int, name: str) -> None:
        try:
            with accounts.connection() as conn:
                transfer(conn, source, target, name)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(1, 2, "a")),
               threading.Thread(target=run, args=(2, 1, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(attempts) == 3  # one of the two ran twice
    with accounts.connection() as conn:
        rows = conn.query(f"SELECT id, balance FROM {TABLE} ORDER BY id")
    assert rows == [{"id": 1, "balance": 100}, {"id": 2, "balance": 100}]  # both applied once


def test_other_errors_and_nested_calls_are_not_retried(accounts: Pool) -> None:
    calls: list[int] = []

    def broken(conn: t.Any) -> None:
        calls.append(1)
        conn.execute(f"UPDATE {TABLE} SET balance = balance - 1 WHERE id = 1")
        conn.execute("SELECT * FROM poolkit_retry_no_such_table")

    with accounts.connection() as conn:
        with pytest.raises(Exception, match="1146"):
            run_transaction(conn, broken, retries=5)
        assert calls == [1]
        assert conn.scalar(f"SELECT balance FROM {TABLE} WHERE id = 1") == 100  # rolled back
        deadlocked: list[int] = []

        def victim(conn: t.Any) -> None:
            deadlocked.append(1)
            raise type("Deadlock", (Exception,), {})(1213, "Deadlock found")

        with conn.transaction(), pytest.raises(Exception, match="Deadlock"):
            run_transaction(conn, victim, retries=5)  # inside a transaction: once
        assert deadlocked == [1]
    with pytest.raises(ValueError, match="retries"):
        run_transaction(None, broken, retries=-1)
