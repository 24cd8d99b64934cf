"""Pytest fixtures for apps that use poolkit: a real server, throwaway databases.

Registered by poolkit's ``pytest11`` entry point: installing poolkit is enough. The server is
found in this order:

1. ``POOLKIT_TEST_SERVER=stock``: a private ``mariadbd`` installed by ``mariadb-install-db``
   with its defaults (anonymous ``''@localhost`` accounts kept, as on a developer's laptop),
   on a free loopback port, removed at the end (:mod:`poolkit.testing.stock`);
2. ``POOLKIT_TEST_DATABASE_URL`` (a server URL; its database part is only used to log in);
3. a testcontainers ``MySqlContainer`` when a Docker engine answers;
4. else every test that needs it is skipped with the reason — or fails, when
   ``POOLKIT_TEST_REQUIRE_DB=1`` (as on CI). A given server that does not answer is the same.

Each database is ``<prefix>_<8 hex>``, created empty (utf8mb4) and dropped at the end of the
session; the prefix is ``poolkit_test`` unless ``POOLKIT_TEST_DATABASE_PREFIX`` or the ini
option ``poolkit_database_prefix`` says otherwise.
"""

from __future__ import annotations

import os
import typing as t

import pytest

from ..url import DatabaseURL, parse_url
from .databases import DEFAULT_PREFIX, Databases, full_url
from .databases import admin_connect as admin_connect  # re-exported: tests import it here

ENV_URL = "POOLKIT_TEST_DATABASE_URL"
ENV_REQUIRE = "POOLKIT_TEST_REQUIRE_DB"
ENV_IMAGE = "POOLKIT_TEST_IMAGE"
ENV_SERVER = "POOLKIT_TEST_SERVER"
ENV_PREFIX = "POOLKIT_TEST_DATABASE_PREFIX"
INI_PREFIX = "poolkit_database_prefix"
DEFAULT_IMAGE = "mysql:8.4"

_HOW = (f"no database server for the tests: {ENV_URL} is not set and no Docker engine answers "
        f"(for testcontainers). Set {ENV_URL}=mysql://USER:PASSWORD@127.0.0.1:3306/test, or "
        f"{ENV_SERVER}=stock to start a private mariadbd (needs mariadb-server), or start "
        "one with 'docker compose up -d --wait'")

_full = full_url  # the name the suite's older tests use


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI_PREFIX, f"prefix of poolkit's throwaway test databases (default "
                  f"{DEFAULT_PREFIX}; {ENV_PREFIX} overrides it)", default=DEFAULT_PREFIX)


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


def _unavailable(reason: str) -> t.NoReturn:
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"{ENV_REQUIRE}=1 but {reason}")
    pytest.skip(reason)


def _answering(url: DatabaseURL) -> DatabaseURL:
    """*url* once its server accepted a login; else the skip (or failure) that says why."""
    try:
        admin_connect(url.with_database(""), connect_timeout=5).close()
    except Exception as error:
        _unavailable(f"the server of {ENV_URL} ({url}) did not accept the login: {error}")
    return url


@pytest.fixture(scope="session")
def poolkit_server() -> t.Iterator[DatabaseURL]:
    """The URL of a real MySQL/MariaDB server (see the module doc for how it is found)."""
    if os.environ.get(ENV_SERVER) == "stock":
        from .stock import StockServer

        server = StockServer()
        try:
            yield parse_url(server.setup())
        finally:
            server.destroy()
        return
    url = os.environ.get(ENV_URL)
    if url:
        yield _answering(parse_url(url, ENV_URL))
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
    _unavailable(_HOW)


@pytest.fixture(scope="session")
def poolkit_database_prefix(pytestconfig: pytest.Config) -> str:
    """The prefix of the session's throwaway databases (env, then ini, then the default)."""
    return os.environ.get(ENV_PREFIX) or str(pytestconfig.getini(INI_PREFIX))


@pytest.fixture(scope="session")
def poolkit_databases(poolkit_server: DatabaseURL,
                      poolkit_database_prefix: str) -> t.Iterator[Databases]:
    """Creates throwaway databases; all are dropped at the end of the session."""
    databases = Databases(poolkit_server, poolkit_database_prefix)
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def database_url(poolkit_databases: Databases) -> str:
    """The URL (password included) of one fresh, empty database for the whole session."""
    return full_url(poolkit_databases.create())


@pytest.fixture(scope="session")
def make_database(poolkit_databases: Databases) -> t.Callable[[], str]:
    """A factory: each call creates another empty database and returns its URL (password
    included); all are dropped at the end of the session."""
    return lambda: full_url(poolkit_databases.create())
