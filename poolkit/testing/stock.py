"""A stock MariaDB server for tests: ``mariadb-install-db`` as a developer's laptop runs it.

:class:`~poolkit.testing.servers.PrivateServer` installs a server made for tests (root over
TCP without a password, no anonymous accounts, no name resolution). A laptop's server is not
like that: ``mariadb-install-db`` with its defaults keeps the anonymous ``''@localhost``
accounts, root logs in through the unix socket only, and ``127.0.0.1`` resolves to
``localhost``. There an account created as ``'app'@'%'`` loses to the anonymous
``''@localhost`` (MariaDB matches the most specific host first), so a test that creates users
as ``'%'`` passes on the test server and fails here with 1045 or 1044.

:class:`StockServer` is that server, on a free loopback port. Tests reach it through one
administrator made the way the MariaDB manual advises (``'poolkit_admin'@'localhost'``);
``POOLKIT_TEST_SERVER=stock`` makes the pytest plugin start one for the session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import typing as t

from .servers import PrivateServer, ServerError, _find, _user

ADMIN_USER = "poolkit_admin"
ADMIN_PASSWORD = "stock-admin"


class StockServer(PrivateServer):
    """A ``mariadbd`` installed with ``mariadb-install-db``'s defaults, anonymous accounts kept."""

    def __init__(self, server_id: int = 1) -> None:
        # As on a laptop: names resolved (127.0.0.1 is 'localhost' to the account match) and
        # no binary log (with one, CREATE FUNCTION needs DETERMINISTIC or a SUPER setting).
        super().__init__(server_id, prefix="poolkit-stock-",
                         options=["--skip-name-resolve=OFF", "--skip-log-bin"])

    @property
    def socket(self) -> str:
        return os.path.join(self.basedir, "mysqld.sock")

    def install(self, timeout: float = 60.0) -> None:
        """``mariadb-install-db`` with no options but where its files go."""
        install = _find("mariadb-install-db")
        if install is None:
            raise ServerError("mariadb-install-db is not installed (apt install mariadb-server)")
        result = subprocess.run(
            [install, "--no-defaults", f"--datadir={self.datadir}", "--user=" + _user()],
            capture_output=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise ServerError("mariadb-install-db failed: "
                              + result.stderr.decode(errors="replace")[-2000:])

    def connect(self, user: str = "root", password: str = "", database: str | None = None,
                **extra: t.Any) -> t.Any:
        """Root through the unix socket (its stock login); anyone else over TCP."""
        if user == "root" and not password:
            import pymysql

            # PyMySQL leaks the socket of a failed unix-socket connect (a ResourceWarning in
            # some later test): while the server starts, ask the socket first.
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(2)
                probe.connect(self.socket)

            extra.setdefault("connect_timeout", 2)
            return pymysql.connect(unix_socket=self.socket, user="root", database=database,
                                   autocommit=True, **extra)
        return super().connect(user, password, database, **extra)

    def setup(self) -> str:
        """Install, start and add the tests' administrator; returns its server URL."""
        # Generous bounds: on a loaded CI machine the first start of InnoDB can take a while.
        self.install(timeout=180.0)
        self.start(timeout=90.0)
        self.execute(
            f"CREATE USER '{ADMIN_USER}'@'localhost' IDENTIFIED BY '{ADMIN_PASSWORD}'",
            f"GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'localhost' WITH GRANT OPTION",
            "CREATE DATABASE IF NOT EXISTS test")
        anonymous = self.execute("SELECT COUNT(*) FROM mysql.user WHERE user = ''")
        if not anonymous or not anonymous[0][0]:
            raise ServerError("this mariadb-install-db created no anonymous account: the "
                              "server is not the stock one the tests are meant for")
        return self.url()

    def url(self, database: str = "test") -> str:
        """The administrator's URL (over TCP to 127.0.0.1, which the server calls localhost)."""
        return f"mysql://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/{database}"
