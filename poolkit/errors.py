"""The errors poolkit raises: one family, each with a message that says what to do next."""

from __future__ import annotations

import click


class PoolkitError(Exception):
    """Base class of every error poolkit raises."""


class ConfigError(PoolkitError, ValueError, click.ClickException):
    """The app's POOLKIT_* configuration is invalid; the message names the key.

    It is also a ``click.ClickException`` (as Flask's ``NoAppException`` is a click error): an
    app factory that fails on bad config under ``flask …`` prints one ``Error:`` line and exits
    with status 1 instead of a traceback.
    """

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)


class DriverNotInstalledError(ConfigError):
    """The URL asks for a database driver that is not installed."""


class PoolTimeout(PoolkitError):
    """No connection became free within POOLKIT_TIMEOUT seconds."""


class PoolClosedError(PoolkitError):
    """The pool was closed; no more connections can be checked out."""


class SqlFileError(PoolkitError):
    """A .sql file could not be read, split or applied; the message names file and line."""
