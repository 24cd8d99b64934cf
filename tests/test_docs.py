"""The docs, tested: their fenced code runs, their commands exist, their quoted messages are ours.

Every fenced block of README.md and docs/*.md is extracted. Python blocks must parse; the
examples a user copies (the README's app, the example command, the 503 handler, the testing
guide's conftest) run against the session's database; every ``flask …`` line names a command
whose ``--help`` lists each option it uses, and those that can run on this machine run; the
messages and exit codes the docs quote are compared with what the code prints.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import textwrap
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
from conftest import scratch_table, server_count
from flask import Flask

from poolkit.discovery import register_commands
from poolkit.testing import plugin
from poolkit.url import parse_url

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FLASK = str(Path(sys.executable).with_name("flask"))
_FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    return [Block(path, text[:m.start()].count("\n") + 1, m.group(2),
                  textwrap.dedent(m.group(3))) for m in _FENCE.finditer(text)]


ALL = [b for path in DOCS for b in blocks(path)]


def block_after(path: Path, marker: str, lang: str = "python") -> Block:
    """The first *lang* block after the line holding *marker*."""
    text = path.read_text(encoding="utf-8")
    line = text[:text.index(marker)].count("\n") + 1
    return next(b for b in blocks(path) if b.line > line and b.lang == lang)


def test_there_are_blocks_to_test() -> None:
    assert len([b for b in ALL if b.lang == "python"]) >= 8
    assert len(DOCS) >= 10


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "python"], ids=str)
def test_every_python_block_parses(block: Block) -> None:
    ast.parse(block.text, filename=str(block))


# -- commands ----------------------------------------------------------------------------------

def flask_lines() -> list[tuple[Block, list[str]]]:
    """Each ``flask …`` line of a fenced block, as argv after ``flask`` (``--app X`` dropped)."""
    found = []
    for block in ALL:
        for raw in block.text.splitlines():
            line = raw.strip().removeprefix("$ ")
            if not line.startswith("flask "):
                continue
            argv = shlex.split(line.split(" #")[0].split(" < ")[0])[1:]
            if argv[:1] == ["--app"]:
                argv = argv[2:]
            found.append((block, argv))
    return found


FLASK_LINES = flask_lines()


@pytest.fixture
def example_app(make_database: t.Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The repository's example app (examples/app.py) on a fresh database."""
    monkeypatch.syspath_prepend(str(REPO))
    from examples.app import Config, create_app

    class Fresh(Config):
        POOLKIT_DATABASE_URL = make_database()

    app = create_app(Fresh)
    register_commands(app)  # Poolkit.init_app does it once the lead wires it in
    return app


def test_the_docs_name_flask_commands() -> None:
    assert {argv[0] for _, argv in FLASK_LINES} >= {"initdb", "pool-stress", "pool-status",
                                                    "dbshell", "nightly-cleanup"}


@pytest.mark.parametrize(("block", "argv"), [x for x in FLASK_LINES
                                             if x[1][0] != "nightly-cleanup"],
                         ids=[f"{b}:{' '.join(a)}" for b, a in FLASK_LINES
                              if a[0] != "nightly-cleanup"])
def test_every_documented_option_exists(example_app: Flask, block: Block,
                                        argv: list[str]) -> None:
    command, *rest = argv
    ours = rest[:rest.index("--")] if "--" in rest else rest
    shown = example_app.test_cli_runner().invoke(args=[command, "--help"])
    assert shown.exit_code == 0, f"{block}: flask {command}: {shown.output}"
    for option in (o.split("=")[0] for o in ours if o.startswith("-")):
        assert re.search(rf"(^|[\s,/]){re.escape(option)}\b", shown.output, re.M), \
            f"{block}: 'flask {' '.join(argv)}' uses {option}, which flask {command} lacks"


def test_the_initdb_lines_run_as_documented(example_app: Flask) -> None:
    runner = example_app.test_cli_runner()
    created = runner.invoke(args=["initdb", "--create-database"])
    assert created.exit_code == 0, created.output
    status = runner.invoke(args=["initdb", "--status"])
    assert status.exit_code == 0
    assert "[X] applied  10_schema.sql" in status.output  # docs/initdb.md's legend
    sizing = runner.invoke(args=["pool-status", "--workers", "4"])
    assert sizing.exit_code == 0, sizing.output
    strict = runner.invoke(args=["pool-status", "--workers", "4", "--strict"])
    assert strict.exit_code == 0, strict.output  # 4 × 8 fit the server's max_connections


def test_the_dbshell_line_runs(example_app: Flask, tmp_path: Path) -> None:
    if not any(Path(d, c).exists() for d in os.get_exec_path() for c in ("mariadb", "mysql")):
        pytest.fail("the mariadb client is needed (apt install mariadb-client)")
    runner = example_app.test_cli_runner()
    assert runner.invoke(args=["initdb"]).exit_code == 0
    url = example_app.config["POOLKIT_DATABASE_URL"]
    done = subprocess.run([FLASK, "--app", "examples.app", "dbshell", "--", "-N", "-e",
                           "SELECT COUNT(*) FROM employee"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "POOLKIT_DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(server_count_of(url, "SELECT COUNT(*) FROM employee"))


def server_count_of(url: str, sql: str) -> t.Any:
    from conftest import query_rows

    return query_rows(url, sql)[0][0]


# -- the README's example app --------------------------------------------------------------------

def test_the_readme_example_app_runs(database_url: str, admin: t.Any, tmp_path: Path) -> None:
    code = block_after(REPO / "README.md", "## Use").text
    url = parse_url(database_url)
    code = code.replace("mysql://app:secret@127.0.0.1:3306/shop?charset=utf8mb4",
                        plugin.full_url(url) + "?charset=utf8mb4")
    assert plugin.full_url(url) in code, "the README's example no longer holds its URL"
    scratch_table(admin, "employee", "id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100)")
    (tmp_path / "readme_app.py").write_text(code)
    probe = textwrap.dedent("""
        from readme_app import app, pool
        client = app.test_client()
        assert client.post("/employees").status_code == 201
        assert client.post("/employees").status_code == 201
        print(client.get("/employees").get_json())
        pool.close()
    """)
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[{'id': 1, 'name': 'Ada'}, {'id': 2, 'name': 'Ada'}]"
    assert server_count(admin, "SELECT COUNT(*) FROM employee") == 2  # committed


# -- the example command ---------------------------------------------------------------------------

UTIL = """
    import datetime

    def cutoff(days):
        return datetime.datetime.now() - datetime.timedelta(days=days)
"""


def example_command(path: Path) -> str:
    """The block of *path* that is ``commands/nightly_cleanup.py``."""
    return next(b.text for b in blocks(path) if b.lang == "python"
                and b.text.startswith("# commands/nightly_cleanup.py"))


@pytest.fixture
def cleanup_project(tmp_path: Path) -> Path:
    """A project holding docs/commands.md's nightly_cleanup command, as the docs lay it out."""
    project = tmp_path / "project"
    (project / "commands").mkdir(parents=True)
    (project / "app.py").write_text("from flask import Flask\nfrom poolkit import Poolkit\n\n"
                                    "app = Flask(__name__)\nPoolkit(app)\n")
    (project / "commands" / "_util.py").write_text(textwrap.dedent(UTIL))
    (project / "commands" / "nightly_cleanup.py").write_text(example_command(
        REPO / "docs" / "commands.md"))
    return project


def flask_in(project: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "POOLKIT_"))}
    env["POOLKIT_DATABASE_URL"] = url
    return subprocess.run([FLASK, *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_example_command_deletes_what_it_reports(cleanup_project: Path, database_url: str,
                                                     admin: t.Any) -> None:
    scratch_table(admin, "session", "id INT PRIMARY KEY, created DATETIME")
    with admin.cursor() as cur:
        cur.execute("INSERT INTO session VALUES (1, NOW() - INTERVAL 40 DAY), (2, NOW())")
    done = flask_in(cleanup_project, database_url, "nightly-cleanup")
    assert (done.returncode, done.stdout) == (0, "1 sessions deleted\n"), done.stderr
    # Committed: another connection no longer sees the old session.
    assert server_count(admin, "SELECT GROUP_CONCAT(id) FROM session") == "2"
    again = flask_in(cleanup_project, database_url, "nightly-cleanup", "--days", "0")
    assert again.stdout == "1 sessions deleted\n"
    assert server_count(admin, "SELECT COUNT(*) FROM session") == 0


def test_the_readme_command_commits_too(tmp_path: Path, database_url: str, admin: t.Any,
                                        cleanup_project: Path) -> None:
    (cleanup_project / "commands" / "nightly_cleanup.py").write_text(
        example_command(REPO / "README.md"))
    scratch_table(admin, "session", "id INT PRIMARY KEY, created DATETIME")
    with admin.cursor() as cur:
        cur.execute("INSERT INTO session VALUES (1, NOW() - INTERVAL 40 DAY), (2, NOW())")
    done = flask_in(cleanup_project, database_url, "nightly-cleanup")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split()[0] == "1"
    assert server_count(admin, "SELECT COUNT(*) FROM session") == 1


def test_the_quoted_error_line_and_exit_codes(cleanup_project: Path, database_url: str,
                                              admin: t.Any) -> None:
    doc = (REPO / "docs" / "commands.md").read_text()
    quoted = re.search(r"^\$ flask nightly-cleanup\n(Error: .*)\n\$ echo \$\?\n(\d+)$", doc, re.M)
    assert quoted, "docs/commands.md no longer quotes the error of a missing table"
    with admin.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS session")
    done = flask_in(cleanup_project, database_url, "nightly-cleanup")
    database = parse_url(database_url).database
    assert done.stderr == quoted.group(1).replace("'shop.", f"'{database}.") + "\n"
    assert done.returncode == int(quoted.group(2)) == 1
    shown = flask_in(cleanup_project, database_url, "nightly-cleanup", "--traceback")
    assert "Traceback (most recent call last)" in shown.stderr and shown.returncode == 1
    # The exit-code table: a usage error is 2, with the message the table quotes.
    usage = re.search(r"^\| 2 \| .*\(`(Error: No such option '--dayz'[^`]*)`\)", doc, re.M)
    assert usage
    typo = flask_in(cleanup_project, database_url, "nightly-cleanup", "--dayz", "3")
    assert typo.returncode == 2 and usage.group(1) in typo.stderr


# -- deploy.md's 503 handler -------------------------------------------------------------------

def test_an_apps_503_handler_keeps_retry_after(make_app: t.Callable[..., Flask]) -> None:
    snippet = block_after(REPO / "docs" / "deploy.md", "## `PoolTimeout` → 503").text
    app = make_app(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.2)
    app.jinja_loader = None
    namespace: dict[str, t.Any] = {"app": app, "render_template": lambda name: "busy"}
    exec(compile(snippet, "deploy.md", "exec"), namespace)

    @app.get("/")
    def view() -> str:
        from poolkit import db

        return str(db.scalar("SELECT 1"))

    pool = app.extensions["poolkit"].pool()
    with pool.connection() as held:
        held.scalar("SELECT 1")
        response = app.test_client().get("/")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.data == b"busy"


# -- docs/testing.md ---------------------------------------------------------------------------

TESTING = REPO / "docs" / "testing.md"


def test_the_testing_guides_conftest_is_the_example_apps() -> None:
    shown = block_after(TESTING, "## A conftest to copy").text
    assert shown == (REPO / "examples" / "flaskr" / "tests" / "conftest.py").read_text()


def test_the_testing_guides_settings_are_the_plugins() -> None:
    text = TESTING.read_text()
    toml = block_after(TESTING, "The prefix is", "toml").text
    assert plugin.INI_PREFIX in tomllib.loads(toml)["tool"]["pytest"]["ini_options"]
    for name in (plugin.ENV_URL, plugin.ENV_REQUIRE, plugin.ENV_SERVER, plugin.ENV_PREFIX,
                 plugin.ENV_IMAGE, plugin.DEFAULT_IMAGE, plugin.DEFAULT_PREFIX):
        assert name in text, name
    flaskr = tomllib.loads((REPO / "examples" / "flaskr" / "pyproject.toml").read_text())
    assert flaskr["tool"]["pytest"]["ini_options"][plugin.INI_PREFIX] == "flaskr_test"
    # The skip reasons the table quotes are the plugin's.
    assert "no database server for the tests: POOLKIT_TEST_DATABASE_URL is not set and no " \
           "Docker engine answers" in " ".join(plugin._HOW.split())
    assert "`SKIPPED … the server of POOLKIT_TEST_DATABASE_URL (mysql://root:***@…) did not " \
           "accept the login: …`" in text
    assert "did not accept the login" in Path(plugin.__file__).read_text()


def test_the_testing_guides_accounts_work_on_a_stock_server() -> None:
    from poolkit.testing.servers import binaries_available
    from poolkit.testing.stock import StockServer

    if not binaries_available():
        pytest.fail("mariadbd is needed (apt install mariadb-server)")
    sql = block_after(TESTING, "(no password). Tests and docs that create", "sql").text
    server = StockServer()
    try:
        server.setup()
        statements = [s.split("--")[0].strip() for s in sql.splitlines()]
        server.execute("CREATE DATABASE shop",
                       *[s for s in " ".join(statements).split(";") if s.strip()])
        con = server.connect("app", "secret", "shop")
        with con.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone()[0] == "app@localhost"
        con.close()
    finally:
        server.destroy()


# -- make targets ----------------------------------------------------------------------------------

def test_every_make_target_the_docs_name_exists() -> None:
    targets = set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))
    texts = [p.read_text() for p in DOCS] + [(REPO / "pyproject.toml").read_text()]
    named = {m for text in texts for m in re.findall(r"(?:^|`|\$ )make ([a-z][\w-]*)", text, re.M)}
    assert named - targets == set()


def test_the_quoted_no_client_error_of_dbshell(example_app: Flask, tmp_path: Path) -> None:
    doc = " ".join((REPO / "docs" / "commands.md").read_text().split())
    quoted = re.search(r"No client on PATH: `(Error: [^`]+)`, exit (\d)", doc)
    assert quoted, "docs/commands.md no longer quotes dbshell's missing-client error"
    url = example_app.config["POOLKIT_DATABASE_URL"]
    env = {**os.environ, "POOLKIT_DATABASE_URL": url, "PATH": str(tmp_path)}  # no client here
    done = subprocess.run([FLASK, "--app", "examples.app", "dbshell"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, " ".join(done.stderr.split())) == (int(quoted.group(2)),
                                                                 quoted.group(1))
