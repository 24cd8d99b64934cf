"""``poolkit.executescript``: a SQL script read as the ``mariadb`` client reads it, both drivers."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import typing as t
from pathlib import Path

import pytest
from conftest import needs_mysqlclient, query_rows
from flask import Flask

import poolkit
from poolkit import db, executefile, executescript
from poolkit.script import ScriptError
from poolkit.testing.plugin import admin_connect
from poolkit.url import parse_url

DRIVERS = ["pymysql", pytest.param("mysqldb", marks=needs_mysqlclient)]

SCHEMA = """\
-- a schema the way dumps and tutorials write it; this comment has a ; in it
DROP TABLE IF EXISTS script_post;
CREATE TABLE script_post (
  id INT AUTO_INCREMENT PRIMARY KEY,
  title VARCHAR(100) NOT NULL, # a column comment; with a semicolon
  body TEXT NOT NULL,
  words INT NOT NULL DEFAULT 0
);
/* a block comment;
   over lines */
DELIMITER //
CREATE TRIGGER script_post_words BEFORE INSERT ON script_post FOR EACH ROW
BEGIN
  SET NEW.words = 1 + LENGTH(NEW.body) - LENGTH(REPLACE(NEW.body, ' ', ''));
END//
DELIMITER ;
INSERT INTO script_post (title, body) VALUES ('semi; colon', 'it''s one; two "three"');
INSERT INTO script_post (title, body) VALUES ("dq", 'back\\\\slash\\';');
"""


@pytest.fixture(params=DRIVERS)
def driver_app(request: pytest.FixtureRequest, make_app: t.Callable[..., Flask],
               database_url: str) -> Flask:
    return make_app(POOLKIT_DATABASE_URL=f"mysql+{request.param}"
                    + database_url[database_url.index("://"):])


def posts(url: t.Any) -> list[tuple[t.Any, ...]]:
    return query_rows(url, "SELECT title, body, words FROM script_post ORDER BY id")


def test_a_script_with_delimiters_comments_and_strings(driver_app: Flask,
                                                       database_url: str) -> None:
    with driver_app.app_context():
        assert executescript(db, SCHEMA, name="schema.sql") == 5
    # Committed: another connection sees the rows, with the trigger having run.
    assert posts(database_url) == [("semi; colon", "it's one; two \"three\"", 4),
                                   ("dq", "back\\slash';", 1)]


def test_it_reads_exactly_what_the_mariadb_client_reads(tmp_path: Path, database_url: str,
                                                        make_database: t.Callable[[], str],
                                                        app: Flask) -> None:
    with app.app_context():
        executescript(db, SCHEMA)
    other = parse_url(make_database())
    script = tmp_path / "schema.sql"
    script.write_text(SCHEMA)
    with script.open("rb") as stdin:
        subprocess.run(["mariadb", "-h", other.host, "-P", str(other.port), "-u", other.user,
                        other.database], stdin=stdin, check=True, timeout=60,
                       env={**os.environ, "MYSQL_PWD": other.password})
    assert posts(database_url) == posts(other)


def test_an_error_names_the_script_and_line_and_rolls_back(driver_app: Flask,
                                                          database_url: str) -> None:
    script = ("CREATE TABLE IF NOT EXISTS script_t (id INT PRIMARY KEY);\n"
              "DELETE FROM script_t;\n"
              "INSERT INTO script_t VALUES (1);\n"
              "\n"
              "INSERT INTO script_t\n"
              "  VALUES (1);\n"
              "INSERT INTO script_t VALUES (3);\n")
    with driver_app.app_context(), pytest.raises(ScriptError) as caught:
        executescript(db, script, name="sql/data.sql")
    error = caught.value
    # mysqlclient's errors carry no SQLSTATE
    assert re.fullmatch(r"sql/data.sql:5: ERROR 1062( \(23000\))?: Duplicate entry '1' for "
                        r"key 'PRIMARY'", str(error)), str(error)
    assert isinstance(error, poolkit.SqlFileError)
    assert isinstance(error.__cause__, poolkit.IntegrityError)
    assert error.failure.line == 5 and error.failure.code == 1062
    assert query_rows(database_url, "SELECT id FROM script_t") == []  # row 1 rolled back


def test_a_syntax_error_maps_the_servers_line_to_the_scripts(app: Flask) -> None:
    script = "SELECT 1;\n\nSELECT\n  1,\n  FROM;\n"
    with app.app_context(), pytest.raises(ScriptError) as caught:
        executescript(db, script)
    assert str(caught.value).startswith("<script>:5: ERROR 1064 (42000): You have an error")


def test_inside_a_transaction_the_caller_decides(app: Flask, database_url: str) -> None:
    with app.app_context():
        executescript(db, "CREATE TABLE IF NOT EXISTS script_tx (id INT); DELETE FROM script_tx;")
        with pytest.raises(RuntimeError), db.transaction():
            assert executescript(db, "INSERT INTO script_tx VALUES (1);"
                                     "INSERT INTO script_tx VALUES (2);") == 2
            assert db.scalar("SELECT COUNT(*) FROM script_tx") == 2
            raise RuntimeError("undo it")
        assert executescript(db, "INSERT INTO script_tx VALUES (3);", commit=False) == 1
        db.rollback()
    assert query_rows(database_url, "SELECT id FROM script_tx") == []


def test_executefile_streams_a_compressed_file_and_its_sources(
        tmp_path: Path, app: Flask, database_url: str) -> None:
    (tmp_path / "more.sql").write_text("INSERT INTO script_f VALUES (2);\n")
    with gzip.open(tmp_path / "main.sql.gz", "wt") as out:
        out.write("CREATE TABLE IF NOT EXISTS script_f (id INT);\nDELETE FROM script_f;\n"
                  "INSERT INTO script_f VALUES (1);\nsource more.sql\nSELEC 3;\n")
    with app.app_context(), pytest.raises(ScriptError) as caught:
        executefile(db, tmp_path / "main.sql.gz")
    assert str(caught.value).startswith(f"{tmp_path / 'main.sql.gz'}:5: ERROR 1064")
    (tmp_path / "ok.sql").write_text("DELETE FROM script_f;\nsource more.sql\n")
    with app.app_context():
        assert executefile(db, tmp_path / "ok.sql") == 2
    assert query_rows(database_url, "SELECT id FROM script_f") == [(2,)]


def test_on_a_plain_driver_connection(database_url: str) -> None:
    con = admin_connect(parse_url(database_url), autocommit=False)
    try:
        assert executescript(con, "CREATE TABLE IF NOT EXISTS script_raw (id INT);"
                                  "DELETE FROM script_raw; INSERT INTO script_raw VALUES (7);") == 3
    finally:
        con.close()
    assert query_rows(database_url, "SELECT id FROM script_raw") == [(7,)]
