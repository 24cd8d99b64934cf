"""poolkit: pooled MySQL/MariaDB connections for Flask, built on DBUtils' PooledDB."""

from __future__ import annotations

from . import signals as signals
from .config import PoolkitConfig as PoolkitConfig
from .config import PoolSettings as PoolSettings
from .config import load_config as load_config
from .errors import ConfigError as ConfigError
from .errors import DriverNotInstalledError as DriverNotInstalledError
from .errors import NoHostAvailableError as NoHostAvailableError
from .errors import PoolClosedError as PoolClosedError
from .errors import PoolkitError as PoolkitError
from .errors import PoolTimeout as PoolTimeout
from .errors import SqlFileError as SqlFileError
from .extension import Poolkit as Poolkit
from .extension import db as db
from .pool import Pool as Pool
from .pool.connection import Connection as Connection
from .url import DatabaseURL as DatabaseURL
from .url import parse_url as parse_url

__version__ = "0.1.0"
