"""Blinker signals, sent with the Pool as sender."""

from __future__ import annotations

import typing as t

import pytest

from poolkit import Pool, PoolTimeout, signals


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
