"""Flask's tutorial blog on MariaDB/MySQL: the app factory."""

from __future__ import annotations

import os
import typing as t

from flask import Flask

from poolkit import Poolkit

pool = Poolkit()


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """``flask --app flaskr``; tests pass their own config."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY="dev",
        POOLKIT_DATABASE_URL=os.environ.get("POOLKIT_DATABASE_URL",
                                            "mysql://root:@127.0.0.1:3306/flaskr"),
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.from_mapping(test_config)
    pool.init_app(app)

    @app.route("/hello")
    def hello() -> str:
        return "Hello, World!"

    from . import auth, blog

    app.register_blueprint(auth.bp)
    app.register_blueprint(blog.bp)
    app.add_url_rule("/", endpoint="index")
    return app
