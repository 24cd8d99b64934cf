"""A failed statement that may carry a password leaves its location and digest in history,
never its text nor the server's message quoting it."""

from __future__ import annotations

import hashlib
import subprocess
import typing as t

import pymysql
import pytest

from poolkit.sqlimport.statement import Statement, carries_secret
from poolkit.url import parse_url

from .conftest import FLASK, Project
from .test_initdb_bounded import app_database, flask_env

__all__ = ["app_database"]

SECRET = "Sekr1tPw9"
# A syntax error before the literal: the server's message quotes it ("near 'BYY '…''").
FAILING = f"CREATE USER 'sec_initdb_u'@'localhost' IDENTIFIED BYY '{SECRET}';\n"


def _rows(url: str) -> list[tuple[t.Any, ...]]:
    parsed = parse_url(url)
    conn = pymysql.connect(host=parsed.host, port=parsed.port, user=parsed.user,
                           password=parsed.password or "", database=parsed.database)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT * FROM poolkit_sql_history")
            return list(cursor.fetchall())
    finally:
        conn.close()


def _run(project: Project, url: str) -> subprocess.CompletedProcess[str]:
    (project.root / "sql" / "002_users.sql").write_text("SELECT 1;\n" + FAILING)
    return subprocess.run([FLASK, "initdb", "-q"], cwd=project.root, env=flask_env(url),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.server
def test_history_keeps_location_and_digest_not_the_password(
        project: Project, app_database: str) -> None:
    result = _run(project, app_database)
    assert result.returncode == 1, result.stderr
    rows = _rows(app_database)
    failed = [row for row in rows if row[0] == "002_users.sql"]
    assert len(failed) == 1 and failed[0][5] == "failed", rows
    assert SECRET not in repr(rows)
    digest = hashlib.sha256(FAILING.rstrip().rstrip(";").encode()).hexdigest()
    assert failed[0][7] == 2  # failed_line
    assert failed[0][9] == ("CREATE USER … (text withheld: the statement may carry a "
                            f"password; sha256 {digest})")
    assert failed[0][10].startswith("002_users.sql:2: ERROR 1064 (42000): (message withheld")


@pytest.mark.server
def test_output_does_not_show_the_password(project: Project, app_database: str) -> None:
    result = _run(project, app_database)
    assert result.returncode == 1
    assert "002_users.sql:2: ERROR 1064" in result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(("sql", "secret"), [
    (b"CREATE USER 'u'@'%' IDENTIFIED BY 'pw'", True),
    (b"create or replace user u", True),
    (b"/*!50706 ALTER USER u IDENTIFIED BY 'pw' */", True),
    (b"SET PASSWORD FOR u = PASSWORD('pw')", True),
    (b"GRANT SELECT ON *.* TO u IDENTIFIED BY 'pw'", True),
    (b"SET STATEMENT max_statement_time=1 FOR ALTER USER u IDENTIFIED BY 'pw'", True),
    (b"CHANGE MASTER TO MASTER_PASSWORD='pw'", True),
    (b"GRANT SELECT ON t TO u", False),
    (b"INSERT INTO notes VALUES ('CREATE USER x IDENTIFIED BY password')", False),
    (b"SELECT 1 /* set password */ -- identified", False),
    (b"SELECT `identified` FROM `create user`", False),
])
def test_secret_statements_are_told_by_their_tokens(sql: bytes, secret: bool) -> None:
    assert carries_secret(sql) is secret
    excerpt = Statement(sql, 1, 0, len(sql)).excerpt()
    assert ("pw" in excerpt) is (not secret and b"pw" in sql)
