"""Acceptance on real files: sakila v1.5 through ``flask initdb``, then a mariadb-dump round trip.

The corpus is read from ``../shared/corpus`` beside the repository and never copied. sakila's
schema runs ``DROP SCHEMA IF EXISTS sakila; CREATE SCHEMA sakila; USE sakila``, so its tables
land in ``sakila`` (dropped afterwards) while the history goes to the app's own database.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import typing as t
from pathlib import Path

import pytest
from conftest import query_rows
from flask import Flask

from poolkit import Poolkit
from poolkit.url import DatabaseURL, parse_url

CORPUS = next((p / "shared" / "corpus" for p in Path(__file__).resolve().parents[2:4]
               if (p / "shared" / "corpus").is_dir()), Path("/nonexistent"))
SAKILA = CORPUS / "sakila"

pytestmark = pytest.mark.skipif(not SAKILA.is_dir(),
                                reason=f"{CORPUS} is absent (a clone without the corpus)")




@pytest.fixture
def app_on() -> t.Iterator[t.Callable[[str], Flask]]:
    """Apps with Poolkit on a given database URL (make_app always uses the session's)."""
    made: list[Poolkit] = []

    def factory(url: str) -> Flask:
        app = Flask("poolkit_initdb_test")
        app.config["POOLKIT_DATABASE_URL"] = url
        made.append(Poolkit(app))
        return app

    yield factory
    for extension in made:
        extension.close()


@pytest.fixture
def sakila(app_on: t.Callable[[str], Flask], make_database: t.Callable[[], str]
           ) -> t.Iterator[DatabaseURL]:
    """sakila loaded through ``flask initdb``; the ``sakila`` schema is dropped afterwards."""
    url = make_database()
    app = app_on(url)
    result = app.test_cli_runner().invoke(args=[
        "initdb", str(SAKILA / "sakila-schema.sql"), str(SAKILA / "sakila-data.sql")])
    assert result.exit_code == 0, result.output
    assert "2 files applied, 108 statements" in result.output
    server = parse_url(url)
    yield server.with_database("sakila")
    query_rows(server, "DROP DATABASE IF EXISTS sakila")


def test_sakila_loads_like_the_client(sakila: DatabaseURL) -> None:
    one = lambda sql: query_rows(sakila, sql)[0]  # noqa: E731
    assert one("SELECT COUNT(*) FROM rental") == (16044,)
    assert one("SELECT COUNT(*) FROM film_text") == (1000,)  # the triggers came first
    assert one("SELECT COUNT(*) FROM information_schema.ROUTINES "
               "WHERE ROUTINE_SCHEMA = 'sakila'") == (6,)
    assert one("SELECT COUNT(*) FROM information_schema.TRIGGERS "
               "WHERE TRIGGER_SCHEMA = 'sakila'") == (6,)
    assert one("SELECT COUNT(*) FROM information_schema.VIEWS "
               "WHERE TABLE_SCHEMA = 'sakila'") == (7,)
    assert one("SELECT MD5(picture), LENGTH(picture) FROM staff WHERE staff_id = 1") == (
        "633ca8e521307444eb54a499fbe42832", 36365)


@pytest.mark.skipif(shutil.which("mariadb-dump") is None, reason="mariadb-dump is not installed")
def test_mariadb_dump_round_trip(sakila: DatabaseURL, app_on: t.Callable[[str], Flask],
                                 make_database: t.Callable[[], str], tmp_path: Path) -> None:
    dump = tmp_path / "sakila-dump.sql"
    command = ["mariadb-dump", f"--host={sakila.host}", f"--port={sakila.port}",
               f"--user={sakila.user}", "--routines", "--triggers", "sakila"]
    if sakila.password:
        command.insert(4, f"--password={sakila.password}")
    with open(dump, "wb") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.PIPE, check=True, timeout=120)
    head = dump.read_bytes()[:200]
    # MariaDB's sandbox line (/*M!999999\- … */ since 10.11.8, /*!999999\- … */ before)
    assert re.match(rb"/\*M?!999999\\- enable the sandbox mode \*/", head), head
    target = make_database()
    app = app_on(target)
    result = app.test_cli_runner().invoke(args=["initdb", str(dump)])
    assert result.exit_code == 0, result.output
    copy = parse_url(target)
    tables = [r[0] for r in query_rows(sakila, "SELECT TABLE_NAME FROM information_schema.TABLES "
                                          "WHERE TABLE_SCHEMA = 'sakila' AND "
                                          "TABLE_TYPE = 'BASE TABLE' ORDER BY 1")]
    assert len(tables) == 16
    names = ", ".join(f"`{name}`" for name in tables)
    original = [r[1] for r in query_rows(sakila, f"CHECKSUM TABLE {names}")]
    copied = [r[1] for r in query_rows(copy, f"CHECKSUM TABLE {names}")]
    assert copied == original
    assert None not in copied
    for kind, column in (("ROUTINES", "ROUTINE_SCHEMA"), ("TRIGGERS", "TRIGGER_SCHEMA")):
        sql = f"SELECT COUNT(*) FROM information_schema.{kind} WHERE {column} = DATABASE()"
        assert query_rows(copy, sql) == [(6,)]
    history = query_rows(copy, "SELECT file, statements FROM poolkit_sql_history")
    assert history[0][0] == "sakila-dump.sql" and history[0][1] > 50
