"""Pytest fixtures for apps that use poolkit: a real server, throwaway databases.

The server is found in this order: ``POOLKIT_TEST_DATABASE_URL`` (a server URL; databases
``poolkit_test_<random>`` are created on it and dropped afterwards), else a testcontainers
``MySqlContainer`` when a Docker engine answers, else the test is skipped with a reason —
or fails, when ``POOLKIT_TEST_REQUIRE_DB=1`` (as on CI).
"""

from __future__ import annotations

import os
import secrets
import typing as t
from urllib.parse import quote

import pytest

from ..pool.drivers import get_driver
from ..url import DatabaseURL, parse_url

ENV_URL = "POOLKIT_TEST_DATABASE_URL"
ENV_REQUIRE = "POOLKIT_TEST_REQUIRE_DB"
ENV_IMAGE = "POOLKIT_TEST_IMAGE"
DEFAULT_IMAGE = "mysql:8.4"

_HOW = (f"no database server for the tests: set {ENV_URL}=mysql://root:@127.0.0.1:3306/test, "
        "or start one with 'docker compose up -d --wait' (or run a Docker engine for "
        "testcontainers)")


def _docker_answers() -> bool:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not os.path.exists(host.removeprefix("unix://")):
        return False  # no engine; docker-py would leak the socket of its failed connect
    try:
        import docker

        client = docker.from_env(timeout=3)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()  # a failed ping leaves its socket open (ResourceWarning → error)


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

    def __init__(self, server: DatabaseURL) -> None:
        self.server = server
        self.created: list[str] = []

    def create(self, prefix: str = "poolkit_test") -> DatabaseURL:
        """A new empty database on the server; returns its URL."""
        name = f"{prefix}_{secrets.token_hex(4)}"
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


@pytest.fixture(scope="session")
def poolkit_server() -> t.Iterator[DatabaseURL]:
    """The URL of a real MySQL/MariaDB server (see the module doc for how it is found)."""
    url = os.environ.get(ENV_URL)
    if url:
        yield parse_url(url, ENV_URL)
        return
    if _docker_answers():
        from testcontainers.mysql import MySqlContainer

        image = os.environ.get(ENV_IMAGE, DEFAULT_IMAGE)
        with MySqlContainer(image, username="root", password="poolkit",
                            dbname="test") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(3306)
            yield parse_url(f"mysql://root:poolkit@{host}:{port}/test")
        return
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"{ENV_REQUIRE}=1 but {_HOW}")
    pytest.skip(_HOW)


@pytest.fixture(scope="session")
def poolkit_databases(poolkit_server: DatabaseURL) -> t.Iterator[Databases]:
    """Creates throwaway databases; all are dropped at the end of the session."""
    databases = Databases(poolkit_server)
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def database_url(poolkit_databases: Databases) -> str:
    """The URL (password included) of a fresh database for this test session."""
    url = poolkit_databases.create()
    return _full(url)


@pytest.fixture(scope="session")
def make_database(poolkit_databases: Databases) -> t.Callable[[], str]:
    """A factory of further throwaway database URLs (dropped at the end of the session)."""
    return lambda: _full(poolkit_databases.create())


def _full(url: DatabaseURL) -> str:
    auth = quote(url.user, safe="") + ":" + quote(url.password, safe="")
    query = "&".join(f"{k}={v}" for k, v in url.options.items())
    return (f"{url.scheme}://{auth}@{url.host}:{url.port}/{url.database}"
            + (f"?{query}" if query else ""))
