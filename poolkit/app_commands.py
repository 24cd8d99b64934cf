"""How an app's own command runs: one transaction, one-line errors, ``--traceback``.

:mod:`poolkit.discovery` applies :func:`run_as_app_command` to each command it loads from the
app's ``commands/`` folders. The command's work on ``db`` is committed when it returns or exits
with status 0 (``ctx.exit(0)``, ``sys.exit(0)``, ``sys.exit()``) and rolled back (by the pool,
when the app context ends) when it fails. A database error (:class:`poolkit.Error`, whichever
driver raised it) or a poolkit error it does
not handle becomes ``Error: commands/x.py: 1146 Table 'shop.session' doesn't exist``, exit 1;
``--traceback`` prints the stack first, as Django's commands do. Other exceptions are bugs and
keep their traceback. Ctrl-C rolls back and exits 130.
"""

from __future__ import annotations

import traceback
import typing as t

import click
from flask import current_app

from .errors import Error, PoolkitError

#: ``app.extensions`` key of poolkit's state (the extension's EXTENSION_KEY).
EXTENSION_KEY = "poolkit"

_TRACEBACK = "poolkit.traceback"


def _remember_traceback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_TRACEBACK] = True


def run_as_app_command(command: click.Command, where: str) -> None:
    """Give *command* ``--traceback``, one-line errors and a transaction committed on success."""
    if not any("--traceback" in getattr(p, "opts", ()) for p in command.params):
        command.params.append(click.Option(
            ["--traceback"], is_flag=True, expose_value=False, is_eager=True,
            callback=_remember_traceback,
            help="On a database or poolkit error, print the stack, not just the one line."))
    invoke = command.invoke

    def invoke_in_transaction(ctx: click.Context) -> t.Any:
        try:
            result = invoke(ctx)
        except click.exceptions.Exit as stop:
            if stop.exit_code == 0:
                _commit(ctx, where)
            raise
        except SystemExit as stop:  # sys.exit(): 0, None (and False) are success, as for Python
            if stop.code is None or stop.code == 0:
                _commit(ctx, where)
            raise
        except (PoolkitError, Error) as error:
            raise _one_line(ctx, where, error) from None
        except KeyboardInterrupt:  # rolled back with the app context; 130, as a shell says
            click.echo("Aborted!", err=True)
            ctx.exit(130)
        _commit(ctx, where)
        return result

    command.invoke = invoke_in_transaction  # type: ignore[method-assign]


def _commit(ctx: click.Context, where: str) -> None:
    """Commit what the command did on ``db`` (nothing happens when it never used it)."""
    if not current_app or EXTENSION_KEY not in current_app.extensions:
        return
    from .current import current_connection

    try:
        connection = current_connection()
        if connection.checked_out and not connection.returned:
            connection.commit()
    except (PoolkitError, Error) as error:
        raise _one_line(ctx, where, error) from None


def _one_line(ctx: click.Context, where: str, error: BaseException) -> click.ClickException:
    if ctx.meta.get(_TRACEBACK):
        click.echo("".join(traceback.format_exception(error)), err=True, nl=False)
    return click.ClickException(f"{where}: {describe_error(error)}")


def describe_error(error: BaseException) -> str:
    """``1146 Table 'shop.session' doesn't exist`` for a driver error, else its message."""
    args: tuple[t.Any, ...] = tuple(getattr(error, "args", ()))
    if isinstance(error, Error) and len(args) == 2 and isinstance(args[0], int):
        return f"{args[0]} {args[1]}"
    return str(error) or type(error).__name__
