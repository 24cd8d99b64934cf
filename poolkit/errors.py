"""The errors poolkit raises: one family, each with a message that says what to do next.

No click here: ``poolkit.commands`` turns these into ``click.ClickException`` at the CLI
boundary (``poolkit/commands/_cli.py``), so the library stays usable without a CLI.
"""

from __future__ import annotations


class PoolkitError(Exception):
    """Base class of every error poolkit raises."""


class ConfigError(PoolkitError, ValueError):
    """The app's POOLKIT_* configuration is invalid; the message names the key."""


class DriverNotInstalledError(ConfigError):
    """The URL asks for a database driver that is not installed."""


class PoolTimeout(PoolkitError):
    """No connection became free within POOLKIT_TIMEOUT seconds."""


class PoolClosedError(PoolkitError):
    """The pool was closed; no more connections can be checked out."""


class SqlFileError(PoolkitError):
    """A .sql file could not be read, split or applied; the message names file and line."""


class ConnectionReturnedError(PoolkitError):
    """A connection handle was used after it was returned to its pool."""
