"""Acceptance on real files: sakila v1.5 through ``flask initdb``, then a mariadb-dump round trip.

The corpus is read from ``$POOLKIT_TEST_CORPUS``, else ``shared/corpus`` beside the repository
(or its worktree folder), and never copied into it. sakila's schema runs ``DROP SCHEMA IF
EXISTS sakila; CREATE SCHEMA sakila; USE sakila``: the test loads a copy (in a temp folder)
whose ``sakila`` schema name is a unique one, so runs never collide, and points the app at that
very database, so the load also drops and re-creates the database that holds the history
(which must survive it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import typing as t
import uuid
from pathlib import Path

import pytest
from conftest import CORPUS, needs_corpus, query_rows
from flask import Flask

from poolkit import Poolkit
from poolkit.commands.initdb import initdb_command
from poolkit.url import DatabaseURL, parse_url

SAKILA = CORPUS / "sakila"

pytestmark = needs_corpus




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


def _renamed(name: str, folder: Path, database: str) -> Path:
    """A temp copy of corpus file *name* whose schema ``sakila`` is called *database*."""
    data = (SAKILA / name).read_bytes()
    copy = folder / name
    copy.write_bytes(re.sub(rb"\bsakila(?=[.;])", database.encode(), data))
    return copy


@pytest.fixture
def sakila(app_on: t.Callable[[str], Flask], make_database: t.Callable[[], str],
           tmp_path: Path) -> t.Iterator[DatabaseURL]:
    """sakila loaded through ``flask initdb`` into its own uniquely named database (the app's)."""
    base, _, query = make_database().partition("?")
    server = parse_url(base)
    database = f"poolkit_sakila_{uuid.uuid4().hex[:8]}"
    url = server.with_database(database)
    app = app_on(base.rsplit("/", 1)[0] + "/" + database + (f"?{query}" if query else ""))
    files = [_renamed(name, tmp_path, database) for name in ("sakila-schema.sql",
                                                             "sakila-data.sql")]
    try:
        result = app.test_cli_runner().invoke(initdb_command, [
            "--create-database", *map(str, files)])
        assert result.exit_code == 0, result.output
        assert "2 files applied, 108 statements" in result.output
        # The schema dropped the app's database; the history came back with it.
        assert "was dropped by a file: re-created it" in result.output
        assert query_rows(url, "SELECT file, status FROM poolkit_sql_history ORDER BY file") == [
            ("sakila-data.sql", "applied"), ("sakila-schema.sql", "applied")]
        yield url
    finally:
        query_rows(server, f"DROP DATABASE IF EXISTS `{database}`")


def test_sakila_loads_like_the_client(sakila: DatabaseURL) -> None:
    one = lambda sql: query_rows(sakila, sql)[0]  # noqa: E731
    assert one("SELECT COUNT(*) FROM rental") == (16044,)
    assert one("SELECT COUNT(*) FROM film_text") == (1000,)  # the triggers came first
    assert one("SELECT COUNT(*) FROM information_schema.ROUTINES "
               "WHERE ROUTINE_SCHEMA = DATABASE()") == (6,)
    assert one("SELECT COUNT(*) FROM information_schema.TRIGGERS "
               "WHERE TRIGGER_SCHEMA = DATABASE()") == (6,)
    assert one("SELECT COUNT(*) FROM information_schema.VIEWS "
               "WHERE TABLE_SCHEMA = DATABASE()") == (7,)
    assert one("SELECT MD5(picture), LENGTH(picture) FROM staff WHERE staff_id = 1") == (
        "633ca8e521307444eb54a499fbe42832", 36365)


@pytest.mark.skipif(shutil.which("mariadb-dump") is None, reason="mariadb-dump is not installed")
def test_mariadb_dump_round_trip(sakila: DatabaseURL, app_on: t.Callable[[str], Flask],
                                 make_database: t.Callable[[], str], tmp_path: Path) -> None:
    dump = tmp_path / "sakila-dump.sql"
    command = ["mariadb-dump", f"--host={sakila.host}", f"--port={sakila.port}",
               f"--user={sakila.user}", "--routines", "--triggers", sakila.database]
    if sakila.password:
        command.insert(4, f"--password={sakila.password}")
    with open(dump, "wb") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.PIPE, check=True, timeout=120)
    head = dump.read_bytes()[:200]
    # MariaDB's sandbox line (/*M!999999\- … */ since 10.11.8, /*!999999\- … */ before)
    assert re.match(rb"/\*M?!999999\\- enable the sandbox mode \*/", head), head
    target = make_database()
    app = app_on(target)
    result = app.test_cli_runner().invoke(initdb_command, [str(dump)])
    assert result.exit_code == 0, result.output
    copy = parse_url(target)
    tables = [r[0] for r in query_rows(sakila, "SELECT TABLE_NAME FROM information_schema.TABLES "
                                          "WHERE TABLE_SCHEMA = DATABASE() AND "
                                          "TABLE_NAME <> 'poolkit_sql_history' AND "
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
    # the dump carries the original's history table too; the load is recorded beside it
    history = query_rows(copy, "SELECT statements FROM poolkit_sql_history "
                               "WHERE file = 'sakila-dump.sql' AND status = 'applied'")
    assert len(history) == 1 and history[0][0] > 50


@pytest.mark.skipif(shutil.which("mariadb") is None, reason="the mariadb client is not installed")
def test_sakila_matches_a_client_load(sakila: DatabaseURL, tmp_path: Path) -> None:
    # The same files through `mariadb < file`: every table's checksum and every routine,
    # trigger and view body must be equal (comments stripped as the client strips them).
    other = f"poolkit_sakila_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "client"
    folder.mkdir()
    try:
        for name in ("sakila-schema.sql", "sakila-data.sql"):
            with open(_renamed(name, folder, other), "rb") as stdin:
                command = ["mariadb", f"--host={sakila.host}", f"--port={sakila.port}",
                           f"--user={sakila.user}"]
                if sakila.password:
                    command.append(f"--password={sakila.password}")
                subprocess.run(command, stdin=stdin, check=True, capture_output=True, timeout=300)
        theirs = sakila.with_database(other)

        def objects(url: DatabaseURL) -> list[t.Any]:
            name = url.database
            found: list[t.Any] = []
            for sql in ("SELECT ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
                        "WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY 1",
                        "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS "
                        "WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1",
                        "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
                        "WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1"):
                found += [(a, str(b).replace(name, "<db>")) for a, b in query_rows(url, sql)]
            tables = [r[0] for r in query_rows(url, "SELECT TABLE_NAME FROM information_schema."
                                                    "TABLES WHERE TABLE_SCHEMA = DATABASE() AND "
                                                    "TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME "
                                                    "<> 'poolkit_sql_history' ORDER BY 1")]
            names = ", ".join(f"`{table}`" for table in tables)
            found += [(r[0].split(".", 1)[1], r[1])
                      for r in query_rows(url, f"CHECKSUM TABLE {names}")]
            return found

        ours = objects(sakila)
        assert len(ours) == 6 + 6 + 7 + 16
        assert ours == objects(theirs)
    finally:
        query_rows(sakila, f"DROP DATABASE IF EXISTS `{other}`")
