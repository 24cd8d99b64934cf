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

from poolkit.testing.plugin import ENV_REQUIRE, ENV_URL, Databases, _full
from poolkit.url import parse_url

INNER = """
    from pathlib import Path

    def test_needs_a_database(database_url, make_database):
        other = make_database()
        assert other != database_url
        Path("databases.txt").write_text(database_url.rsplit("/", 1)[1] + "\\n"
                                         + other.rsplit("/", 1)[1])
"""


def run_session(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a tiny pytest session in a subprocess, with only the given poolkit variables."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
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
    assert f"no database server for the tests: set {ENV_URL}=" in result.stdout
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
