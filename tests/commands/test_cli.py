"""The CLI boundary: poolkit's errors become one line, Ctrl-C exits 130, built-ins load lazily."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from flask import Flask

from poolkit.commands._cli import BuiltinCommand, with_poolkit_app
from poolkit.errors import ConfigError


@click.command()
@click.option("--fail", type=click.Choice(["config", "interrupt"]))
@with_poolkit_app
def probe(fail: str) -> None:
    if fail == "config":
        raise ConfigError("POOLKIT_X is wrong: set it to y")
    raise KeyboardInterrupt


def test_a_poolkit_error_is_one_line_and_ctrl_c_exits_130(app: Flask) -> None:
    runner = app.test_cli_runner()
    config = runner.invoke(probe, ["--fail", "config"])
    assert config.exit_code == 1
    assert config.output == "Error: POOLKIT_X is wrong: set it to y\n"
    interrupted = runner.invoke(probe, ["--fail", "interrupt"])
    assert interrupted.exit_code == 130
    assert interrupted.output == "Aborted!\n"


def test_a_built_in_imports_its_module_on_first_use(app: Flask) -> None:
    stand_in = BuiltinCommand("probe", f"{__name__}:probe")
    assert "command" not in vars(stand_in)
    result = app.test_cli_runner().invoke(stand_in, ["--fail", "config"])
    assert result.exit_code == 1 and "POOLKIT_X is wrong" in result.output
    assert stand_in.command is probe


MISTYPED = """
from flask import Flask
from poolkit import Poolkit

app = Flask(__name__)
app.config["POOLKIT_MAX_CONECTIONS"] = 4
Poolkit(app)
"""
CONFIG_ERROR = ("Error: unknown config key POOLKIT_MAX_CONECTIONS (did you mean "
                "POOLKIT_MAX_CONNECTIONS?); see docs/config.md for the keys")


def _flask(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "POOLKIT_"))}
    env["POOLKIT_DATABASE_URL"] = "mysql://root:@127.0.0.1:3306/test"
    return subprocess.run([str(Path(sys.executable).with_name("flask")), *args], cwd=project,
                          env=env, capture_output=True, text=True, timeout=60)


def test_a_config_error_in_a_built_in_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(MISTYPED)
    done = _flask(tmp_path, "initdb", "--status")
    assert (done.returncode, done.stderr) == (1, CONFIG_ERROR + "\n")


@pytest.mark.parametrize("args", [["hello"], ["hello", "--help"], ["hello", "x"], ["--help"],
                                  ["run"]], ids=" ".join)
def test_a_config_error_while_flask_loads_the_app_is_one_line(tmp_path: Path,
                                                               args: list[str]) -> None:
    (tmp_path / "app.py").write_text(MISTYPED)
    (tmp_path / "commands").mkdir()
    (tmp_path / "commands" / "hello.py").write_text(
        "import click\n\n@click.command()\ndef hello():\n    click.echo('hi')\n")
    done = _flask(tmp_path, *args)
    assert "Traceback" not in done.stderr
    assert CONFIG_ERROR in done.stderr.splitlines()
    # The app's own command too exits 1 with the one line (not Flask's "No such command", exit
    # 2): while it looks the name up, the error propagates instead of hiding app.cli.
    assert done.returncode == (0 if args == ["--help"] else 1)
    if args[0] == "hello":
        assert done.stderr.splitlines() == [CONFIG_ERROR], done.stderr
