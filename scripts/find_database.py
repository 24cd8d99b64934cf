"""Print the URL of a MySQL/MariaDB server for the demo and the tests, starting one if needed.

Order: $POOLKIT_DATABASE_URL; a server on 127.0.0.1:3306 that accepts root with an empty
password or the docker-compose password; `docker compose up -d --wait` when a Docker engine
answers. Otherwise one line on stderr says how to get a database, and the exit code is 1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

CANDIDATES = ("mysql://root:@127.0.0.1:3306/test", "mysql://root:poolkit@127.0.0.1:3306/test")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _logs_in(url: str) -> bool:
    import pymysql

    from poolkit.url import parse_url

    kwargs = parse_url(url).connect_kwargs()
    kwargs.pop("database")
    try:
        pymysql.connect(connect_timeout=3, **kwargs).close()
    except pymysql.Error:
        return False
    return True


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return done.returncode == 0


def main() -> int:
    for name in ("POOLKIT_DATABASE_URL", "POOLKIT_TEST_DATABASE_URL"):
        if os.environ.get(name):
            print(os.environ[name])
            return 0
    if _answers("127.0.0.1", 3306):
        for url in CANDIDATES:
            if _logs_in(url):
                print(url)
                return 0
        print("a server answers on 127.0.0.1:3306 but refuses root; set POOLKIT_DATABASE_URL="
              "mysql://USER:PASSWORD@127.0.0.1:3306/DATABASE", file=sys.stderr)
        return 1
    if _docker_engine():
        subprocess.run(["docker", "compose", "up", "-d", "--wait"], check=True, timeout=600)
        print(CANDIDATES[1])
        return 0
    print("no database: set POOLKIT_DATABASE_URL=mysql://user:password@host:3306/db, start "
          "MySQL/MariaDB on 127.0.0.1:3306, or install Docker and run 'docker compose up -d "
          "--wait'", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
