"""initdb's lock cannot be held by an account without rights on the app's database: its name
holds a token that only accounts with a privilege on the history table can read."""

from __future__ import annotations

import subprocess
import typing as t
import uuid

import pymysql
import pytest

from poolkit.sqlimport.history import lock_name, run_lock_name
from poolkit.url import parse_url

from .conftest import FLASK, Project
from .test_initdb_bounded import app_database, flask_env

__all__ = ["app_database"]

HOSTS = ("localhost", "%")  # both: a stock server's anonymous ''@localhost would shadow '%'


def _connect(url: str, **kwargs: t.Any) -> pymysql.Connection[t.Any]:
    parsed = parse_url(url)
    options: dict[str, t.Any] = {"host": parsed.host, "port": parsed.port,
                                 "user": parsed.user, "password": parsed.password or "",
                                 "autocommit": True}
    options.update(kwargs)
    return pymysql.connect(**options)


@pytest.fixture
def stranger(app_database: str) -> t.Iterator[tuple[str, str]]:
    """An account with no privileges at all: (user, password); dropped afterwards."""
    user, password = f"sec_lock_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    admin = _connect(app_database)
    try:
        with admin.cursor() as cursor:
            for host in HOSTS:
                cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, password))
        yield user, password
    finally:
        with admin.cursor() as cursor:
            for host in HOSTS:
                cursor.execute("DROP USER IF EXISTS %s@%s", (user, host))
        admin.close()


def _initdb(project: Project, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLASK, "initdb", "-q", "--lock-timeout", "1"], cwd=project.root,
                          env=flask_env(url), capture_output=True, text=True, timeout=120)


@pytest.mark.server
def test_an_account_without_rights_cannot_block_a_run(
        project: Project, app_database: str, stranger: tuple[str, str]) -> None:
    database = parse_url(app_database).database
    assert _initdb(project, app_database).returncode == 0  # the table and its token exist
    (project.root / "sql" / "002_more.sql").write_text("CREATE TABLE more_t (id INT);\n")
    user, password = stranger
    intruder = _connect(app_database, user=user, password=password)
    try:
        with intruder.cursor() as cursor:
            cursor.execute("SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE "
                           "TABLE_SCHEMA = %s", (database,))
            assert cursor.fetchall() == ()  # it cannot read the token
            cursor.execute("SELECT GET_LOCK(%s, 0)", (lock_name(database),))
            assert cursor.fetchone() == (1,)  # it holds the name it can guess ...
            result = _initdb(project, app_database)  # ... and the run goes on
    finally:
        intruder.close()
    assert result.returncode == 0, result.stderr
    admin = _connect(app_database, database=database)
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT file, status FROM poolkit_sql_history ORDER BY file")
            assert cursor.fetchall() == (("001_schema.sql", "applied"),
                                         ("002_more.sql", "applied"))
    finally:
        admin.close()


@pytest.mark.server
def test_an_account_with_rights_still_excludes_a_run(project: Project,
                                                    app_database: str) -> None:
    database = parse_url(app_database).database
    holder = _connect(app_database)
    try:
        name = run_lock_name(holder, database)
        assert name.startswith("poolkit_initdb.") and len(name) <= 64
        assert name != lock_name(database)
        with holder.cursor() as cursor:
            cursor.execute("SELECT GET_LOCK(%s, 0)", (name,))
        result = _initdb(project, app_database)
    finally:
        holder.close()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"Error: another initdb run holds the lock '{name}'")
    assert _initdb(project, app_database).returncode == 0  # released with the holder
