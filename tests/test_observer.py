"""Per-pool observers (poolkit.pool.observer): events, fan-out, failures that change nothing."""

from __future__ import annotations

import logging
import os
import select
import time
import typing as t

import pytest

from poolkit import Pool, PoolTimeout, signals
from poolkit.pool.observer import Observer, Observers


class Recorder(Observer):
    """Keeps every event it sees, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float | None]] = []

    def opened(self, connect_time: float) -> None:
        self.events.append(("opened", connect_time))

    def checked_out(self, wait_time: float) -> None:
        self.events.append(("checked_out", wait_time))

    def returned(self, held_time: float) -> None:
        self.events.append(("returned", held_time))

    def timed_out(self) -> None:
        self.events.append(("timed_out", None))


class Raising(Observer):
    """Raises *error* from every event."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def opened(self, connect_time: float) -> None:
        raise self.error

    def checked_out(self, wait_time: float) -> None:
        raise self.error

    def returned(self, held_time: float) -> None:
        raise self.error

    def timed_out(self) -> None:
        raise self.error


def _borrow_twice_and_time_out(pool: Pool) -> None:
    with pool.connection() as conn:  # opens one connection (slow path)
        assert conn.scalar("SELECT 1") == 1
        time.sleep(0.02)
        with pytest.raises(PoolTimeout):  # the only connection is in use
            pool.checkout()
    with pool.connection() as conn:  # the idle cache's fast path
        assert conn.scalar("SELECT 2") == 2


COUNTS = ("checkouts", "connections_opened", "connections_closed", "in_use", "idle", "size",
          "timeouts", "waiting", "discarded")


def test_no_observer_by_default(make_pool: t.Callable[..., Pool]) -> None:
    assert make_pool().observer is None


def test_every_event_reaches_the_observer_once(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.1)
    recorder = Recorder()
    pool.observer = recorder
    _borrow_twice_and_time_out(pool)
    names = [name for name, _ in recorder.events]
    assert names == ["opened", "checked_out", "timed_out", "returned", "checked_out",
                     "returned"]
    values = dict(recorder.events[:2])
    assert 0 < values["opened"] < 5
    assert values["checked_out"] >= 0
    assert recorder.events[3][1] is not None and recorder.events[3][1] >= 0.02  # held ≥ sleep
    assert recorder.events[4] == ("checked_out", 0.0)  # the fast path waits 0 s
    assert pool.stats()["checkouts"] == 2


def test_an_observer_that_raises_changes_nothing(make_pool: t.Callable[..., Pool],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    plain = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.1)
    broken = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.1)
    after = Recorder()
    broken.add_observer(Raising(RuntimeError("observer bug")))
    broken.add_observer(after)  # still called after the one that raises
    got: list[str] = []

    def receiver(sender: t.Any, **extra: t.Any) -> None:
        got.append("signal")

    signals.connection_checked_out.connect(receiver, sender=broken)
    try:
        with caplog.at_level(logging.ERROR, logger="poolkit"):
            _borrow_twice_and_time_out(plain)
            _borrow_twice_and_time_out(broken)
    finally:
        signals.connection_checked_out.disconnect(receiver)
    assert got == ["signal", "signal"]  # signals are still sent after the observer
    assert [name for name, _ in after.events] == ["opened", "checked_out", "timed_out",
                                                  "returned", "checked_out", "returned"]
    plain_stats, broken_stats = plain.stats(), broken.stats()
    assert {k: broken_stats[k] for k in COUNTS} == {k: plain_stats[k] for k in COUNTS}
    assert broken_stats["in_use"] == 0 and broken_stats["idle"] == 1
    failures = [r for r in caplog.records if "observer" in r.getMessage()]
    assert sorted({r.getMessage().rsplit(" in ", 1)[1] for r in failures}) == [
        "checked_out(); ignored", "opened(); ignored", "returned(); ignored",
        "timed_out(); ignored"]
    assert all(r.exc_info and "observer bug" in str(r.exc_info[1]) for r in failures)


def test_a_lone_raising_observer_is_logged(make_pool: t.Callable[..., Pool],
                                           caplog: pytest.LogCaptureFixture) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.1)
    pool.observer = Raising(ValueError("lone"))  # not wrapped in Observers: the engine catches
    with caplog.at_level(logging.ERROR, logger="poolkit"):
        _borrow_twice_and_time_out(pool)
    assert len([r for r in caplog.records if "observer" in r.getMessage()]) == 6
    stats = pool.stats()
    assert (stats["checkouts"], stats["in_use"], stats["idle"], stats["timeouts"]) == (2, 0, 1, 1)


@pytest.mark.parametrize("fast", [False, True], ids=["slow-path", "fast-path"])
def test_interrupt_in_checked_out_gives_the_connection_back(
        make_pool: t.Callable[..., Pool], fast: bool) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.1)
    if fast:
        with pool.connection() as conn:
            conn.scalar("SELECT 1")
    class Interrupting(Observer):
        def checked_out(self, wait_time: float) -> None:
            raise KeyboardInterrupt

    pool.observer = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        pool.checkout()
    pool.observer = None
    stats = pool.stats()
    assert (stats["in_use"], stats["idle"]) == (0, 1)
    with pool.connection() as conn:  # and the pool's only connection can be borrowed again
        assert conn.scalar("SELECT 3") == 3


def test_add_and_remove_observers(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    first, second, third = Recorder(), Recorder(), Recorder()
    pool.add_observer(first)
    assert pool.observer is first  # one observer: no fan-out in between
    pool.add_observer(second)
    pool.add_observer(third)
    fan_out = pool.observer
    assert isinstance(fan_out, Observers) and fan_out.observers == (first, second, third)
    pool.remove_observer(second)
    assert isinstance(pool.observer, Observers) and pool.observer.observers == (first, third)
    pool.remove_observer(Recorder())  # not added: nothing changes
    pool.remove_observer(first)
    assert pool.observer is third
    with pool.connection() as conn:
        conn.scalar("SELECT 1")
    assert [name for name, _ in third.events] == ["opened", "checked_out", "returned"]
    assert first.events == [] and second.events == []
    pool.remove_observer(third)
    assert pool.observer is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_keeps_the_observer(make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool()
    recorder = Recorder()
    pool.observer = recorder
    with pool.connection() as conn:
        conn.scalar("SELECT 1")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new engine, the same observer
        try:
            recorder.events.clear()
            with pool.connection() as conn:
                conn.scalar("SELECT 1")
            os.write(write, ",".join(name for name, _ in recorder.events).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 30)
        assert ready, "the child did not answer within 30 s"
        answer = os.read(read, 1000).decode()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    # The child opened its own connection: the parent's was detached at fork.
    assert answer == "opened,checked_out,returned"
