"""The Flask extension and the db proxy, on the real server."""

from __future__ import annotations

import threading
import typing as t

import pytest
from conftest import scratch_table
from flask import Flask

from poolkit import Poolkit, db


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
