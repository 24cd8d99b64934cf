"""The pytest plugin: a real server or a skip that says how to get one (a failure on CI)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

import pytest
from conftest import server_count

from poolkit.testing.plugin import (
    ENV_PREFIX,
    ENV_REQUIRE,
    ENV_SERVER,
    ENV_URL,
    Databases,
    _full,
)
from poolkit.testing.servers import binaries_available
from poolkit.url import parse_url

INNER = """
    from pathlib import Path

    def test_needs_a_database(database_url, make_database):
        other = make_database()
        assert other != database_url
        Path("databases.txt").write_text(database_url.rsplit("/", 1)[1] + "\\n"
                                         + other.rsplit("/", 1)[1])
"""


def run_session(tmp_path: Path, ini: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """Run a tiny pytest session in a subprocess, with only the given poolkit variables."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
    (tmp_path / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("POOLKIT_", "DOCKER_", "PYTEST_"))}
    environ["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"  # no engine answers
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120, check=False)


def test_without_a_server_the_test_is_skipped_with_the_reason(tmp_path: Path) -> None:
    result = run_session(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert f"no database server for the tests: {ENV_URL} is not set and no Docker engine " \
        "answers" in " ".join(result.stdout.split())
    assert "docker compose up -d --wait" in result.stdout
    assert not (tmp_path / "databases.txt").exists()


def test_with_require_db_the_skip_is_a_failure(tmp_path: Path) -> None:
    result = run_session(tmp_path, **{ENV_REQUIRE: "1"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "skipped" not in result.stdout
    assert f"{ENV_REQUIRE}=1 but no database server for the tests" in result.stdout


def test_with_a_server_databases_are_created_and_dropped(tmp_path: Path, admin: t.Any,
                                                          poolkit_server: t.Any) -> None:
    result = run_session(tmp_path, **{ENV_URL: _full(poolkit_server), ENV_REQUIRE: "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    names = (tmp_path / "databases.txt").read_text().split()
    assert len(names) == 2
    assert all(n.startswith("poolkit_test_") for n in names)
    for name in names:  # dropped at the end of the inner session
        assert server_count(admin, "SELECT COUNT(*) FROM information_schema.SCHEMATA "
                                   "WHERE SCHEMA_NAME = %s", name) == 0


def test_databases_helper_creates_distinct_databases(poolkit_server: t.Any,
                                                     admin: t.Any) -> None:
    databases = Databases(poolkit_server)
    first, second = databases.create("poolkit_helper"), databases.create("poolkit_helper")
    try:
        assert first.database != second.database
        assert server_count(admin, "SELECT COUNT(*) FROM information_schema.SCHEMATA "
                                   "WHERE SCHEMA_NAME IN (%s, %s)",
                            first.database, second.database) == 2
    finally:
        databases.drop_all()
    assert server_count(admin, "SELECT COUNT(*) FROM information_schema.SCHEMATA "
                               "WHERE SCHEMA_NAME IN (%s, %s)",
                        first.database, second.database) == 0
    assert databases.created == []


def test_full_url_round_trips_special_characters() -> None:
    url = parse_url("mysql://us%40er:p%40ss%2Fw%23rd@db.local:3307/shop?charset=utf8mb4")
    again = parse_url(_full(url))
    assert (again.user, again.password, again.host, again.port, again.database) == (
        "us@er", "p@ss/w#rd", "db.local", 3307, "shop")
    assert again.options == {"charset": "utf8mb4"}


@pytest.mark.parametrize("fixture", ["poolkit_server", "database_url", "make_database"])
def test_plugin_fixtures_are_registered(request: pytest.FixtureRequest, fixture: str) -> None:
    assert request.getfixturevalue(fixture)


def test_a_given_server_that_does_not_answer_says_so(tmp_path: Path) -> None:
    url = "mysql://root:s3cret@127.0.0.1:1/test"  # nothing listens on port 1
    skipped = run_session(tmp_path, **{ENV_URL: url})
    assert "1 skipped" in skipped.stdout, skipped.stdout
    assert f"the server of {ENV_URL} (mysql://root:***@127.0.0.1:1/test) did not accept " \
        "the login" in " ".join(skipped.stdout.split())
    assert "docker compose" not in skipped.stdout and "s3cret" not in skipped.stdout
    failed = run_session(tmp_path, **{ENV_URL: url, ENV_REQUIRE: "1"})
    assert failed.returncode == 1 and "1 error" in failed.stdout


@pytest.mark.parametrize("how", ["env", "ini"])
def test_the_database_prefix_is_configurable(tmp_path: Path, poolkit_server: t.Any,
                                             how: str) -> None:
    env = {ENV_URL: _full(poolkit_server), ENV_REQUIRE: "1"}
    if how == "env":
        env[ENV_PREFIX] = "shop_env_test"
        result = run_session(tmp_path, ini="poolkit_database_prefix = ignored", **env)
        expected = "shop_env_test_"
    else:
        result = run_session(tmp_path, ini="poolkit_database_prefix = shop_ini_test", **env)
        expected = "shop_ini_test_"
    assert result.returncode == 0, result.stdout + result.stderr
    names = (tmp_path / "databases.txt").read_text().split()
    assert all(n.startswith(expected) and len(n) == len(expected) + 8 for n in names), names


@pytest.mark.skipif(not binaries_available(), reason="mariadbd is not installed")
def test_a_stock_server_keeps_its_anonymous_accounts(tmp_path: Path) -> None:
    (tmp_path / "test_stock.py").write_text(textwrap.dedent("""
        from poolkit.testing import admin_connect
        from poolkit.url import parse_url

        def test_stock(poolkit_server, database_url):
            con = admin_connect(poolkit_server)
            cur = con.cursor()
            cur.execute("SELECT user, host FROM mysql.user WHERE user = ''")
            assert ("", "localhost") in cur.fetchall()
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone()[0] == "poolkit_admin@localhost"
            con.close()
            assert parse_url(database_url).port == poolkit_server.port != 3306
    """))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("POOLKIT_", "PYTEST_"))}
    environ.update({ENV_SERVER: "stock", ENV_REQUIRE: "1"})
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "test_stock.py"], cwd=tmp_path, env=environ, capture_output=True,
                            text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_database_helpers_import_without_pytest() -> None:
    # Benchmarks and scripts use them where pytest is not installed.
    code = ("import sys\nsys.modules['pytest'] = None  # import pytest -> ImportError\n"
            "from poolkit.testing import Databases, admin_connect, full_url\n"
            "print(Databases.__module__, admin_connect.__module__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["poolkit.testing.databases"] * 2
