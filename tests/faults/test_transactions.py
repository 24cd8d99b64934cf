"""Scenario 6: nothing lost, nothing duplicated — with and without server-side kills.

Figures: rows left by a failing view (0), rows kept by committing views (exactly theirs),
and under 16 threads × writes: rows == 3 × committed requests, no request's rows twice,
failures of requests that started after a kill (0).
"""

from __future__ import annotations

import threading
import time
import typing as t
import uuid

import pytest
from conftest import scratch_table
from flask import Flask

from poolkit import db

from .conftest import database_of, kill_connections, start_load, summary

pytestmark = pytest.mark.faults

THREADS = 16
ROWS = 3  # rows each write request inserts


@pytest.fixture
def writes(admin: t.Any) -> str:
    return scratch_table(admin, "fault_write", "id INT AUTO_INCREMENT PRIMARY KEY, "
                         "token CHAR(32) NOT NULL, seq INT NOT NULL, KEY (token)")


def rows_by_token(admin: t.Any) -> dict[str, int]:
    with admin.cursor() as cur:
        cur.execute("SELECT token, COUNT(*) FROM fault_write GROUP BY token")
        return dict(cur.fetchall())


def write_app(fault_app: t.Callable[..., Flask]) -> tuple[Flask, dict[str, str]]:
    """An app with writing views; ``phase[token]`` says how far each request got."""
    app = fault_app(POOLKIT_MAX_CONNECTIONS=THREADS, POOLKIT_TIMEOUT=5.0)
    app.testing = True
    phase: dict[str, str] = {}

    def insert_rows(token: str) -> None:
        for seq in range(ROWS):
            db.execute("INSERT INTO fault_write (token, seq) VALUES (%s, %s)", (token, seq))

    @app.post("/tx/<token>")
    def in_transaction(token: str) -> str:
        with db.transaction():
            insert_rows(token)
            phase[token] = "commit"
        return "ok"

    @app.post("/implicit/<token>")
    def implicit(token: str) -> str:
        insert_rows(token)  # autocommit off: the first INSERT opens the transaction
        phase[token] = "commit"
        db.commit()
        return "ok"

    @app.post("/fail/<token>")
    def fail(token: str) -> str:
        insert_rows(token)
        raise RuntimeError("the view failed after its INSERTs")

    return app, phase


def test_view_that_raises_leaves_no_row(fault_app: t.Callable[..., Flask], admin: t.Any,
                                        writes: str) -> None:
    app, _ = write_app(fault_app)
    client = app.test_client()
    for n in range(5):
        with pytest.raises(RuntimeError):
            client.post(f"/fail/f{n}")
    left = sum(rows_by_token(admin).values())
    print(f"\n[scenario 6] rows left by 5 failing views: {left}")
    assert left == 0
    assert app.extensions["poolkit"].pool().stats()["resets"] >= 5


def test_views_that_commit_keep_exactly_their_rows(fault_app: t.Callable[..., Flask],
                                                   admin: t.Any, writes: str) -> None:
    app, _ = write_app(fault_app)
    client = app.test_client()
    tokens = [uuid.uuid4().hex for _ in range(6)]
    for n, token in enumerate(tokens):
        assert client.post(f"/{'tx' if n % 2 else 'implicit'}/{token}").status_code == 200
    assert rows_by_token(admin) == dict.fromkeys(tokens, ROWS)


@pytest.mark.parametrize("kill", [False, True], ids=["steady", "killed"])
def test_concurrent_writes_lose_and_duplicate_nothing(fault_app: t.Callable[..., Flask],
                                                      admin: t.Any, database_url: str,
                                                      writes: str, kill: bool) -> None:
    app, phase = write_app(fault_app)
    sent: dict[str, str | None] = {}
    lock = threading.Lock()

    def request(client: t.Any, thread: int, n: int) -> t.Any:
        kind = "tx" if (thread + n) % 2 else "implicit"
        token = uuid.uuid4().hex
        with lock:
            sent[token] = None
        try:
            response = client.post(f"/{kind}/{token}")
        except Exception as error:
            with lock:
                sent[token] = f"{type(error).__name__}: {error}"
            raise
        return response

    load = start_load(app, request, threads=THREADS, max_requests=40, max_seconds=20.0)
    killed = 0
    after_kill: float | None = None
    try:
        if kill:
            time.sleep(0.3)
            killed += kill_connections(admin, database_of(database_url))  # mid-flight
            time.sleep(0.3)
            load.pause()  # then the strict form: kill idle connections, resume
            killed += kill_connections(admin, database_of(database_url))
            time.sleep(0.05)
            after_kill = time.monotonic()
            load.resume()
        load.join(timeout=30.0)
    finally:
        load.finish()
    rows = rows_by_token(admin)
    ok = [token for token, error in sent.items() if error is None]
    failed = {token: error for token, error in sent.items() if error is not None}
    in_doubt = [token for token in failed if phase.get(token) == "commit"]
    duplicated = {token: n for token, n in rows.items() if n != ROWS}
    lost = [token for token in ok if rows.get(token) != ROWS]
    leaked = [token for token in failed if token not in in_doubt and token in rows]
    late = load.failed(since=after_kill) if after_kill else []
    committed_in_doubt = sum(1 for token in in_doubt if token in rows)
    print(f"\n[scenario 6 {'killed' if kill else 'steady'}] {len(sent)} write requests, "
          f"{len(ok)} committed, {len(failed)} failed ({len(in_doubt)} at COMMIT, "
          f"{committed_in_doubt} of them committed); killed "
          f"{killed}; rows {sum(rows.values())} == {ROWS} × ({len(ok)} + {committed_in_doubt}); "
          f"lost {len(lost)}, duplicated {len(duplicated)}, failed after the kill {len(late)}")
    assert len(sent) >= THREADS * 10
    assert duplicated == {}, f"rows written more than once: {duplicated}"
    assert lost == [], f"committed requests without their rows: {lost[:5]}"
    assert leaked == [], f"failed requests that left rows: {leaked[:5]}"
    assert sum(rows.values()) == ROWS * (len(ok) + committed_in_doubt)
    assert late == [], summary(late)
    if not kill:
        assert failed == {}, summary(load.failed())
