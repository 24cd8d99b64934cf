"""flaskr's fixtures: a fresh database per test, its schema and test data loaded.

``make_database`` comes from poolkit's pytest plugin (installed with poolkit): each call creates
an empty database on the test server (POOLKIT_TEST_DATABASE_URL) and all are dropped when the
session ends.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from flaskr import create_app, pool

from poolkit import db, executescript

DATA_SQL = (Path(__file__).parent / "data.sql").read_text(encoding="utf-8")


@pytest.fixture
def app(make_database: t.Callable[[], str]) -> t.Iterator[Flask]:
    app = create_app({"TESTING": True, "POOLKIT_DATABASE_URL": make_database()})
    result = app.test_cli_runner().invoke(args=["init-db"])  # the app's own command
    assert result.exit_code == 0, result.output
    with app.app_context():
        executescript(db, DATA_SQL, name="tests/data.sql")  # committed when it ends
    yield app
    pool.close()  # this test's connections; the database is dropped with the session


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


class AuthActions:
    def __init__(self, client: FlaskClient) -> None:
        self._client = client

    def login(self, username: str = "test", password: str = "test") -> t.Any:
        return self._client.post("/auth/login",
                                 data={"username": username, "password": password})

    def logout(self) -> t.Any:
        return self._client.get("/auth/logout")


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    return AuthActions(client)
