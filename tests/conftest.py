"""Shared fixtures: a real database per session (poolkit.testing.plugin), apps, a CLI runner.

``poolkit_server``, ``database_url`` and ``make_database`` come from the ``poolkit.testing.plugin``
pytest plugin (registered by the package's ``pytest11`` entry point).
"""

from __future__ import annotations

import importlib.util
import os
import typing as t
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask

from poolkit import Pool, Poolkit, load_config
from poolkit.commands.initdb import initdb_command
from poolkit.testing.plugin import admin_connect
from poolkit.url import parse_url

# The acceptance corpus (../shared/corpus, never copied into the repository):
# $POOLKIT_TEST_CORPUS (.ci/run sets it for a clone anywhere; then it must be there: tests fail
# rather than skip), else shared/corpus beside the repository or its worktree folder.
CORPUS_GIVEN = bool(os.environ.get("POOLKIT_TEST_CORPUS"))
CORPUS = Path(os.environ["POOLKIT_TEST_CORPUS"]) if CORPUS_GIVEN else next(
    (p / "shared" / "corpus" for p in Path(__file__).resolve().parents[2:4]
     if (p / "shared" / "corpus").is_dir()), Path("/nonexistent"))
needs_corpus = pytest.mark.skipif(not (CORPUS / "sakila").is_dir() and not CORPUS_GIVEN,
                                  reason=f"{CORPUS} is absent (a clone without the corpus)")

#: mysqlclient needs a C build (libmariadb-dev); a user's machine may lack it. CI sets
#: POOLKIT_TEST_REQUIRE_MYSQLCLIENT=1, so there a missing mysqlclient fails instead of skipping.
needs_mysqlclient = pytest.mark.skipif(
    importlib.util.find_spec("MySQLdb") is None
    and os.environ.get("POOLKIT_TEST_REQUIRE_MYSQLCLIENT") != "1",
    reason="mysqlclient is not installed: pip install 'poolkit[mysqlclient]' "
    "(needs libmariadb-dev)",
)


@pytest.fixture
def make_app(database_url: str) -> t.Iterator[t.Callable[..., Flask]]:
    """Build Flask apps with Poolkit on the session's database; pools closed afterwards."""
    made: list[Poolkit] = []

    def factory(extension: Poolkit | None = None, **config: t.Any) -> Flask:
        app = Flask("poolkit_test_app")
        app.config.update({"POOLKIT_DATABASE_URL": database_url, **config})
        extension = extension or Poolkit()
        extension.init_app(app)
        made.append(extension)
        return app

    yield factory
    for extension in made:
        extension.close()


@pytest.fixture
def app(make_app: t.Callable[..., Flask]) -> Flask:
    """An app with the default settings."""
    return make_app()


@pytest.fixture
def admin(database_url: str) -> t.Iterator[t.Any]:
    """A plain autocommit PyMySQL connection to the session's database, for checks."""
    con = admin_connect(parse_url(database_url))
    yield con
    con.close()


def scratch_table(admin: t.Any, name: str, columns: str) -> str:
    """Create table *name* (InnoDB) if needed and empty it; returns its name."""
    with admin.cursor() as cur:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns}) ENGINE=InnoDB")
        cur.execute(f"TRUNCATE {name}")
    return name


def query_rows(url: str | t.Any, sql: str) -> list[tuple[t.Any, ...]]:
    """All rows of *sql* on a fresh admin connection to *url* (a URL string or DatabaseURL)."""
    con = admin_connect(parse_url(url) if isinstance(url, str) else url)
    try:
        with con.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        con.close()


def server_count(admin: t.Any, sql: str, *args: t.Any) -> t.Any:
    """Run *sql* on the admin connection and return the first column of the first row."""
    with admin.cursor() as cur:
        cur.execute(sql, args or None)
        row = cur.fetchone()
    return row[0] if row else None


@pytest.fixture
def make_pool(database_url: str) -> t.Iterator[t.Callable[..., Pool]]:
    """Build a :class:`poolkit.Pool` on the session's database from POOLKIT_* keys; closed after."""
    made: list[Pool] = []

    def factory(**config: t.Any) -> Pool:
        config.setdefault("POOLKIT_DATABASE_URL", database_url)
        pool = Pool(load_config(config).pools["default"])
        made.append(pool)
        return pool

    yield factory
    for pool in made:
        pool.close()


class InitdbEnv:
    """A throwaway database, an sql/ folder and a poolkit app pointing at both (initdb tests)."""

    def __init__(self, url: str, folder: Path, name: str = "poolkit_initdb_test") -> None:
        self.url = url
        self.database = parse_url(url).database
        self.folder = folder
        self.app = Flask(name)
        self.app.config.update(POOLKIT_DATABASE_URL=url, POOLKIT_SQL_DIR=str(folder))
        self.extension = Poolkit(self.app)

    def write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path

    def run(self, *args: str, input: bytes | None = None) -> Result:
        """``flask initdb ARGS``; ``output`` has stdout and stderr, ``stdout`` only stdout."""
        return self.app.test_cli_runner().invoke(initdb_command, list(args), input=input)

    def rows(self, sql: str) -> list[tuple[t.Any, ...]]:
        return query_rows(self.url, sql)
