"""The Flask extension and the db proxy, on the real server."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import typing as t

import pytest
from conftest import scratch_table
from flask import Flask, Response, current_app, stream_with_context
from werkzeug.exceptions import HTTPException

from poolkit import Poolkit, PoolTimeout, db, signals
from poolkit.errors import ConnectionReturnedError


@pytest.fixture
def employee(admin: t.Any) -> str:
    return scratch_table(admin, "ext_employee",
                         "id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50)")


def names(admin: t.Any) -> list[str]:
    with admin.cursor() as cur:
        cur.execute("SELECT name FROM ext_employee ORDER BY id")
        return [r[0] for r in cur.fetchall()]


def test_db_serves_rows_and_returns_the_connection_at_teardown(app: Flask) -> None:
    pool = app.extensions["poolkit"].pool()
    with app.app_context():
        assert db.query("SELECT %s AS x, %s AS y", (1, "a")) == [{"x": 1, "y": "a"}]
        assert pool.stats()["in_use"] == 1
    assert pool.stats()["in_use"] == 0
    assert pool.stats()["idle"] == 1


def test_same_connection_within_one_context(app: Flask) -> None:
    with app.app_context():
        first = db.scalar("SELECT CONNECTION_ID()")
        second = db.scalar("SELECT CONNECTION_ID()")
        assert first == second


def test_checkout_is_lazy(app: Flask) -> None:
    pool = app.extensions["poolkit"].pool()
    with app.app_context():
        assert pool.stats()["checkouts"] == 0
    assert pool.stats()["checkouts"] == 0


def test_teardown_rolls_back_an_open_transaction(app: Flask, admin: t.Any,
                                                 employee: str) -> None:
    with app.app_context():
        db.execute("INSERT INTO ext_employee (name) VALUES (%s)", ("left dirty",))
    assert names(admin) == []
    assert app.extensions["poolkit"].pool().stats()["resets"] >= 1


def test_transaction_commits_and_rolls_back(app: Flask, admin: t.Any, employee: str) -> None:
    with app.app_context():
        with db.transaction():
            db.execute("INSERT INTO ext_employee (name) VALUES (%s)", ("Ada",))
        with pytest.raises(ZeroDivisionError), db.transaction():
            db.execute("INSERT INTO ext_employee (name) VALUES (%s)", ("Bob",))
            raise ZeroDivisionError
    assert names(admin) == ["Ada"]


def test_nested_transaction_uses_a_savepoint(app: Flask, admin: t.Any, employee: str) -> None:
    with app.app_context(), db.transaction():
        db.execute("INSERT INTO ext_employee (name) VALUES ('outer')")
        with pytest.raises(KeyError), db.transaction():
            db.execute("INSERT INTO ext_employee (name) VALUES ('inner')")
            raise KeyError
    assert names(admin) == ["outer"]


def test_raw_dbapi_cursor_commit(app: Flask, admin: t.Any, employee: str) -> None:
    with app.app_context():
        cur = db.cursor()
        cur.execute("INSERT INTO ext_employee (name) VALUES (%s)", ("Cy",))
        db.commit()
        dict_cur = db.cursor(dict=True)
        dict_cur.execute("SELECT name FROM ext_employee")
        assert dict_cur.fetchall() == [{"name": "Cy"}]
    assert names(admin) == ["Cy"]


def test_view_that_raises_leaves_no_row(app: Flask, admin: t.Any, employee: str) -> None:
    @app.post("/boom")
    def boom() -> str:
        db.execute("INSERT INTO ext_employee (name) VALUES ('boom')")
        raise RuntimeError("view failed")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert app.test_client().post("/boom").status_code == 500
    assert names(admin) == []


def test_db_outside_app_context_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="app_context"):
        db.query("SELECT 1")


def test_pool_connection_outside_a_request(app: Flask) -> None:
    extension = app.extensions["poolkit"].extension
    with extension.connection() as conn:
        assert conn.scalar("SELECT 41 + 1") == 42
    assert extension.stats()["in_use"] == 0


def test_pool_connection_returns_the_connection_on_error(app: Flask) -> None:
    extension = app.extensions["poolkit"].extension
    with pytest.raises(ValueError), extension.connection() as conn:
        conn.scalar("SELECT 1")
        raise ValueError
    assert extension.stats()["in_use"] == 0


def test_threads_each_get_their_own_connection(app: Flask) -> None:
    extension = app.extensions["poolkit"].extension
    ids: list[int] = []
    barrier = threading.Barrier(4, timeout=10)

    def work() -> None:
        with extension.connection() as conn:
            barrier.wait()
            ids.append(conn.scalar("SELECT CONNECTION_ID()"))
            barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(set(ids)) == 4


def test_init_app_twice_is_a_clear_error(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="already been registered"):
        app.extensions["poolkit"].extension.init_app(app)


def test_one_extension_serves_several_apps(make_app: t.Callable[..., Flask]) -> None:
    extension = Poolkit()
    first = make_app(extension, POOLKIT_MAX_CONNECTIONS=2)
    second = make_app(extension, POOLKIT_MAX_CONNECTIONS=3)
    with first.app_context():
        assert db.scalar("SELECT 1") == 1
        assert extension.get_pool().settings.max_connections == 2
    with second.app_context():
        assert db.scalar("SELECT 2") == 2
        assert extension.get_pool().settings.max_connections == 3
    with pytest.raises(RuntimeError, match="several apps"):
        extension.get_pool()


def test_extension_state_is_in_app_extensions(app: Flask) -> None:
    state = app.extensions["poolkit"]
    assert set(state.pools) == {"default"}
    assert state.pool().settings.max_connections == 10


# -- handles that outlive their use (issue 10 item 6) ---------------------------------------
def test_db_kept_past_teardown_refuses_use(app: Flask) -> None:
    pool = app.extensions["poolkit"].pool()
    with app.app_context():
        kept = db.acquire()  # the real Connection, as a generator might keep it
        assert kept.scalar("SELECT 1") == 1
    with pytest.raises(ConnectionReturnedError, match="stream_with_context"):
        kept.scalar("SELECT 1")
    stats = pool.stats()
    assert (stats["checkouts"], stats["in_use"]) == (1, 0)


def test_db_closed_early_names_a_fresh_connection_returned_at_teardown(app: Flask) -> None:
    pool = app.extensions["poolkit"].pool()
    with app.app_context():
        first = db.acquire()
        db.close()
        assert pool.stats()["in_use"] == 0
        assert db.scalar("SELECT 2") == 2  # db is the context's connection, not a spent handle
        assert db.acquire() is not first
        assert pool.stats()["in_use"] == 1
    assert (pool.stats()["in_use"], pool.stats()["checkouts"]) == (0, 2)


def _streaming_app(make_app: t.Callable[..., Flask], wrap: bool) -> Flask:
    app = make_app(POOLKIT_MAX_CONNECTIONS=3, POOLKIT_TIMEOUT=0.5)

    @app.get("/rows")
    def rows() -> t.Any:
        kept = db.acquire()
        assert kept.scalar("SELECT 1") == 1

        def generate() -> t.Iterator[str]:
            # Flask tears the app context down when the view returns and, for a generator
            # in stream_with_context, sets it up again around the stream: db works there,
            # a connection kept from the view does not.
            for i in range(3):
                conn = db if wrap else kept
                yield f"{conn.scalar('SELECT %s + 0', (i,))},"

        return Response(stream_with_context(generate()) if wrap else generate())

    @app.get("/one")
    def one() -> str:
        return str(db.scalar("SELECT 1"))

    return app


def test_streaming_with_stream_with_context_returns_every_connection(
        make_app: t.Callable[..., Flask]) -> None:
    app = _streaming_app(make_app, wrap=True)
    pool = app.extensions["poolkit"].pool()
    client = app.test_client()
    for _ in range(3):
        response = client.get("/rows", buffered=False)
        assert response.get_data(as_text=True) == "0,1,2,"
        response.close()
        assert pool.stats()["in_use"] == 0
    assert pool.stats()["checkouts"] == 6  # the view's and the stream's, each returned
    for _ in range(5):
        assert client.get("/one").get_data(as_text=True) == "1"
    assert pool.stats()["in_use"] == 0


def test_streaming_without_stream_with_context_fails_clearly_and_leaks_nothing(
        make_app: t.Callable[..., Flask]) -> None:
    app = _streaming_app(make_app, wrap=False)
    pool = app.extensions["poolkit"].pool()
    client = app.test_client()
    for _ in range(3):  # a pool of 3: before the fix these three exhausted it
        with pytest.raises(ConnectionReturnedError, match="stream_with_context"):
            client.get("/rows").get_data()
    assert pool.stats()["in_use"] == 0
    assert client.get("/one").get_data(as_text=True) == "1"


# -- threads sharing one app context (issue 10 item 7) --------------------------------------
def test_threads_sharing_the_app_context_check_out_once(app: Flask) -> None:
    pool = app.extensions["poolkit"].pool()
    threads, rounds = 8, 20
    barrier = threading.Barrier(threads, timeout=20)
    seen: dict[int, list[tuple[int, int]]] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()  # the first db use of every thread at once
            rows = []
            for i in range(rounds):
                row = db.query_one("SELECT %s AS n, %s AS i, CONNECTION_ID() AS cid", (n, i))
                assert row is not None and (row["n"], row["i"]) == (n, i)
                rows.append((row["i"], row["cid"]))
            seen[n] = rows
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    with app.app_context():
        workers = [threading.Thread(target=contextvars.copy_context().run, args=(work, n))
                   for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert not errors, errors
        assert pool.stats()["checkouts"] == 1
        assert pool.stats()["in_use"] == 1
        assert len({cid for rows in seen.values() for _, cid in rows}) == 1
        assert db.scalar("SELECT 40 + 2") == 42  # the protocol is intact
    assert (pool.stats()["in_use"], pool.stats()["idle"]) == (0, 1)


def test_asyncio_to_thread_twice_in_one_context(app: Flask) -> None:
    pool = app.extensions["poolkit"].pool()
    barrier = threading.Barrier(2, timeout=20)

    def work(n: int) -> t.Any:
        barrier.wait()
        return db.scalar("SELECT %s", (n,)), db.scalar("SELECT CONNECTION_ID()")

    async def view() -> list[t.Any]:
        return list(await asyncio.gather(asyncio.to_thread(work, 1), asyncio.to_thread(work, 2)))

    with app.app_context():
        (one, cid_one), (two, cid_two) = asyncio.run(view())
        assert (one, two) == (1, 2) and cid_one == cid_two
        assert pool.stats()["checkouts"] == 1
    assert pool.stats()["in_use"] == 0


# -- PoolTimeout in a view (issue 10) --------------------------------------------------------
def _busy_app(make_app: t.Callable[..., Flask], **config: t.Any) -> Flask:
    app = make_app(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.1, **config)

    @app.get("/busy")
    def busy() -> str:
        with app.extensions["poolkit"].extension.connection():  # the only connection
            return str(db.scalar("SELECT 1"))

    return app


def test_pool_timeout_answers_503_with_retry_after(make_app: t.Callable[..., Flask],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    app = _busy_app(make_app)
    with caplog.at_level("WARNING", logger="poolkit"):
        response = app.test_client().get("/busy")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    body = response.get_data(as_text=True)
    assert "try again" in body and "127.0.0.1" not in body  # nothing about the server
    assert "no connection free after" in caplog.text
    assert app.extensions["poolkit"].pool().stats()["in_use"] == 0


def test_apps_own_pool_timeout_handler_wins(make_app: t.Callable[..., Flask]) -> None:
    for before in (True, False):
        app = Flask("own_handler")
        app.config.update(POOLKIT_DATABASE_URL=make_app().config["POOLKIT_DATABASE_URL"],
                          POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.1)

        def own(error: PoolTimeout) -> tuple[str, int]:
            return "busy, ours", 429

        extension = Poolkit()
        if before:
            app.register_error_handler(PoolTimeout, own)
        extension.init_app(app)
        if not before:
            app.register_error_handler(PoolTimeout, own)

        @app.get("/busy")
        def busy() -> str:
            with current_app.extensions["poolkit"].extension.connection():
                return str(db.scalar("SELECT 1"))

        try:
            response = app.test_client().get("/busy")
            assert (response.status_code, response.get_data(as_text=True)) == (429, "busy, ours")
        finally:
            extension.close()


def test_apps_503_handler_shapes_the_pool_timeout_page(make_app: t.Callable[..., Flask]) -> None:
    app = _busy_app(make_app)

    @app.errorhandler(503)
    def unavailable(error: HTTPException) -> tuple[dict[str, t.Any], int, dict[str, str]]:
        original = type(getattr(error, "original_exception", None)).__name__
        return {"error": "unavailable", "cause": original}, 503, {"Retry-After": "7"}

    response = app.test_client().get("/busy")
    assert response.status_code == 503
    assert response.get_json() == {"error": "unavailable", "cause": "PoolTimeout"}
    assert response.headers["Retry-After"] == "7"


# -- teardown returns every bind ------------------------------------------------------------
def test_teardown_returns_every_bind_when_a_receiver_raises(
        make_app: t.Callable[..., Flask], make_database: t.Callable[[], str]) -> None:
    app = make_app(POOLKIT_BINDS={"replica": {"url": make_database()}})
    state = app.extensions["poolkit"]
    default, replica = state.pool(), state.pool("replica")

    class TimeLimit(BaseException):
        """What a request time limit raises; poolkit logs receivers' Exceptions, not this."""

    def explode(sender: object, **extra: object) -> None:
        raise TimeLimit("receiver failed")

    signals.connection_returned.connect(explode, sender=default)
    signals.connection_returned.connect(explode, sender=replica)
    try:
        with pytest.raises(TimeLimit, match="receiver failed"), app.app_context():
            assert db.scalar("SELECT 1") == 1
            assert db.using("replica").scalar("SELECT 2") == 2
    finally:
        signals.connection_returned.disconnect(explode, sender=default)
        signals.connection_returned.disconnect(explode, sender=replica)
    assert (default.stats()["in_use"], replica.stats()["in_use"]) == (0, 0)
    assert (default.stats()["idle"], replica.stats()["idle"]) == (1, 1)
