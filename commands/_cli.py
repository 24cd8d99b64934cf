"""The CLI boundary shared by poolkit's commands: load the app, turn poolkit's errors into click's.

``poolkit.errors`` knows nothing of click (the library is usable without a CLI); here, and only
here, a :class:`~poolkit.errors.PoolkitError` becomes a :class:`click.ClickException`, so a
user's mistake prints one ``Error:`` line and exits 1 instead of a traceback. This is how Flask
keeps ``NoAppException`` in ``flask/cli.py``.
"""

from __future__ import annotations

import typing as t
from functools import update_wrapper

import click
from flask import current_app
from flask.cli import ScriptInfo

from poolkit.errors import PoolkitError

if t.TYPE_CHECKING:
    from poolkit.extension import PoolkitState

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def with_poolkit_app(f: F) -> F:
    """Like ``flask.cli.with_appcontext``, and a PoolkitError (app loading too) is one line."""

    @click.pass_context
    def decorator(ctx: click.Context, /, *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            if not current_app:
                app = ctx.ensure_object(ScriptInfo).load_app()
                ctx.with_resource(app.app_context())
            return ctx.invoke(f, *args, **kwargs)
        except PoolkitError as error:
            raise click.ClickException(str(error)) from None

    return t.cast(F, update_wrapper(decorator, f))


def poolkit_state() -> PoolkitState:
    """The current app's poolkit state, or a one-line error when the app does not use poolkit."""
    state = current_app.extensions.get("poolkit")
    if state is None:
        raise click.ClickException("this app does not use poolkit: call Poolkit(app) first")
    return t.cast("PoolkitState", state)
