"""The errors poolkit raises, and driver-neutral names for the errors the database raises.

No click here: ``poolkit.commands`` turns these into ``click.ClickException`` at the CLI
boundary (``poolkit/commands/_cli.py``), so the library stays usable without a CLI.

The PEP 249 classes below (:class:`Error` … :class:`NotSupportedError`) are never raised by
poolkit itself: :func:`adopt_driver_errors` makes them bases of the driver's own classes, so
``except poolkit.IntegrityError:`` catches PyMySQL's and mysqlclient's ``IntegrityError``
alike. What is raised is still the driver's exception (``args`` are ``(errno, message)``,
``isinstance(error, pymysql.err.IntegrityError)`` holds): code written for one driver keeps
working, and code written against poolkit's names runs on both.
"""

from __future__ import annotations

import types


class PoolkitError(Exception):
    """Base class of every error poolkit raises."""


class ConfigError(PoolkitError, ValueError):
    """The app's POOLKIT_* configuration is invalid; the message names the key."""


class DriverNotInstalledError(ConfigError):
    """The URL asks for a database driver that is not installed."""


class PoolTimeout(PoolkitError):
    """No connection became free within POOLKIT_TIMEOUT seconds."""


class NoHostAvailableError(PoolkitError):
    """No host of a multi-host URL answered with the wanted role; the message names each."""


class PoolClosedError(PoolkitError):
    """The pool was closed; no more connections can be checked out."""


class SqlFileError(PoolkitError):
    """A .sql file could not be read, split or applied; the message names file and line."""


class ConnectionReturnedError(PoolkitError):
    """A connection handle was used after it was returned to its pool."""


class TransactionError(PoolkitError):
    """``transaction()`` would commit work the borrow did before it; commit or roll back first."""


# -- the database's errors, whichever driver raised them (PEP 249 names) ------------------------
class Error(Exception):
    """Base of every error the database driver raises (PyMySQL's or mysqlclient's)."""


class InterfaceError(Error):
    """The driver itself failed (a closed connection, a lost socket)."""


class DatabaseError(Error):
    """The server answered with an error."""


class DataError(DatabaseError):
    """A value does not fit (out of range, too long, division by zero)."""


class OperationalError(DatabaseError):
    """The server could not do it: lost connection, lock wait timeout, access denied."""


class IntegrityError(DatabaseError):
    """A constraint failed: duplicate key, foreign key, NOT NULL."""


class InternalError(DatabaseError):
    """The server's internal state is wrong (a cursor that is no longer valid)."""


class ProgrammingError(DatabaseError):
    """The statement is wrong: a syntax error, a missing table or column."""


class NotSupportedError(DatabaseError):
    """The server does not support what was asked."""


PEP249_ERRORS: tuple[type[Error], ...] = (
    Error, InterfaceError, DatabaseError, DataError, OperationalError, IntegrityError,
    InternalError, ProgrammingError, NotSupportedError)


def adopt_driver_errors(module: types.ModuleType) -> None:
    """Make poolkit's PEP 249 classes bases of *module*'s classes of the same names.

    *module* is a DB-API module or its errors module (``pymysql.err``, ``MySQLdb``). Each
    driver class keeps its own bases first, so its method resolution order and behaviour are
    unchanged; poolkit's class is appended, which is all ``except``/``isinstance`` look at.
    Calling it again is harmless.
    """
    for ours in PEP249_ERRORS:
        theirs = getattr(module, ours.__name__, None)
        if isinstance(theirs, type) and issubclass(theirs, Exception) \
                and not issubclass(theirs, ours):
            theirs.__bases__ = (*theirs.__bases__, ours)
