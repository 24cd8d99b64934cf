"""PoolTimeout names its cause: who holds the connections, for how long, where; the budget."""

from __future__ import annotations

import threading
import time
import typing as t

import pytest
from flask import Flask

from poolkit import db
from poolkit.errors import PoolTimeout


def _exhaust_with_slow_view(app: Flask) -> tuple[PoolTimeout, threading.Thread]:
    entered = threading.Event()

    @app.get("/report")
    def slow_report() -> str:
        db.scalar("SELECT 1")
        entered.set()
        db.scalar("SELECT SLEEP(1.5)")
        return "done"

    client = app.test_client()
    holder = threading.Thread(target=client.get, args=("/report",))
    holder.start()
    assert entered.wait(10)
    pool = app.extensions["poolkit"].pool()
    with pytest.raises(PoolTimeout) as caught, pool.connection() as conn:
        conn.acquire()
    return caught.value, holder


def test_the_message_names_the_slow_view_and_its_line(make_app: t.Any) -> None:
    app = make_app(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.3)
    error, holder = _exhaust_with_slow_view(app)
    holder.join(10)
    text = str(error)
    assert "held longest: " in text
    assert "by view 'slow_report'" in text
    # The borrow began in the view's first db use: this file, in slow_report.
    assert f"{__file__}:" in text and "(in slow_report)" in text
    assert "this process may open 1 connection(s) to 127.0.0.1:3306" in text
    assert "of its max_connections " in text and "(unknown)" not in text


def test_the_message_names_a_command(make_app: t.Any) -> None:
    app = make_app(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.3)
    pool = app.extensions["poolkit"].pool()
    seen: list[str] = []

    @app.cli.command("hold")
    def hold_command() -> None:
        db.scalar("SELECT 1")
        with pytest.raises(PoolTimeout) as caught, pool.connection() as conn:
            conn.acquire()
        seen.append(str(caught.value))

    result = app.test_cli_runner().invoke(args=["hold"])
    assert result.exit_code == 0, result.output
    # click's command path: 'flask hold' under the flask command, the app's name here.
    assert "by command 'poolkit_test_app hold', borrowed at " in seen[0]


def test_the_longest_held_come_first(make_pool: t.Any) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2, POOLKIT_TIMEOUT=0.2)
    first = pool.connection()
    time.sleep(0.3)
    second = pool.connection()
    try:
        with pytest.raises(PoolTimeout) as caught:
            pool.connection()
    finally:
        first.close()
        second.close()
    text = str(caught.value)
    held = text.split("held longest: ", 1)[1]
    times = [float(part.split(" s by ", 1)[0]) for part in held.split("; ")[:2]]
    assert times[0] > times[1] >= 0  # the oldest borrow first
    assert held.count("test_the_longest_held_come_first") == 2
