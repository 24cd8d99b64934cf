"""poolkit: pooled MySQL/MariaDB connections for Flask, built on DBUtils' PooledDB."""

from __future__ import annotations

from . import signals as signals
from ._drivers_errors import adopt_installed_drivers as _adopt_installed_drivers
from .config import PoolkitConfig as PoolkitConfig
from .config import PoolSettings as PoolSettings
from .config import load_config as load_config
from .current import current_connection as current_connection
from .errors import ConfigError as ConfigError
from .errors import ConnectionReturnedError as ConnectionReturnedError
from .errors import DatabaseError as DatabaseError
from .errors import DataError as DataError
from .errors import DriverNotInstalledError as DriverNotInstalledError
from .errors import Error as Error
from .errors import IntegrityError as IntegrityError
from .errors import InterfaceError as InterfaceError
from .errors import InternalError as InternalError
from .errors import NoHostAvailableError as NoHostAvailableError
from .errors import NotSupportedError as NotSupportedError
from .errors import OperationalError as OperationalError
from .errors import PoolClosedError as PoolClosedError
from .errors import PoolkitError as PoolkitError
from .errors import PoolTimeout as PoolTimeout
from .errors import ProgrammingError as ProgrammingError
from .errors import SqlFileError as SqlFileError
from .errors import TransactionError as TransactionError
from .extension import Poolkit as Poolkit
from .extension import db as db
from .extension import stream_with_db as stream_with_db
from .pool import Pool as Pool
from .pool.connection import Connection as Connection
from .retry import retry_transaction as retry_transaction
from .retry import run_transaction as run_transaction
from .script import executefile as executefile
from .script import executescript as executescript
from .url import DatabaseURL as DatabaseURL
from .url import parse_url as parse_url

_adopt_installed_drivers()

__version__ = "0.1.0"
