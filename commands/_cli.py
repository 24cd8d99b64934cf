"""The CLI boundary shared by poolkit's commands: load the app, turn poolkit's errors into click's.

It also holds the objects the ``flask.commands`` entry points name (:class:`BuiltinCommand`):
each imports its command module only when used, and yields to an app command of the same name.

``poolkit.errors`` knows nothing of click (the library is usable without a CLI); here, and only
here, a :class:`~poolkit.errors.PoolkitError` becomes a :class:`click.ClickException`, so a
user's mistake prints one ``Error:`` line and exits 1 instead of a traceback. This is how Flask
keeps ``NoAppException`` in ``flask/cli.py``.
"""

from __future__ import annotations

import importlib
import typing as t
from functools import update_wrapper

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo

from poolkit.discovery import LazyCommand
from poolkit.errors import PoolkitError

if t.TYPE_CHECKING:
    from poolkit.extension import PoolkitState

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def with_poolkit_app(f: F) -> F:
    """Like ``flask.cli.with_appcontext``, and a PoolkitError (app loading too) is one line.

    A Ctrl-C the command does not handle itself exits 130, as a shell reports SIGINT.
    """

    @click.pass_context
    def decorator(ctx: click.Context, /, *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            if not current_app:
                app = ctx.ensure_object(ScriptInfo).load_app()
                ctx.with_resource(app.app_context())
            return ctx.invoke(f, *args, **kwargs)
        except PoolkitError as error:
            raise click.ClickException(str(error)) from None
        except KeyboardInterrupt:
            click.echo("Aborted!", err=True)
            ctx.exit(130)

    return t.cast(F, update_wrapper(decorator, f))


def poolkit_state() -> PoolkitState:
    """The current app's poolkit state, or a one-line error when the app does not use poolkit."""
    state = current_app.extensions.get("poolkit")
    if state is None:
        raise click.ClickException("this app does not use poolkit: call Poolkit(app) first")
    return t.cast("PoolkitState", state)


class BuiltinCommand(LazyCommand):
    """One of poolkit's commands, as a ``flask.commands`` entry point names it.

    FlaskGroup looks up entry-point commands before the app's, so on its own a built-in would
    hide an app's ``commands/initdb.py``. This one looks first: when the app's CLI has a command
    of the same name, that command runs (and its ``--help`` is shown), as Django's project
    commands override its own. *target* is ``"module:attribute"``, imported on first use.
    """

    def __init__(self, name: str, target: str) -> None:
        super().__init__(name, lambda: _import_command(target))

    def target(self, parent: click.Context | None) -> click.Command:
        app = _app_of(parent)
        other = app.cli.commands.get(self.name or "") if app is not None else None
        if other is None or other is self or other is self.command:
            return self.command
        return other


def _import_command(target: str) -> click.Command:
    module, _, attribute = target.partition(":")
    return t.cast(click.Command, getattr(importlib.import_module(module), attribute))


def _app_of(ctx: click.Context | None) -> Flask | None:
    """The app of the ``flask`` invocation *ctx* belongs to, if there is one and it loads."""
    info = ctx.find_object(ScriptInfo) if ctx is not None else None
    if info is None or getattr(info, "_poolkit_no_app", False):
        return None
    try:
        return info.load_app()
    except Exception:  # the built-in then runs, and reports the failure when it loads the app
        info._poolkit_no_app = True  # type: ignore[attr-defined]  # try once, not per command
        return None


# The objects the flask.commands entry points in pyproject.toml name.
initdb = BuiltinCommand("initdb", "poolkit.commands.initdb:initdb_command")
pool_stress = BuiltinCommand("pool-stress", "poolkit.commands.pool_stress:pool_stress_command")
pool_status = BuiltinCommand("pool-status", "poolkit.commands.pool_status:pool_status_command")
dbshell = BuiltinCommand("dbshell", "poolkit.commands.dbshell:dbshell_command")
