"""A borrow's objects end with it; PoolTimeout in a stream is a 503; the counts add up."""

from __future__ import annotations

import contextvars
import threading
import time
import typing as t
import urllib.error
import urllib.request

import pytest
from flask import Flask, Response
from werkzeug.serving import make_server

from poolkit import Pool, db
from poolkit.errors import ConnectionReturnedError
from poolkit.extension import stream_with_db
from poolkit.testing.faultproxy import FaultProxy
from poolkit.url import DatabaseURL


def test_db_after_teardown_in_a_context_sharing_thread_raises(
        make_app: t.Callable[..., Flask]) -> None:
    app = make_app(POOLKIT_MAX_CONNECTIONS=2, POOLKIT_TIMEOUT=0.5)
    kept: list[contextvars.Context] = []

    @app.get("/")
    def view() -> str:
        db.scalar("SELECT 1")
        kept.append(contextvars.copy_context())  # a thread started here shares the context
        return "ok"

    client = app.test_client()
    assert client.get("/").status_code == 200
    errors: list[BaseException] = []

    def late() -> None:
        try:
            kept[0].run(lambda: db.scalar("SELECT 1"))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=late)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], ConnectionReturnedError), errors
    assert app.extensions["poolkit"].pool().stats()["in_use"] == 0
    assert client.get("/").status_code == 200


@pytest.fixture
def http_app(make_app: t.Callable[..., Flask]) -> t.Iterator[tuple[Flask, str]]:
    app = make_app(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.3)

    def rows() -> t.Iterator[str]:
        for row in db.query("SELECT CONNECTION_ID() AS a UNION ALL SELECT 2"):
            yield f"{row['a']}\n"

    @app.get("/export")
    def export() -> Response:  # the documented way: check out before the body starts
        seen.append(db.scalar("SELECT CONNECTION_ID()"))
        return Response(stream_with_db(rows()), mimetype="text/csv")

    seen: list[int] = []
    app.config["seen"] = seen

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def test_pool_timeout_in_a_streamed_response_is_a_503(http_app: tuple[Flask, str]) -> None:
    app, base = http_app
    with urllib.request.urlopen(base + "/export", timeout=10) as answer:
        body = answer.read()
        assert answer.status == 200
    assert body == f"{app.config['seen'][0]}\n2\n".encode()  # the view's connection
    pool: Pool = app.extensions["poolkit"].pool()
    with pool.connection() as held:
        held.scalar("SELECT 1")
        with pytest.raises(urllib.error.HTTPError) as busy:
            urllib.request.urlopen(base + "/export", timeout=10)
        assert pool.stats()["in_use"] == 1
    busy.value.close()
    assert busy.value.code == 503
    assert busy.value.headers["Retry-After"] == "1"
    assert pool.stats()["in_use"] == 0


def test_a_client_that_goes_away_returns_the_streams_connection(
        http_app: tuple[Flask, str]) -> None:
    import http.client

    app, base = http_app
    host, port = base.removeprefix("http://").split(":")
    client = http.client.HTTPConnection(host, int(port), timeout=10)
    client.request("GET", "/export")
    answer = client.getresponse()
    assert answer.status == 200
    answer.close()  # before reading the body
    client.close()
    pool: Pool = app.extensions["poolkit"].pool()
    deadline = time.monotonic() + 5
    while pool.stats()["in_use"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pool.stats()["in_use"] == 0


def test_counts_add_up_during_a_slow_connect(make_pool: t.Callable[..., Pool],
                                             poolkit_server: DatabaseURL,
                                             database_url: str) -> None:
    with FaultProxy(poolkit_server.host, poolkit_server.port) as proxy:
        proxy.delay(connect=0.3)
        pool = make_pool(POOLKIT_DATABASE_URL=proxy.url(database_url))
        done = threading.Event()

        def borrow() -> None:
            with pool.connection() as conn:
                conn.scalar("SELECT 1")
            done.set()

        thread = threading.Thread(target=borrow)
        thread.start()
        seen = []
        opening = False
        while not done.is_set():
            s = pool.stats()
            # Documented: a connect in flight counts in size (as opening) before it counts
            # as opened; otherwise opened - closed == size.
            seen.append(s["connections_opened"] - s["connections_closed"]
                        == s["size"] - s["opening"])
            opening = opening or s["opening"] == 1
            time.sleep(0.01)
        thread.join(10)
        after = pool.stats()
        pool.close()
    assert len(seen) > 10 and all(seen) and opening, (seen.count(False), opening)
    assert after["connections_opened"] - after["connections_closed"] == after["size"] == 1


def test_a_streamed_body_read_to_its_end_returns_its_connection(
        make_app: t.Callable[..., Flask]) -> None:
    # Flask's test client reads .data without closing the response: the connection must go
    # back when the body ends, not only at close().
    app = make_app(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.5)

    @app.get("/stream")
    def stream() -> Response:
        def body() -> t.Iterator[str]:
            yield f"{db.scalar('SELECT 1')}\n"
        return Response(stream_with_db(body()))

    @app.get("/after")
    def after() -> str:
        return str(db.scalar("SELECT 2"))

    client = app.test_client()
    assert client.get("/stream").data == b"1\n"
    assert client.get("/after").data == b"2"
    assert app.extensions["poolkit"].pool().stats()["in_use"] == 0
