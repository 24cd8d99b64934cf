"""A small Flask app that uses poolkit the way a user would.

    export POOLKIT_DATABASE_URL=mysql://root:@127.0.0.1:3306/poolkit_demo
    flask --app examples.app initdb --create-database   # load sql/*.sql
    flask --app examples.app run         # GET /employees
    gunicorn -c examples/gunicorn.conf.py -w 4 'examples.app:create_app()'

Any key can come from the environment with Flask's prefix: ``FLASK_POOLKIT_MAX_CONNECTIONS=4``,
``FLASK_POOLKIT_METRICS='"prometheus"'`` (values are read as JSON when they parse).
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation

from flask import Flask, Response, abort, request

from poolkit import Poolkit, db


class Config:
    """Class-style config, as Flask users write it; the URL comes from the environment."""

    POOLKIT_DATABASE_URL = os.environ.get(
        "POOLKIT_DATABASE_URL", "mysql://root:@127.0.0.1:3306/poolkit_demo?charset=utf8mb4")
    POOLKIT_MAX_CONNECTIONS = 8
    POOLKIT_SQL_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "sql")


pool = Poolkit()


def create_app(config: object = Config) -> Flask:
    """The app factory: ``flask --app examples.app``, ``gunicorn 'examples.app:create_app()'``."""
    app = Flask(__name__)
    app.config.from_object(config)
    app.config.from_prefixed_env()
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

    @app.get("/whoami")
    def whoami() -> dict[str, object]:
        """Which worker process and which server connection served this request."""
        return {"pid": os.getpid(), "connection_id": db.scalar("SELECT CONNECTION_ID()")}

    @app.post("/transfers")
    def transfer() -> tuple[dict[str, object], int]:
        """Move ``amount`` from account ``source`` to ``target`` in one transaction."""
        data = request.get_json(silent=True) or {}
        try:
            source, target = int(data["source"]), int(data["target"])
            amount = Decimal(str(data["amount"]))
        except (KeyError, TypeError, ValueError, InvalidOperation):
            abort(400, "source, target and amount are required")
        if source == target or amount <= 0:
            abort(400, "source and target must differ and amount must be positive")
        with db.transaction():
            # Both rows locked in id order: two opposite transfers cannot deadlock.
            rows = db.query("SELECT id, balance FROM account WHERE id IN (%s, %s) ORDER BY id "
                            "FOR UPDATE", (source, target))
            balances = {row["id"]: row["balance"] for row in rows}
            if len(balances) != 2:
                abort(404, "no such account")
            if balances[source] < amount:
                abort(409, "insufficient funds")
            db.execute("UPDATE account SET balance = balance - %s WHERE id = %s",
                       (amount, source))
            db.execute("UPDATE account SET balance = balance + %s WHERE id = %s",
                       (amount, target))
            connection_id = db.scalar("SELECT CONNECTION_ID()")
        return {"pid": os.getpid(), "connection_id": connection_id}, 201

    @app.get("/accounts/total")
    def accounts_total() -> dict[str, object]:
        """The number of accounts and the sum of their balances (constant under transfers)."""
        row = db.query_one("SELECT COUNT(*) AS accounts, SUM(balance) AS total FROM account")
        assert row is not None
        return {"accounts": row["accounts"], "total": str(row["total"])}

    @app.get("/slow")
    def slow() -> dict[str, object]:
        """Hold a connection for ``seconds`` (at most 5): fills a small pool on purpose."""
        seconds = min(float(request.args.get("seconds", "1")), 5.0)
        db.scalar("SELECT SLEEP(%s)", (seconds,))
        return {"pid": os.getpid(), "slept": seconds}

    @app.get("/stats")
    def stats() -> dict[str, float]:
        return pool.stats()

    if app.config.get("POOLKIT_METRICS") == "prometheus":
        from poolkit.metrics.prometheus import exposition

        @app.get("/metrics")
        def metrics() -> Response:
            body, content_type = exposition()
            return Response(body, content_type=content_type)

    return app
