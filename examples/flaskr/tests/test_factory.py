from __future__ import annotations

from flask import Flask
from flaskr import create_app


def test_config(app: Flask) -> None:
    assert not create_app().testing
    assert app.testing


def test_hello(client: Flask) -> None:
    assert client.get("/hello").data == b"Hello, World!"
