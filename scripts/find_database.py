"""Print the URL of a MySQL/MariaDB server for the demo and the tests, starting one if needed.

Order: $POOLKIT_DATABASE_URL; a server on 127.0.0.1:3306 that accepts root with an empty
password or the docker-compose password; `docker compose up -d --wait` when a Docker engine
answers. Otherwise one line on stderr says how to get a database, and the exit code is 1.

``--database NAME`` prints the found server's URL with database NAME instead (``make demo``
uses ``poolkit_demo``, which ``flask initdb --create-database`` creates): the demo never
writes into a database of the user's. A URL given in the environment is printed as it is.
"""

from __future__ import annotations

import argparse
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


def _with_database(url: str, database: str | None) -> str:
    return url if database is None else url.rsplit("/", 1)[0] + "/" + database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="the database to name in the URL printed")
    database = parser.parse_args(argv).database
    for name in ("POOLKIT_DATABASE_URL", "POOLKIT_TEST_DATABASE_URL"):
        if os.environ.get(name):
            print(os.environ[name])
            return 0
    if _answers("127.0.0.1", 3306):
        for url in CANDIDATES:
            if _logs_in(url):
                print(_with_database(url, database))
                return 0
        print("a server answers on 127.0.0.1:3306 but refuses root; set POOLKIT_DATABASE_URL="
              "mysql://USER:PASSWORD@127.0.0.1:3306/DATABASE", file=sys.stderr)
        return 1
    if _docker_engine():
        subprocess.run(["docker", "compose", "up", "-d", "--wait"], check=True, timeout=600)
        print(_with_database(CANDIDATES[1], database))
        return 0
    print("no database: set POOLKIT_DATABASE_URL=mysql://user:password@host:3306/db, start "
          "MySQL/MariaDB on 127.0.0.1:3306, or install Docker and run 'docker compose up -d "
          "--wait'", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
