"""Django-style command discovery: every ``commands/*.py`` of the app becomes a ``flask`` command.

Modules are loaded from their file path (not imported by name), so the app's folder may be
called ``commands`` without clashing with anything on ``sys.path``. A module that fails to
load is reported by file name and replaced by a command that explains the failure; the other
commands keep working.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import traceback
import typing as t
from pathlib import Path

import click

logger = logging.getLogger("poolkit")

_PACKAGE = "poolkit_user_commands"


def _load_module(path: Path) -> t.Any:
    name = f"{_PACKAGE}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _broken_command(name: str, path: Path, error: BaseException) -> click.Command:
    summary = f"{path}: {type(error).__name__}: {error}"
    detail = "".join(traceback.format_exception(error))

    def explain() -> None:
        raise click.ClickException(f"{summary}\n{detail}")

    return click.Command(name, callback=explain, help=f"(broken) {summary}",
                         short_help=f"(broken: {type(error).__name__} in {path.name})")


def load_commands(directory: Path) -> dict[str, click.Command]:
    """The commands defined in *directory*'s modules, by name (Django style: file name)."""
    found: dict[str, click.Command] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        default_name = path.stem.replace("_", "-")
        try:
            module = _load_module(path)
        except Exception as error:
            logger.warning("poolkit: skipped command module %s: %s: %s",
                           path, type(error).__name__, error)
            found[default_name] = _broken_command(default_name, path, error)
            continue
        own = [obj for obj in vars(module).values()
               if isinstance(obj, click.Command)
               and getattr(obj.callback, "__module__", module.__name__) == module.__name__]
        if len(own) == 1:
            found[default_name] = own[0]
        else:
            for command in own:
                found[command.name or default_name] = command
    return found


def register_user_commands(group: click.Group, directory: Path) -> list[str]:
    """Add the commands found in *directory* to *group*; returns their names."""
    commands = load_commands(directory)
    for name, command in commands.items():
        group.add_command(command, name)
    return list(commands)
