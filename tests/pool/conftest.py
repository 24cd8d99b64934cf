"""Fixtures of the pool-correctness tests: one private server for roles and users.

Roles and accounts are server-wide: the tests create them on a private ``mariadbd`` (from
``mariadb-install-db``, anonymous accounts included), never on the shared server.
"""

from __future__ import annotations

import os
import typing as t

import pytest

from poolkit.testing.servers import PrivateServer, binaries_available

#: A SELECT-only account with a role that may write: what SET ROLE hands on.
READER = "poolkit_reader"
READER_PASSWORD = "reader-pw"


@pytest.fixture(scope="session")
def role_server() -> t.Iterator[PrivateServer]:
    """A private server with database ``app``, table ``app.t``, role ``writer`` (INSERT)
    granted to ``poolkit_reader`` (SELECT only), and ``poolkit_defrole`` whose default role
    is ``writer``."""
    if not binaries_available():
        if os.environ.get("POOLKIT_TEST_REQUIRE_DB") == "1":
            pytest.fail("mariadbd / mariadb-install-db are needed for the role tests")
        pytest.skip("mariadbd is not installed")
    server = PrivateServer(21, prefix="poolkit-roles-")
    try:
        server.install()
        server.start()
        server.execute(
            "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB",
            "CREATE ROLE writer", "GRANT SELECT, INSERT ON app.* TO writer",
            f"CREATE USER {READER}@'%' IDENTIFIED BY '{READER_PASSWORD}'",
            f"GRANT SELECT ON app.* TO {READER}@'%'", f"GRANT writer TO {READER}@'%'",
            f"CREATE USER {READER}@localhost IDENTIFIED BY '{READER_PASSWORD}'",
            f"GRANT SELECT ON app.* TO {READER}@localhost",
            f"GRANT writer TO {READER}@localhost",
            "CREATE USER poolkit_defrole@'%' IDENTIFIED BY 'pw'",
            "CREATE USER poolkit_defrole@localhost IDENTIFIED BY 'pw'",
            "GRANT writer TO poolkit_defrole@'%'", "GRANT writer TO poolkit_defrole@localhost",
            "SET DEFAULT ROLE writer FOR poolkit_defrole@'%'",
            "SET DEFAULT ROLE writer FOR poolkit_defrole@localhost",
        )
        yield server
    finally:
        server.destroy()


def role_url(server: PrivateServer, user: str = READER, password: str = READER_PASSWORD) -> str:
    return f"mysql://{user}:{password}@127.0.0.1:{server.port}/app"


@pytest.fixture(scope="session")
def rollback_on_timeout_server() -> t.Iterator[PrivateServer]:
    """A private server whose lock wait timeout (1 s) rolls back the whole transaction."""
    if not binaries_available():
        if os.environ.get("POOLKIT_TEST_REQUIRE_DB") == "1":
            pytest.fail("mariadbd / mariadb-install-db are needed")
        pytest.skip("mariadbd is not installed")
    server = PrivateServer(22, prefix="poolkit-rot-", options=(
        "--innodb-rollback-on-timeout=ON", "--innodb-lock-wait-timeout=1"))
    try:
        server.install()
        server.start()
        server.execute("CREATE DATABASE app",
                       "CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
                       "CREATE TABLE app.hot (id INT PRIMARY KEY, n INT)",
                       "INSERT INTO app.hot VALUES (1, 0)")
        yield server
    finally:
        server.destroy()
