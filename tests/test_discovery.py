"""An app's ``commands/*.py`` become ``flask`` commands; a broken module does not break the rest."""

from __future__ import annotations

import logging
import textwrap
import typing as t
from pathlib import Path

import click
import pytest
from flask import Flask

from poolkit.discovery import load_commands

REPORT = """
    import click
    from poolkit import db

    @click.command()
    @click.option("--times", type=int, default=1)
    def report(times):
        \"\"\"Print a number the server computed.\"\"\"
        for _ in range(times):
            click.echo(f"answer={db.scalar('SELECT 6 * 7')}")
"""


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def commands_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "commands"
    write(folder, "report.py", REPORT)
    return folder


def test_module_becomes_a_flask_command(make_app: t.Callable[..., Flask],
                                        commands_dir: Path) -> None:
    app = make_app(POOLKIT_COMMANDS_DIR=str(commands_dir))
    assert "report" in app.cli.commands
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["report", "--times", "2"])
    assert result.exit_code == 0, result.output
    assert result.output == "answer=42\nanswer=42\n"


def test_commands_folder_beside_the_app_is_found(tmp_path: Path, database_url: str) -> None:
    from poolkit import Poolkit

    write(tmp_path / "commands", "report.py", REPORT)
    app = Flask("discovery_app", root_path=str(tmp_path))
    app.config["POOLKIT_DATABASE_URL"] = database_url
    extension = Poolkit(app)
    try:
        assert "report" in app.cli.commands
        with app.app_context():
            result = app.test_cli_runner().invoke(args=["report"])
        assert result.output == "answer=42\n"
    finally:
        extension.close()


def test_underscore_names_are_command_names_with_dashes(tmp_path: Path) -> None:
    write(tmp_path, "nightly_cleanup.py",
          "import click\n@click.command()\ndef run():\n    click.echo('cleaned')\n")
    write(tmp_path, "_helpers.py", "raise RuntimeError('private modules are not loaded')\n")
    found = load_commands(tmp_path)
    assert list(found) == ["nightly-cleanup"]


def test_imported_commands_are_not_registered_twice(tmp_path: Path) -> None:
    write(tmp_path, "two.py", """
        import click
        from flask.cli import run_command  # imported, not defined here

        @click.command("first")
        def one(): pass

        @click.command("second")
        def two(): pass
    """)
    found = load_commands(tmp_path)
    assert sorted(found) == ["first", "second"]
    assert all(isinstance(c, click.Command) for c in found.values())


def test_missing_folder_gives_no_commands(tmp_path: Path) -> None:
    assert load_commands(tmp_path / "nope") == {}


def test_broken_module_is_reported_and_the_others_still_work(
        make_app: t.Callable[..., Flask], commands_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    write(commands_dir, "broken.py", "import click\ndef broken(:\n")
    write(commands_dir, "explodes.py", "raise RuntimeError('no config for explodes')\n")
    with caplog.at_level(logging.WARNING, logger="poolkit"):
        app = make_app(POOLKIT_COMMANDS_DIR=str(commands_dir))
    logged = caplog.text
    assert "broken.py" in logged and "SyntaxError" in logged
    assert "explodes.py" in logged and "no config for explodes" in logged
    runner = app.test_cli_runner()
    with app.app_context():
        ok = runner.invoke(args=["report"])
        broken = runner.invoke(args=["broken"])
        explodes = runner.invoke(args=["explodes"])
        listing = runner.invoke(args=["--help"])
    assert ok.exit_code == 0 and ok.output == "answer=42\n"
    assert broken.exit_code == 1
    assert "broken.py" in broken.output and "SyntaxError" in broken.output
    assert explodes.exit_code == 1
    assert "explodes.py: RuntimeError: no config for explodes" in explodes.output
    assert "broken: SyntaxError in broken.py" in listing.output
