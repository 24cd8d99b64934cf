"""The drivers whose errors take poolkit's PEP 249 names (:func:`.errors.adopt_driver_errors`).

PyMySQL is a dependency and always adopted. mysqlclient is optional: adopted when installed
(importing it costs about 10 ms, once per process).
"""

from __future__ import annotations

import importlib
import importlib.util

from .errors import adopt_driver_errors

#: The modules that define each driver's exception classes.
DRIVER_ERROR_MODULES = ("pymysql.err", "MySQLdb._exceptions")


def adopt_installed_drivers() -> list[str]:
    """Adopt the error classes of every installed driver; returns the modules adopted."""
    adopted = []
    for name in DRIVER_ERROR_MODULES:
        try:
            if importlib.util.find_spec(name.partition(".")[0]) is None:
                continue
            module = importlib.import_module(name)
        except ImportError:  # installed but broken (a missing libmariadb): its driver says so
            continue
        adopt_driver_errors(module)
        adopted.append(name)
    return adopted
