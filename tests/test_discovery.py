"""An app's ``commands/*.py`` become ``flask`` commands, in a real project run as a user runs it.

The projects are written into temp dirs and driven through the venv's ``flask`` and
``python -m flask`` as subprocesses, against the session's database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

import click
import pytest
from flask import Flask

from poolkit import Poolkit
from poolkit.commands._cli import BuiltinCommand
from poolkit.discovery import (
    LazyCommand,
    default_folders,
    is_install_location,
    register_commands,
)

REPO = Path(__file__).resolve().parents[1]
FLASK = str(Path(sys.executable).with_name("flask"))

APP = """
    from flask import Flask
    from poolkit import Poolkit
    from commands._util import LABEL  # the app itself imports the commands package first

    app = Flask(__name__)
    app.config["LABEL"] = LABEL
    Poolkit(app)
"""

UTIL = """
    LABEL = "answer"

    def answer_sql():
        return "SELECT 6 * 7"
"""

# Imports its helper relatively; one command per file, named after the file.
REPORT = """
    import click
    from poolkit import db
    from ._util import answer_sql

    @click.command()
    @click.option("--times", type=int, default=1, help="How often to ask.")
    def report(times):
        \"\"\"Print a number the server computed.\"\"\"
        for _ in range(times):
            click.echo(f"answer={db.scalar(answer_sql())}")
"""

# Imports the same helper by the package's name; a file name with an underscore.
NIGHTLY = """
    import click
    from poolkit import db
    from commands._util import LABEL, answer_sql

    @click.command()
    def main():
        \"\"\"Run the nightly job.\"\"\"
        click.echo(f"{LABEL}={db.scalar(answer_sql())} in {db.scalar('SELECT DATABASE()')}")
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return folder


def run(cwd: Path, url: str, *args: str, module: bool = False,
        **env: str) -> subprocess.CompletedProcess[str]:
    """``flask ARGS`` (or ``python -m flask ARGS``) in *cwd*, as a user types it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "POOLKIT_"))}
    environ.update(POOLKIT_DATABASE_URL=url, **env)
    command = [sys.executable, "-m", "flask"] if module else [FLASK]
    return subprocess.run([*command, *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=120)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def project_files() -> dict[str, str]:
    return {"commands/__init__.py": '"""The project\'s commands."""\n',
            "commands/_util.py": UTIL, "commands/report.py": REPORT,
            "commands/nightly_cleanup.py": NIGHTLY}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """``app.py`` and a ``commands/`` package with a helper module, in a fresh folder."""
    return write(tmp_path / "proj", {"app.py": APP, **project_files()})


@pytest.mark.parametrize("module", [False, True], ids=["flask", "python -m flask"])
def test_commands_of_a_project_import_their_helpers_both_ways(
        project: Path, database_url: str, module: bool) -> None:
    database = database_url.rsplit("/", 1)[1]
    assert ok(run(project, database_url, "report", "--times", "2",
                  module=module)) == "answer=42\nanswer=42\n"
    assert ok(run(project, database_url, "nightly-cleanup",
                  module=module)) == f"answer=42 in {database}\n"
    listing = ok(run(project, database_url, "--help", module=module))
    assert "nightly-cleanup  Run the nightly job." in listing
    assert "report           Print a number the server computed." in listing
    names = [line.split()[0] for line in listing.split("Commands:")[1].splitlines() if line]
    assert "report" in names and not [n for n in names if "util" in n]
    # Flask's own commands still load the app, which imports commands._util itself.
    assert "report" not in ok(run(project, database_url, "routes", module=module))
    assert "initdb" in listing and "dbshell" in listing  # the built-ins are still there
    status = ok(run(project, database_url, "pool-status", "--json", module=module))
    assert '"max_connections": 10' in status


def test_a_plain_folder_works_like_a_package(tmp_path: Path, database_url: str) -> None:
    files = project_files()
    del files["commands/__init__.py"]
    project = write(tmp_path / "plain", {"app.py": APP, **files})
    assert ok(run(project, database_url, "report")) == "answer=42\n"
    assert ok(run(project, database_url, "nightly-cleanup")).startswith("answer=42 in ")


def test_app_inside_a_package_finds_commands_beside_its_module(
        tmp_path: Path, database_url: str) -> None:
    app = APP.replace("from commands._util import LABEL", "LABEL = 'x'")
    project = write(tmp_path / "proj", {
        "shop/__init__.py": "", "shop/app.py": app,
        **{f"shop/{name}": source for name, source in project_files().items()}})
    assert ok(run(project, database_url, "--app", "shop.app", "report")) == "answer=42\n"
    assert ok(run(project, database_url, "--app", "shop.app",
                  "nightly-cleanup", module=True)).startswith("answer=42 in ")


def test_app_inside_a_package_falls_back_to_the_project_root(
        tmp_path: Path, database_url: str) -> None:
    app = APP.replace("from commands._util import LABEL", "LABEL = 'x'")
    project = write(tmp_path / "proj", {"shop/__init__.py": "", "shop/app.py": app,
                                        **project_files()})
    assert ok(run(project, database_url, "--app", "shop.app", "report")) == "answer=42\n"
    assert ok(run(project, database_url, "--app", "shop.app",
                  "nightly-cleanup")).startswith("answer=42 in ")


def test_an_app_command_overrides_a_built_in_and_its_help_says_where(
        project: Path, database_url: str) -> None:
    write(project, {"commands/initdb.py": """
        import click
        from ._util import LABEL

        @click.command()
        @click.option("--seed", is_flag=True, help="Also load the demo rows.")
        def initdb(seed):
            \"\"\"Set up this project's database its own way.\"\"\"
            click.echo(f"project initdb seed={seed} {LABEL}")
    """})
    assert ok(run(project, database_url, "initdb", "--seed")) == "project initdb seed=True answer\n"
    assert ok(run(project, database_url, "initdb", module=True)) == \
        "project initdb seed=False answer\n"
    shown = ok(run(project, database_url, "initdb", "--help"))
    assert "Set up this project's database its own way." in shown
    assert "--seed" in shown and "--sql-dir" not in shown
    assert "Defined in commands/initdb.py (it overrides poolkit's built-in 'flask initdb')." \
        in " ".join(shown.split())
    listing = ok(run(project, database_url, "--help"))
    assert "initdb           Set up this project's database its own way." in listing
    # Only the overridden one: the other built-ins are poolkit's.
    assert "--workers" in ok(run(project, database_url, "pool-status", "--help"))


def test_every_app_command_names_its_file_in_help(project: Path, database_url: str) -> None:
    shown = " ".join(ok(run(project, database_url, "report", "--help")).split())
    assert "Defined in commands/report.py." in shown
    assert "overrides" not in shown


def test_commands_dirs_lists_folders_and_the_first_wins(tmp_path: Path,
                                                        database_url: str) -> None:
    app = """
        from flask import Flask
        from poolkit import Poolkit

        app = Flask(__name__)
        app.config["POOLKIT_COMMANDS_DIRS"] = ["ops/tasks", "shared"]
        Poolkit(app)
    """
    hello = """
        import click
        from {imp} import WHO

        @click.command()
        def hello():
            \"\"\"Greet.\"\"\"
            click.echo(f"hello from {{WHO}}")
    """
    project = write(tmp_path / "proj", {
        "app.py": app,
        "ops/tasks/_who.py": "WHO = 'ops'\n",  # a plain folder, imported as package 'tasks'
        "ops/tasks/hello.py": hello.format(imp="tasks._who"),
        "ops/tasks/relative.py": hello.format(imp="._who").replace("def hello", "def rel"),
        "shared/_who.py": "WHO = 'shared'\n",
        "shared/hello.py": hello.format(imp="._who"),
        "shared/only_shared.py": hello.format(imp="shared._who"),
        "commands/report.py": REPORT,  # not listed, so not loaded
    })
    assert ok(run(project, database_url, "hello")) == "hello from ops\n"
    assert ok(run(project, database_url, "relative")) == "hello from ops\n"
    assert ok(run(project, database_url, "only-shared")) == "hello from shared\n"
    missing = run(project, database_url, "report")
    assert missing.returncode == 2 and "No such command 'report'" in missing.stderr


def test_empty_commands_dirs_turns_discovery_off(tmp_path: Path) -> None:
    write(tmp_path / "commands", {"report.py": REPORT})
    app = Flask("off", root_path=str(tmp_path))
    app.config.update(POOLKIT_DATABASE_URL="mysql://u@127.0.0.1/x", POOLKIT_COMMANDS_DIRS=[])
    extension = Poolkit(app)
    try:
        assert "report" not in app.cli.commands
    finally:
        extension.close()


def test_commands_dirs_must_be_a_list_of_folders(make_app: t.Callable[..., Flask]) -> None:
    from poolkit import ConfigError

    with pytest.raises(ConfigError, match="POOLKIT_COMMANDS_DIRS must be a list of folders"):
        make_app(POOLKIT_COMMANDS_DIRS=[1, 2])
    with pytest.raises(ConfigError, match="did you mean POOLKIT_COMMANDS_DIRS"):
        make_app(POOLKIT_COMMANDS_DIR="commands")


def test_a_broken_module_is_reported_by_file_and_the_others_still_work(
        project: Path, database_url: str) -> None:
    write(project, {"commands/broken.py": "import click\ndef broken(:\n",
                    "commands/explodes.py": "from ._util import nothing_here\n",
                    "commands/empty.py": "X = 1\n"})
    assert ok(run(project, database_url, "report")) == "answer=42\n"
    listing = ok(run(project, database_url, "--help"))
    assert "(broken: SyntaxError in broken.py)" in listing
    assert "(broken: ImportError in explodes.py)" in listing
    assert "(broken: no command in empty.py)" in listing
    write(project, {"commands/pair.py": "import click\n@click.command()\ndef a(): pass\n"
                    "@click.command()\ndef b(): pass\n"})
    assert "(broken: several commands in pair.py)" in ok(run(project, database_url, "--help"))
    broken = run(project, database_url, "broken", "--any", "args")
    assert broken.returncode == 1
    assert broken.stderr.splitlines()[-1].startswith(
        "Error: commands/broken.py: SyntaxError: ")
    assert 'File "' in broken.stderr and "importlib" not in broken.stderr  # the user's frames
    explodes = run(project, database_url, "explodes")
    assert explodes.returncode == 1
    assert "Error: commands/explodes.py: ImportError: cannot import name 'nothing_here'" \
        in explodes.stderr
    empty = run(project, database_url, "empty")
    assert empty.returncode == 1
    assert empty.stderr.strip() == ("Error: commands/empty.py: defines no click command "
                                    "(helper modules start with '_')")


def test_several_commands_in_one_file(make_app: t.Callable[..., Flask], tmp_path: Path) -> None:
    folder = write(tmp_path / "cmds", {
        "tools.py": """
            import click
            from flask.cli import run_command  # imported, not defined here

            @click.group()
            def tools():
                \"\"\"Project tools.\"\"\"

            @tools.command()
            def one():
                click.echo("one")
        """,
        "pair.py": """
            import click

            @click.command()
            def first(): pass

            @click.command()
            def second(): pass
        """})
    app = make_app(POOLKIT_COMMANDS_DIRS=[str(folder)])
    runner = app.test_cli_runner()
    assert runner.invoke(args=["tools", "one"]).output == "one\n"  # a group is one command
    pair = runner.invoke(args=["pair"])
    assert pair.exit_code == 1
    assert "defines several commands (first, second): keep one per file" in pair.output


def test_nothing_is_imported_until_a_command_is_used(make_app: t.Callable[..., Flask],
                                                     tmp_path: Path) -> None:
    folder = write(tmp_path / "lazy", {"boom.py": "raise RuntimeError('imported too early')\n"})
    app = make_app(POOLKIT_COMMANDS_DIRS=[str(folder)])  # does not raise, logs nothing
    command = app.cli.commands["boom"]
    assert isinstance(command, LazyCommand) and "command" not in vars(command)
    result = app.test_cli_runner().invoke(args=["boom"])
    assert result.exit_code == 1 and "RuntimeError: imported too early" in result.output


def test_commands_run_in_the_app_context(make_app: t.Callable[..., Flask],
                                         tmp_path: Path) -> None:
    report = REPORT.replace("from ._util import answer_sql", "answer_sql = 'SELECT 42'.strip")
    folder = write(tmp_path / "ctx", {"report.py": report})
    app = make_app(POOLKIT_COMMANDS_DIRS=[str(folder)])
    result = app.test_cli_runner().invoke(args=["report"])  # no app context pushed by the test
    assert result.exit_code == 0, result.output
    assert result.output == "answer=42\n"


def test_an_explicit_app_cli_command_is_kept(tmp_path: Path) -> None:
    folder = write(tmp_path / "keep", {"report.py": REPORT})
    app = Flask("keep")
    app.config.update(POOLKIT_COMMANDS_DIRS=[str(folder)])

    @app.cli.command("report")
    def mine() -> None:
        click.echo("mine")

    app.config["POOLKIT_DATABASE_URL"] = "mysql://u@127.0.0.1/x"
    extension = Poolkit(app)
    try:
        assert app.test_cli_runner().invoke(args=["report"]).output == "mine\n"
    finally:
        extension.close()


def test_poolkits_own_commands_folder_is_never_a_user_folder(tmp_path: Path) -> None:
    # The repository's tests build apps whose root_path is the checkout: its commands/ are
    # poolkit's built-ins, not the app's.
    app = Flask("in_repo", root_path=str(REPO))
    assert default_folders(app) == []
    app.config.update(POOLKIT_DATABASE_URL="mysql://u@127.0.0.1/x",
                      POOLKIT_COMMANDS_DIRS=[str(REPO / "commands")])
    extension = Poolkit(app)
    try:
        register_commands(app, [str(REPO / "commands")])
        for name in ("initdb", "pool-stress", "pool-status", "dbshell"):
            assert isinstance(app.cli.commands[name], BuiltinCommand)  # not a folder's file
    finally:
        extension.close()
    # A copy of the checkout beside an installed poolkit is recognised too.
    copy = tmp_path / "checkout" / "commands"
    copy.mkdir(parents=True)
    copy.joinpath("__init__.py").write_bytes((REPO / "commands" / "__init__.py").read_bytes())
    assert default_folders(Flask("copy", root_path=str(copy.parent))) == []


def test_a_command_named_like_flasks_own_is_warned_about(
        make_app: t.Callable[..., Flask], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    folder = write(tmp_path / "own", {"routes.py": REPORT})
    with caplog.at_level("WARNING", logger="poolkit"):
        make_app(POOLKIT_COMMANDS_DIRS=[str(folder)])
    assert "'flask routes' runs flask's command, not" in caplog.text
    assert "routes.py (Flask resolves it first): rename the file" in caplog.text


def test_a_folder_never_shadows_another_module(make_app: t.Callable[..., Flask], tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    folder = write(tmp_path / "json", {"_h.py": "X = 'helper'\n", "tool.py": """
        import click
        from ._h import X

        @click.command()
        def tool():
            click.echo(X)
    """})
    with caplog.at_level("WARNING", logger="poolkit"):
        app = make_app(POOLKIT_COMMANDS_DIRS=[str(folder)])
    assert "is taken by" not in caplog.text  # relative imports work: nothing to say
    assert app.test_cli_runner().invoke(args=["tool"]).output == "helper\n"
    import json

    assert json.dumps([1]) == "[1]" and str(folder) not in str(json.__path__)
    (folder / "other.py").write_text("import click\nfrom json._h import X\n")
    caplog.clear()
    with caplog.at_level("WARNING", logger="poolkit"):
        make_app(POOLKIT_COMMANDS_DIRS=[str(folder)])
    assert "the name 'json' is taken by" in caplog.text


def test_an_installed_app_never_loads_site_packages_commands(tmp_path: Path,
                                                            database_url: str) -> None:
    # An app installed beside another distribution's top-level 'commands' package.
    site = write(tmp_path / "venv" / "lib" / "site-packages", {
        "shop/__init__.py": "", "shop/app.py": APP.replace(
            "from commands._util import LABEL", "LABEL = 'x'"),
        "shop-1.0.dist-info/METADATA": "Name: shop\n",
        "commands/__init__.py": "",
        "commands/evil.py": "open(__file__ + '.ran', 'w').close()\n"})
    elsewhere = write(tmp_path / "cwd", {"commands/evil2.py": "raise SystemExit('ran')\n"})
    assert is_install_location(site) and not is_install_location(elsewhere)
    done = run(elsewhere, database_url, "--app", "shop.app", "--help", PYTHONPATH=str(site))
    listing = ok(done)
    assert "evil" not in listing and "initdb" in listing
    assert not (site / "commands" / "evil.py.ran").exists()


ERRORS = """
    import click
    from poolkit import db

    @click.command()
    @click.option("--table", default="no_such_table")
    def cleanup(table):
        \"\"\"Delete old sessions.\"\"\"
        click.echo(f"{db.execute(f'DELETE FROM {table} WHERE 1 = 0')} deleted")
"""

WRITES = """
    import click
    from poolkit import db

    @click.command()
    @click.option("--fail", is_flag=True)
    @click.option("--exit", "code", type=int)
    @click.option("--interrupt", is_flag=True)
    def writes(fail, code, interrupt):
        \"\"\"Insert a row.\"\"\"
        db.execute("INSERT INTO cmd_writes (note) VALUES ('x')")
        if interrupt:
            raise KeyboardInterrupt
        if code is not None:
            click.get_current_context().exit(code)
        if fail:
            db.execute("SELECT * FROM no_such_table")
        click.echo("1 row inserted")
"""


def test_a_database_error_in_an_app_command_is_one_line_and_traceback_shows_the_stack(
        make_app: t.Callable[..., Flask], tmp_path: Path) -> None:
    folder = write(tmp_path / "errs", {"cleanup.py": ERRORS})
    app = make_app(POOLKIT_COMMANDS_DIRS=[str(folder)])
    runner = app.test_cli_runner()
    result = runner.invoke(args=["cleanup"])
    database = app.config["POOLKIT_DATABASE_URL"].rsplit("/", 1)[1]
    assert result.exit_code == 1
    assert result.output == (f"Error: {folder / 'cleanup.py'}: 1146 Table "
                             f"'{database}.no_such_table' doesn't exist\n")
    shown = runner.invoke(args=["cleanup", "--traceback"])
    assert shown.exit_code == 1
    assert "Traceback (most recent call last)" in shown.output
    assert 'cleanup.py", line 9, in cleanup' in shown.output
    assert shown.output.endswith(f"Error: {folder / 'cleanup.py'}: 1146 Table "
                                 f"'{database}.no_such_table' doesn't exist\n")
    assert "--traceback" in runner.invoke(args=["cleanup", "--help"]).output


def test_an_app_command_commits_on_success_and_rolls_back_on_failure(
        make_app: t.Callable[..., Flask], tmp_path: Path, admin: t.Any) -> None:
    from conftest import scratch_table, server_count

    scratch_table(admin, "cmd_writes", "id INT AUTO_INCREMENT PRIMARY KEY, note TEXT")
    folder = write(tmp_path / "writes", {"writes.py": WRITES})
    app = make_app(POOLKIT_COMMANDS_DIRS=[str(folder)])
    runner = app.test_cli_runner()
    assert runner.invoke(args=["writes"]).output == "1 row inserted\n"
    assert server_count(admin, "SELECT COUNT(*) FROM cmd_writes") == 1
    failed = runner.invoke(args=["writes", "--fail"])
    assert failed.exit_code == 1 and "1146" in failed.output
    assert server_count(admin, "SELECT COUNT(*) FROM cmd_writes") == 1  # rolled back
    assert runner.invoke(args=["writes", "--exit", "0"]).exit_code == 0
    assert server_count(admin, "SELECT COUNT(*) FROM cmd_writes") == 2  # exit 0 commits
    assert runner.invoke(args=["writes", "--exit", "3"]).exit_code == 3
    assert server_count(admin, "SELECT COUNT(*) FROM cmd_writes") == 2  # exit 3 does not
    interrupted = runner.invoke(args=["writes", "--interrupt"])
    assert (interrupted.exit_code, interrupted.output) == (130, "Aborted!\n")
    assert server_count(admin, "SELECT COUNT(*) FROM cmd_writes") == 2  # Ctrl-C rolls back


BUILTINS = {"initdb": "Apply the project's .sql files", "pool-stress": "Measure a global",
            "pool-status": "Show each pool's settings", "dbshell": "Open the mariadb/mysql"}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_each_built_in_runs_through_flasks_test_runner(
        make_app: t.Callable[..., Flask], name: str) -> None:
    app = make_app()
    register_commands(app)  # what Poolkit.init_app does once the lead wires it in
    runner = app.test_cli_runner()
    shown = runner.invoke(args=[name, "--help"])
    assert shown.exit_code == 0, shown.output
    assert BUILTINS[name] in " ".join(shown.output.split())


def test_built_ins_really_run_through_the_test_runner(make_app: t.Callable[..., Flask],
                                                      tmp_path: Path) -> None:
    sql = write(tmp_path / "sql", {"10_t.sql": "CREATE TABLE runner_t (id INT);\n"
                                               "INSERT INTO runner_t VALUES (1), (2);\n"})
    app = make_app(POOLKIT_SQL_DIR=str(sql))
    register_commands(app)
    runner = app.test_cli_runner()
    applied = runner.invoke(args=["initdb"])
    assert applied.exit_code == 0, applied.output
    with app.app_context():
        from poolkit import db

        assert db.scalar("SELECT COUNT(*) FROM runner_t") == 2
    status = runner.invoke(args=["pool-status", "--json"])
    assert status.exit_code == 0 and '"max_connections": 10' in status.output


def test_an_app_file_overrides_the_built_in_on_app_cli(make_app: t.Callable[..., Flask],
                                                       tmp_path: Path) -> None:
    folder = write(tmp_path / "over", {"initdb.py": """
        import click

        @click.command()
        def initdb():
            click.echo("the app's initdb")
    """})
    app = make_app(POOLKIT_COMMANDS_DIRS=[str(folder)])
    register_commands(app, [str(folder)])

    @app.cli.command("pool-status")
    def mine() -> None:
        click.echo("the app's pool-status")

    runner = app.test_cli_runner()
    assert runner.invoke(args=["initdb"]).output == "the app's initdb\n"
    assert runner.invoke(args=["pool-status"]).output == "the app's pool-status\n"
    assert "Open the mariadb" in runner.invoke(args=["dbshell", "--help"]).output


def test_poolkit_app_alone_puts_the_built_ins_on_app_cli(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    assert set(BUILTINS) <= set(app.cli.commands)
    assert app.test_cli_runner().invoke(args=["initdb", "--help"]).exit_code == 0
