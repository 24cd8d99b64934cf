"""The CLI boundary: poolkit's errors become one line, Ctrl-C exits 130, built-ins load lazily."""

from __future__ import annotations

import click
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
