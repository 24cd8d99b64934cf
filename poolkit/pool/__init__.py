"""The pool: the engine (DBUtils' PooledDB underneath), Pool, Connection and the drivers."""

from __future__ import annotations

from .connection import Connection as Connection
from .pool import Pool as Pool
