"""A small Flask app that uses poolkit the way a user would.

    export POOLKIT_DATABASE_URL=mysql://root:@127.0.0.1:3306/test
    flask --app examples.app initdb      # load sql/*.sql
    flask --app examples.app run         # GET /employees
"""

from __future__ import annotations

import os

from flask import Flask, abort, request

from poolkit import Poolkit, db


class Config:
    """Class-style config, as Flask users write it; the URL comes from the environment."""

    POOLKIT_DATABASE_URL = os.environ.get(
        "POOLKIT_DATABASE_URL", "mysql://root:@127.0.0.1:3306/test?charset=utf8mb4")
    POOLKIT_MAX_CONNECTIONS = 8
    POOLKIT_SQL_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "sql")


pool = Poolkit()


def create_app(config: object = Config) -> Flask:
    """The app factory: ``flask --app examples.app`` finds it."""
    app = Flask(__name__)
    app.config.from_object(config)
    pool.init_app(app)

    @app.get("/employees")
    def employees() -> list[dict[str, object]]:
        return db.query("SELECT id, name FROM employee ORDER BY id")

    @app.get("/employees/<int:employee_id>")
    def employee(employee_id: int) -> dict[str, object]:
        row = db.query_one("SELECT id, name FROM employee WHERE id = %s", (employee_id,))
        if row is None:
            abort(404)
        return row

    @app.post("/employees")
    def add_employee() -> tuple[dict[str, object], int]:
        name = (request.get_json(silent=True) or {}).get("name")
        if not name:
            abort(400, "name is required")
        with db.transaction():
            db.execute("INSERT INTO employee (name) VALUES (%s)", (name,))
            new_id = db.scalar("SELECT LAST_INSERT_ID()")
        return {"id": new_id, "name": name}, 201

    @app.get("/stats")
    def stats() -> dict[str, float]:
        return pool.stats()

    return app
