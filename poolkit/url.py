"""Parse ``mysql://user:pass@host:port/db?opt=…`` URLs into driver arguments, password masked."""

from __future__ import annotations

import difflib
import typing as t
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError

#: URL scheme → driver name (see poolkit.pool.drivers).
SCHEMES: dict[str, str] = {
    "mysql": "pymysql",
    "mysql+pymysql": "pymysql",
    "mariadb": "pymysql",
    "mariadb+pymysql": "pymysql",
    "mysql+mysqldb": "mysqldb",
    "mysql+mysqlclient": "mysqldb",
    "mariadb+mysqldb": "mysqldb",
}

_INT_OPTIONS = frozenset({"connect_timeout", "read_timeout", "write_timeout", "port"})
_BOOL_OPTIONS = frozenset({"autocommit", "local_infile", "ssl_disabled", "ssl_verify_cert",
                           "ssl_verify_identity"})
_STR_OPTIONS = frozenset({"charset", "collation", "unix_socket", "init_command", "ssl_ca",
                          "ssl_cert", "ssl_key", "sql_mode", "program_name"})
OPTIONS = _INT_OPTIONS | _BOOL_OPTIONS | _STR_OPTIONS

MASK = "***"


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed database URL. ``str()`` and ``repr()`` mask the password as ``***``."""

    driver: str
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    options: dict[str, t.Any] = field(default_factory=dict)
    scheme: str = "mysql"

    def masked(self) -> str:
        """The URL with the password replaced by ``***``, safe for logs and errors."""
        auth = self.user + (f":{MASK}" if self.password else "")
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        return (f"{self.scheme}://{auth}@{self.host}:{self.port}/{self.database}"
                + (f"?{query}" if query else ""))

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"DatabaseURL({self.masked()!r})"

    def with_database(self, database: str) -> DatabaseURL:
        """The same server and credentials, another database."""
        return DatabaseURL(self.driver, self.host, self.port, self.user, self.password,
                           database, dict(self.options), self.scheme)

    def connect_kwargs(self) -> dict[str, t.Any]:
        """Keyword arguments for the driver's ``connect()`` (PyMySQL names)."""
        kwargs: dict[str, t.Any] = {"host": self.host, "port": self.port, "user": self.user,
                                    "password": self.password, "database": self.database}
        kwargs.update(self.options)
        return kwargs


def _convert(key: str, name: str, value: str) -> t.Any:
    if name in _INT_OPTIONS:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{key}: option {name}={value!r} must be a whole number") from None
    if name in _BOOL_OPTIONS:
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key}: option {name}={value!r} must be true or false")
    return value


def parse_url(url: str, key: str = "POOLKIT_DATABASE_URL") -> DatabaseURL:
    """Parse and validate *url*; errors name *key* and never contain the password."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{key} is empty: set it to mysql://user:password@host:3306/database")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        # urllib quotes the would-be port, which is a piece of the password when the password
        # holds an unencoded / # or ?: keep only the reason, never the value.
        reason = _without_password(error).partition(" as ")[0]
        raise ConfigError(f"{key} is not a valid URL ({reason}; percent-encode / # ? @ : in "
                          "the password)") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = scheme or "(none)"
        raise ConfigError(f"{key} has an unknown scheme {shown!r}: use one of "
                          + ", ".join(f"{s}://" for s in SCHEMES))
    options: dict[str, t.Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in OPTIONS:
            hint = difflib.get_close_matches(name, sorted(OPTIONS), n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{key} has an unknown option {name!r}{tip}")
        options[name] = _convert(key, name, value)
    database = unquote(parts.path.lstrip("/"))
    host = parts.hostname or ""
    if not host and "unix_socket" not in options:
        raise ConfigError(f"{key} has no host: write mysql://user:password@HOST:3306/{database}"
                          " (or add ?unix_socket=/path/to/mysqld.sock)")
    if not database or "/" in database:
        raise ConfigError(f"{key} has no database name: write "
                          f"{scheme}://user:password@{host or 'host'}:{port or 3306}/DATABASE")
    return DatabaseURL(
        driver=SCHEMES[scheme],
        host=host or "localhost",
        port=port or 3306,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database,
        options=options,
        scheme=scheme,
    )


def mask_url(url: str) -> str:
    """*url* with any password replaced by ``***`` (works on URLs that do not parse)."""
    # Split by hand: urllib misreads a password holding an unencoded / # or ? as the port.
    head, sep, tail = url.partition("://")
    creds, at, rest = tail.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{head}://{creds.split(':', 1)[0]}:{MASK}@{rest}"


def _without_password(value: object) -> str:
    text = str(value)
    if "@" in text and "://" in text:
        head, _, tail = text.partition("://")
        creds, _, rest = tail.rpartition("@")
        return f"{head}://{creds.split(':', 1)[0]}:{MASK}@{rest}"
    return text
