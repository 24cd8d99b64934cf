"""Blinker signals, sent with the Pool as sender."""

from __future__ import annotations

import threading
import time
import typing as t

import pytest

from poolkit import Pool, PoolTimeout, db, signals


@pytest.fixture
def received() -> t.Iterator[list[tuple[str, t.Any, dict[str, t.Any]]]]:
    log: list[tuple[str, t.Any, dict[str, t.Any]]] = []
    names = ["connection_opened", "connection_checked_out", "connection_returned",
             "connection_discarded", "pool_timeout"]
    receivers = {}
    for name in names:
        def receiver(sender: t.Any, _name: str = name, **extra: t.Any) -> None:
            log.append((_name, sender, extra))
        receivers[name] = receiver
        getattr(signals, name).connect(receiver)
    yield log
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)


def test_life_cycle_signals(make_pool: t.Callable[..., Pool],
                            received: list[tuple[str, t.Any, dict[str, t.Any]]]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.1, POOLKIT_MAX_USAGE=1)
    conn = pool.checkout()
    conn.scalar("SELECT 1")
    with pytest.raises(PoolTimeout):
        pool.checkout()
    conn.close()
    with pool.connection() as again:  # MAX_USAGE=1: the used connection is retired
        again.scalar("SELECT 1")
    names = [name for name, _, _ in received]
    assert names == ["connection_opened", "connection_checked_out", "pool_timeout",
                     "connection_returned", "connection_discarded", "connection_opened",
                     "connection_checked_out", "connection_returned"]
    assert all(sender is pool for _, sender, _ in received)
    extras = {name: extra for name, _, extra in received}
    assert extras["connection_opened"]["connect_time"] > 0
    assert extras["connection_checked_out"]["wait_time"] >= 0
    assert extras["pool_timeout"]["wait_time"] >= 0.09
    assert extras["connection_returned"]["held_time"] >= 0
    assert extras["connection_discarded"] == {"reason": "usage"}


def test_signals_of_one_pool_name_it(make_pool: t.Callable[..., Pool],
                                     received: list[tuple[str, t.Any, dict[str, t.Any]]]) -> None:
    first, second = make_pool(), make_pool()
    with second.connection() as conn:
        conn.scalar("SELECT 1")
    assert {sender for _, sender, _ in received} == {second}
    assert first is not second


def test_leak_signal(make_pool: t.Callable[..., Pool]) -> None:
    leaks: list[tuple[t.Any, dict[str, t.Any]]] = []

    def on_leak(sender: t.Any, **extra: t.Any) -> None:
        leaks.append((sender, extra))

    signals.connection_leaked.connect(on_leak)
    try:
        pool = make_pool(POOLKIT_LEAK_THRESHOLD=0.05)
        conn = pool.checkout()
        import time
        for _ in range(200):
            if leaks:
                break
            time.sleep(0.01)
        conn.close()
    finally:
        signals.connection_leaked.disconnect(on_leak)
    assert len(leaks) == 1
    sender, extra = leaks[0]
    assert sender is pool
    assert "test_leak_signal" in extra["stack"]
    assert extra["held_time"] >= 0.05


# -- issue 10 item 5: receivers run outside the lock and cannot break the accounting -------

@pytest.fixture
def connected() -> t.Iterator[t.Callable[[t.Any, t.Callable[..., None]], None]]:
    made: list[tuple[t.Any, t.Callable[..., None]]] = []

    def connect(signal: t.Any, receiver: t.Callable[..., None]) -> None:
        signal.connect(receiver)
        made.append((signal, receiver))

    yield connect
    for signal, receiver in made:
        signal.disconnect(receiver)


def test_raising_receivers_are_logged_and_change_nothing(
        make_pool: t.Callable[..., Pool], connected: t.Any,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken_metrics(sender: t.Any, **extra: t.Any) -> None:
        raise ValueError("metrics bug")

    for signal in (signals.connection_opened, signals.connection_checked_out,
                   signals.connection_returned):
        connected(signal, broken_metrics)
    later: list[str] = []
    connected(signals.connection_checked_out, lambda sender, **extra: later.append("ran"))
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2, POOLKIT_TIMEOUT=0.5)
    with caplog.at_level("ERROR", logger="poolkit"):
        for _ in range(4):  # two of them used to starve a pool of 2
            with pool.connection() as conn:
                assert conn.scalar("SELECT 1") == 1
    stats = pool.stats()
    assert (stats["in_use"], stats["idle"], stats["checkouts"], stats["timeouts"]) == (0, 1, 4, 0)
    assert later == ["ran"] * 4  # the other receivers still run
    errors = [r for r in caplog.records if "metrics bug" in str(r.exc_info and r.exc_info[1])]
    assert len(errors) == 1 + 4 + 4  # opened once, checked out and returned four times
    assert "connection-checked-out" in caplog.text


def test_slow_receiver_does_not_stall_other_threads(make_pool: t.Callable[..., Pool],
                                                    connected: t.Any) -> None:
    slow_thread: list[int] = []

    def slow(sender: t.Any, **extra: t.Any) -> None:
        if threading.get_ident() in slow_thread:
            time.sleep(1.0)

    connected(signals.connection_checked_out, slow)
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=3)
    with pool.connection() as conn:  # open two connections first
        with pool.connection() as other:
            other.scalar("SELECT 1")
        conn.scalar("SELECT 1")
    started = threading.Event()

    def slow_borrower() -> None:
        slow_thread.append(threading.get_ident())
        started.set()
        with pool.connection() as conn:
            conn.acquire()

    thread = threading.Thread(target=slow_borrower)
    thread.start()
    started.wait(5)
    time.sleep(0.1)  # the slow borrower is inside its receiver now
    begun = time.monotonic()
    for _ in range(5):
        with pool.connection() as conn:
            conn.acquire()
    took = time.monotonic() - begun
    thread.join(5)
    assert took < 0.5, f"5 checkouts took {took:.2f} s behind a 1 s receiver"
    assert pool.stats()["in_use"] == 0


def test_raising_returned_receiver_in_teardown_returns_every_bind(
        make_app: t.Callable[..., t.Any], make_database: t.Callable[[], str],
        connected: t.Any) -> None:
    def broken(sender: t.Any, **extra: t.Any) -> None:
        raise RuntimeError("receiver bug")

    connected(signals.connection_returned, broken)
    app = make_app(POOLKIT_BINDS={"other": make_database()})
    state = app.extensions["poolkit"]
    with app.app_context():
        db.scalar("SELECT 1")
        db.using("other").scalar("SELECT 1")
    assert state.pool().stats()["in_use"] == 0
    assert state.pool("other").stats()["in_use"] == 0
