"""Connection handles on the real server: one borrow each, given back when dropped, shareable
between threads (issue 10 items 6 and 7)."""

from __future__ import annotations

import gc
import inspect
import re
import threading
import typing as t

import pytest

from poolkit import Pool, signals
from poolkit.errors import ConnectionReturnedError
from poolkit.pool.connection import Connection


def _line() -> int:
    """The caller's line number."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


# -- a returned handle is spent -------------------------------------------------------------
def test_returned_connection_refuses_every_use(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2)
    with pool.connection() as conn:
        assert conn.scalar("SELECT 1") == 1
    assert conn.returned and not conn.checked_out
    uses: list[t.Callable[[], object]] = [
        lambda: conn.scalar("SELECT 1"), lambda: conn.query("SELECT 1"),
        lambda: conn.execute("DO 1"), conn.cursor, conn.commit, lambda: conn.raw,
        lambda: conn.begin, conn.acquire, conn.transaction().__enter__,
    ]
    for use in uses:
        with pytest.raises(ConnectionReturnedError) as info:
            use()
        text = str(info.value)
        assert "pool 'default' was already returned" in text
        assert "pool.connection()" in text and "stream_with_context" in text
    stats = pool.stats()
    # Before the fix each use silently checked out a connection that nobody returned.
    assert (stats["checkouts"], stats["in_use"], stats["idle"]) == (1, 0, 1)
    assert "returned" in repr(conn)


def test_close_twice_is_harmless(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    conn = pool.connection()
    conn.close()
    conn.close()
    with conn:
        pass
    assert pool.stats()["in_use"] == 0


# -- a dropped handle is given back -------------------------------------------------------------
def test_dropped_handle_is_returned_at_gc_naming_its_checkout_line(
        make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.2)
    conn = pool.connection()
    line = _line() - 1
    assert conn.scalar("SELECT 1") == 1
    assert pool.stats()["in_use"] == 1
    with pytest.warns(ResourceWarning) as record:
        del conn
    message = str(record[0].message)
    assert f"{__file__}:{line} (in test_dropped_handle_is_returned_at_gc" in message
    assert "pool 'default'" in message and "never returned" in message
    stats = pool.stats()
    assert (stats["in_use"], stats["idle"], stats["dropped"]) == (0, 1, 1)
    # The pool of one serves the next borrower instead of timing out.
    with pool.connection() as again:
        assert again.scalar("SELECT 2") == 2


def test_dropped_db_style_handle_names_the_line_of_first_use(
        make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    conn = Connection(pool)  # lazy, as db is: checked out on first use
    line = _line() - 1
    conn.scalar("SELECT 1")
    with pytest.warns(ResourceWarning, match=re.escape(f"{__file__}:{line}")):
        del conn
    assert pool.stats()["dropped"] == 1


def test_unused_lazy_handle_drops_silently(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    conn = Connection(pool)
    del conn  # nothing checked out: nothing to return, no warning (filterwarnings = error)
    gc.collect()
    assert pool.stats()["dropped"] == 0


class _Cycle:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.me = self


def test_handle_in_a_reference_cycle_is_returned_by_the_collector(
        make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    cycle = _Cycle(pool.connection())
    del cycle
    assert pool.stats()["in_use"] == 1  # only the cycle collector can free it
    with pytest.warns(ResourceWarning):
        gc.collect()
    stats = pool.stats()
    # Given back intact: the collector must not also finalize (close) what the handle held.
    assert (stats["in_use"], stats["dropped"], stats["idle"], stats["discarded"]) == (0, 1, 1, 0)
    with pool.connection() as conn:
        assert conn.scalar("SELECT 3") == 3
    assert pool.stats()["connections_opened"] == 1


def test_collector_running_inside_the_pool_defers_the_return(
        make_pool: t.Callable[..., Pool]) -> None:
    # The collector runs at any allocation, also while this thread is inside the pool (its
    # lock possibly held): the return must not re-enter the pool there (a deadlock), it waits
    # for the next safe moment.
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=3)
    gc.disable()  # collect exactly where this test says
    cycle = _Cycle(pool.connection())
    del cycle
    dropped_in_pool: list[float] = []

    def collect(sender: object, **extra: object) -> None:
        gc.collect()
        dropped_in_pool.append(pool.stats()["dropped"])

    signals.connection_checked_out.connect(collect, sender=pool)
    done = threading.Event()
    warned: list[str] = []

    def borrow() -> None:
        with pytest.warns(ResourceWarning) as record, pool.connection() as conn:
            conn.scalar("SELECT 1")
        warned.extend(str(w.message) for w in record)
        done.set()

    try:
        worker = threading.Thread(target=borrow, daemon=True)
        worker.start()
        worker.join(timeout=20)
    finally:
        signals.connection_checked_out.disconnect(collect, sender=pool)
        gc.enable()
    assert done.is_set(), "the garbage collector deadlocked inside the pool"
    assert dropped_in_pool[0] == 0  # deferred: not given back from inside the pool
    assert any("never returned" in text for text in warned)
    stats = pool.stats()
    assert (stats["in_use"], stats["dropped"], stats["idle"]) == (0, 1, 2)
    assert stats["discarded"] == 0  # given back intact, not closed by the collector


# -- threads sharing one handle -------------------------------------------------------------
def test_threads_sharing_a_handle_check_out_once_and_keep_the_protocol(
        make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=4)
    conn = Connection(pool)  # what db is for threads that share one app context
    threads, rounds = 8, 25
    barrier = threading.Barrier(threads, timeout=20)
    results: dict[int, list[tuple[t.Any, ...]]] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()  # first use at the same moment
            seen = []
            for i in range(rounds):
                row = conn.query_one("SELECT %s AS n, %s AS i, CONNECTION_ID() AS cid", (n, i))
                assert row is not None
                seen.append((row["n"], row["i"], row["cid"]))
            results[n] = seen
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors
    assert pool.stats()["checkouts"] == 1
    assert pool.stats()["in_use"] == 1
    cids = {cid for seen in results.values() for _, _, cid in seen}
    assert len(cids) == 1
    for n, seen in results.items():
        assert [(a, b) for a, b, _ in seen] == [(n, i) for i in range(rounds)]
    conn.close()
    assert (pool.stats()["in_use"], pool.stats()["idle"]) == (0, 1)


def test_private_and_special_names_do_not_check_out(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    conn = Connection(pool)
    assert getattr(conn, "__deepcopy__", None) is None  # what copy.deepcopy probes
    with pytest.raises(AttributeError):
        conn._no_such_thing  # noqa: B018
    assert pool.stats()["checkouts"] == 0
    assert conn.insert_id() == 0  # public names still reach the driver
    conn.close()
