"""Throwaway databases on a real server, and plain admin connections: no pytest needed.

The pytest plugin (:mod:`.plugin`) builds its fixtures on these; benchmarks and scripts use
them directly (``from poolkit.testing import admin_connect``).
"""

from __future__ import annotations

import secrets
import typing as t
from urllib.parse import quote

from ..pool.drivers import get_driver
from ..url import DatabaseURL

#: Names of the databases :class:`Databases` creates start with this, then ``_<8 hex>``.
DEFAULT_PREFIX = "poolkit_test"


def admin_connect(url: DatabaseURL, **extra: t.Any) -> t.Any:
    """A plain driver connection to *url* (autocommit), for test set-up and checks."""
    kwargs = url.connect_kwargs()
    kwargs.update(extra)
    kwargs.setdefault("autocommit", True)
    driver = get_driver(url.driver)
    if driver.name == "mysqldb":
        kwargs = {{"password": "passwd", "database": "db"}.get(k, k): v for k, v in kwargs.items()}
    return driver.module.connect(**kwargs)


class Databases:
    """Creates throwaway databases on one server and drops them all at the end."""

    def __init__(self, server: DatabaseURL, prefix: str = DEFAULT_PREFIX) -> None:
        self.server = server
        self.prefix = prefix
        self.created: list[str] = []

    def create(self, prefix: str | None = None) -> DatabaseURL:
        """A new empty database (``<prefix>_<random>``, utf8mb4) on the server; its URL."""
        name = f"{prefix or self.prefix}_{secrets.token_hex(4)}"
        con = admin_connect(self.server)
        try:
            con.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            con.close()
        self.created.append(name)
        return self.server.with_database(name)

    def drop_all(self) -> None:
        """Drop every database this object created."""
        if not self.created:
            return
        con = admin_connect(self.server)
        try:
            for name in self.created:
                con.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            con.close()
        self.created.clear()


def full_url(url: DatabaseURL) -> str:
    """*url* as a string with its password (``str(url)`` masks it): for apps under test."""
    auth = quote(url.user, safe="") + ":" + quote(url.password, safe="")
    query = "&".join(f"{k}={v}" for k, v in url.options.items())
    return (f"{url.scheme}://{auth}@{url.host}:{url.port}/{url.database}"
            + (f"?{query}" if query else ""))
