"""Issue 10 item 4: a waiter interrupted by an exception leaves the line and loses nothing."""

from __future__ import annotations

import signal
import threading
import time
import typing as t

import pytest

from poolkit import Pool


class RequestTimeLimit(BaseException):
    """What a request time limit raises from a signal handler (not an Exception)."""


def _raise_time_limit(signum: int, frame: object) -> None:
    raise RequestTimeLimit


@pytest.fixture
def alarm() -> t.Iterator[t.Callable[[float], None]]:
    previous = signal.signal(signal.SIGALRM, _raise_time_limit)
    yield lambda seconds: signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_interrupted_waiter_leaves_the_queue(make_pool: t.Callable[..., Pool],
                                             alarm: t.Callable[[float], None]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=10)
    held = pool.checkout().acquire()
    alarm(0.2)
    started = time.monotonic()
    with pytest.raises(RequestTimeLimit):
        pool.checkout().acquire()  # waits; the signal handler raises inside the wait
    assert time.monotonic() - started < 5
    assert pool.stats()["waiting"] == 0
    held.close()  # used to be handed to the ghost waiter and lost
    stats = pool.stats()
    assert (stats["in_use"], stats["idle"], stats["size"]) == (0, 1, 1)
    with pool.connection() as conn:
        assert conn.scalar("SELECT 1") == 1
    assert pool.stats()["timeouts"] == 0


def test_hand_off_to_a_waiter_that_left_goes_to_the_next(
        make_pool: t.Callable[..., Pool]) -> None:
    # The worst moment: the connection is handed to the waiter, and the exception arrives
    # before the waiter takes it. The signal handler returns the held connection (handing it
    # to the main thread, which waits first) and then raises.
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=10)
    held = pool.checkout().acquire()
    served: list[int] = []

    def second() -> None:
        with pool.connection() as conn:
            served.append(conn.scalar("SELECT 2"))

    thread = threading.Thread(target=second)

    def hand_off_then_raise(signum: int, frame: object) -> None:
        held.close()
        raise RequestTimeLimit

    def queue_second() -> None:
        deadline = time.monotonic() + 5
        while pool.stats()["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        thread.start()
        while pool.stats()["waiting"] < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, hand_off_then_raise)
    helper = threading.Thread(target=queue_second)
    try:
        helper.start()
        with pytest.raises(RequestTimeLimit):
            pool.checkout().acquire()
    finally:
        signal.signal(signal.SIGALRM, previous)
        helper.join(10)
        thread.join(10)
    assert served == [2]
    stats = pool.stats()
    assert (stats["in_use"], stats["idle"], stats["waiting"], stats["timeouts"]) == (0, 1, 0, 0)


def test_many_interrupted_waiters_then_everyone_is_served(
        make_pool: t.Callable[..., Pool], alarm: t.Callable[[float], None]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2, POOLKIT_TIMEOUT=10)
    held = [pool.checkout().acquire() for _ in range(2)]
    for _ in range(5):
        alarm(0.05)
        with pytest.raises(RequestTimeLimit):
            pool.checkout().acquire()
    for conn in held:
        conn.close()
    results: list[int] = []
    threads = [threading.Thread(target=lambda n=n: results.append(_borrow(pool, n)))
               for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert sorted(results) == list(range(8))
    stats = pool.stats()
    assert (stats["in_use"], stats["waiting"], stats["timeouts"]) == (0, 0, 0)
    assert stats["size"] == stats["connections_opened"] - stats["connections_closed"] == 2


def _borrow(pool: Pool, n: int) -> int:
    with pool.connection() as conn:
        return int(conn.scalar("SELECT %s", (n,)))
