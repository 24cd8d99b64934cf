from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner

import poolkit
from poolkit import db, executescript


def test_init_db_starts_over(app: Flask, runner: FlaskCliRunner) -> None:
    with app.app_context():
        assert db.scalar("SELECT COUNT(*) FROM user") == 2
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0
    assert result.output == "Initialized the database.\n"
    with app.app_context():
        assert db.scalar("SELECT COUNT(*) FROM user") == 0


def test_a_connection_is_the_same_within_a_context_and_returned_after(app: Flask) -> None:
    with app.app_context():
        conn = poolkit.current_connection()
        assert conn is poolkit.current_connection()
        assert db.scalar("SELECT 1") == 1
    with pytest.raises(poolkit.ConnectionReturnedError, match="already returned"):
        conn.scalar("SELECT 1")


def test_a_bad_script_names_its_line(app: Flask) -> None:
    with app.app_context(), pytest.raises(poolkit.SqlFileError) as caught:
        executescript(db, "SELECT 1;\nINSERT INTO user (username) VALUES ('x');\n",
                      name="fix.sql")
    assert str(caught.value).startswith("fix.sql:2: ERROR 1364")
    assert isinstance(caught.value.__cause__, poolkit.DatabaseError)
