"""Parse ``mysql://user:pass@host:port/db?opt=…`` URLs into driver arguments, password masked.

Several hosts may be listed, ``mysql://user:pass@h1:3306,h2:3306,h3/db?target=primary``: a new
connection tries them in order (``load_balance=random`` shuffles the order per connect) and keeps
one of the wanted role (see :mod:`poolkit.pool.hosts`).

TLS: ``ssl_mode`` (DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY, see
:mod:`poolkit.tls`) applies to every host; the older ``ssl_disabled``, ``ssl_verify_cert`` and
``ssl_verify_identity`` map onto it, and ``ssl_ca`` alone means VERIFY_CA. Every error message
is scrubbed of the password, however the URL splits it.
"""

from __future__ import annotations

import difflib
import typing as t
import warnings
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError
from .tls import SSL_MODES, TLSOptions, default_mode, mysqldb_kwargs

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
                          "ssl_cert", "ssl_key", "sql_mode", "program_name", "ssl_mode"})
#: The older TLS switches, folded into ssl_mode at parse time.
_LEGACY_TLS = ("ssl_disabled", "ssl_verify_cert", "ssl_verify_identity")
_TLS_FILES = ("ssl_ca", "ssl_cert", "ssl_key")
#: Routing options: read by poolkit, never passed to the driver (issue 14).
TARGETS = ("any", "primary", "replica")
LOAD_BALANCE = ("sequential", "random")
_ROUTING_OPTIONS = frozenset({"target", "load_balance"})
OPTIONS = _INT_OPTIONS | _BOOL_OPTIONS | _STR_OPTIONS | _ROUTING_OPTIONS

MASK = "***"


class InsecureOptionWarning(UserWarning):
    """A URL option that lets the server reach beyond the database (``local_infile``)."""


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
    #: Every host in URL order, ``(host, port)``; the first is also ``host``/``port``.
    hosts: tuple[tuple[str, int], ...] = ()
    #: ``any`` (the first host that answers), ``primary`` (read_only=0) or ``replica``.
    target: str = "any"
    load_balance: str = "sequential"
    #: The TLS mode for every host (see poolkit.tls).
    ssl_mode: str = "PREFERRED"

    def __post_init__(self) -> None:
        if not self.hosts:
            object.__setattr__(self, "hosts", ((self.host, self.port),))

    @property
    def routed(self) -> bool:
        """True when connects go through host selection (several hosts, or a role wanted)."""
        return len(self.hosts) > 1 or self.target != "any"

    def host_list(self) -> str:
        """``h1:3306,h2:3306`` as in the URL."""
        return ",".join(format_host(host, port) for host, port in self.hosts)

    def masked(self) -> str:
        """The URL with the password replaced by ``***``, safe for logs and errors."""
        auth = self.user + (f":{MASK}" if self.password else "")
        shown = dict(self.options)
        if self.target != "any":
            shown["target"] = self.target
        if self.load_balance != "sequential":
            shown["load_balance"] = self.load_balance
        if self.ssl_mode != "PREFERRED":
            shown["ssl_mode"] = self.ssl_mode
        query = "&".join(f"{k}={v}" for k, v in shown.items())
        return (f"{self.scheme}://{auth}@{self.host_list()}/{self.database}"
                + (f"?{query}" if query else ""))

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"DatabaseURL({self.masked()!r})"

    def with_database(self, database: str) -> DatabaseURL:
        """The same server and credentials, another database."""
        return DatabaseURL(self.driver, self.host, self.port, self.user, self.password,
                           database, dict(self.options), self.scheme, self.hosts, self.target,
                           self.load_balance, self.ssl_mode)

    @property
    def tls(self) -> TLSOptions:
        """The TLS mode and files of every connection to this URL's hosts."""
        return TLSOptions(self.ssl_mode, *(self.options.get(name) for name in _TLS_FILES))

    def connect_kwargs(self) -> dict[str, t.Any]:
        """Keyword arguments for the driver's ``connect()`` (PyMySQL names), the TLS mode and
        password guard included; for mysqlclient, TLS as its ``ssl_mode`` and ``ssl``."""
        kwargs: dict[str, t.Any] = {"host": self.host, "port": self.port, "user": self.user,
                                    "password": self.password, "database": self.database}
        kwargs.update((k, v) for k, v in self.options.items() if k not in _TLS_FILES)
        try:
            kwargs.update(self.tls.pymysql_kwargs(unix_socket=bool(self.options.get(
                "unix_socket"))))
        except OSError as error:  # a CA, certificate or key file that cannot be read
            raise ConfigError(f"{self.masked()}: cannot load the TLS files ({error})") from None
        return mysqldb_kwargs(kwargs) if self.driver == "mysqldb" else kwargs


def format_host(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_hosts(key: str, hostlist: str) -> list[tuple[str, int | None]]:
    """``h1:3306,[::1]:3307,h3`` → ``[(h1, 3306), (::1, 3307), (h3, None)]``."""
    hosts: list[tuple[str, int | None]] = []
    for entry in hostlist.split(","):
        entry = entry.strip()
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = entry.partition(":")
        if not host:
            raise ConfigError(f"{key} has an empty host in its host list {hostlist!r}")
        port: int | None = None
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ConfigError(f"{key}: host {entry!r} has an invalid port")
            port = int(port_text)
        hosts.append((host.lower(), port))
    return hosts


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
    try:
        return _parse(url, key)
    except ConfigError as error:
        raise ConfigError(scrub(str(error), url) if isinstance(url, str) else str(error)
                          ) from None


def _tls_mode(key: str, options: dict[str, t.Any]) -> str:
    """``ssl_mode`` from the options (removing it and the older switches it replaces)."""
    given = options.pop("ssl_mode", None)
    legacy = [name for name in _LEGACY_TLS if name in options]
    if given is None:
        mode = default_mode(options)
    else:
        mode = given.upper().replace("-", "_")
        if mode not in SSL_MODES:
            hint = difflib.get_close_matches(mode, SSL_MODES, n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{key}: ssl_mode={given!r} must be one of "
                              f"{', '.join(SSL_MODES)}{tip}")
        if legacy:
            raise ConfigError(f"{key}: ssl_mode and {legacy[0]} are both set: keep ssl_mode "
                              "alone")
    for name in legacy:
        del options[name]
    files = [name for name in _TLS_FILES if options.get(name)]
    if mode == "DISABLED" and files:
        raise ConfigError(f"{key}: TLS is disabled but {files[0]} is set: remove one of them")
    if options.get("local_infile"):
        warnings.warn(InsecureOptionWarning(
            f"{key} has local_infile=true: the server (or anyone answering in its place) may "
            "read any file this process can read; see docs/security.md"), stacklevel=4)
    return mode


def _parse(url: str, key: str) -> DatabaseURL:
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{key} is empty: set it to mysql://user:password@host:3306/database")
    listed: list[tuple[str, int | None]] | None = None
    try:
        parts = urlsplit(url.strip())
        creds, at, hostlist = parts.netloc.rpartition("@")
        if "," in hostlist:  # several hosts: parse the list here, the rest as a one-host URL
            listed = _split_hosts(key, hostlist)
            parts = parts._replace(netloc=f"{creds}{at}{hostlist.split(',')[0]}")
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
    if "#" in url:
        raise ConfigError(f"{key} holds a '#', which would end the URL there: percent-encode it "
                          "as %23 (in a password too)")
    if "@" in url and "@" not in parts.netloc:
        raise ConfigError(f"{key} has an '@' after the host: percent-encode @ / ? in the "
                          "password (%40 %2F %3F) and in option values")
    options: dict[str, t.Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in OPTIONS:
            hint = difflib.get_close_matches(name, sorted(OPTIONS), n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{key} has an unknown option {name!r}{tip}")
        options[name] = _convert(key, name, value)
    target = options.pop("target", "any")
    if target not in TARGETS:
        hint = difflib.get_close_matches(target, TARGETS, n=1)
        tip = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{key}: target={target!r} must be one of "
                          f"{', '.join(TARGETS)}{tip}")
    ssl_mode = _tls_mode(key, options)
    load_balance = options.pop("load_balance", "sequential")
    if load_balance not in LOAD_BALANCE:
        raise ConfigError(f"{key}: load_balance={load_balance!r} must be one of "
                          + ", ".join(LOAD_BALANCE))
    database = unquote(parts.path.lstrip("/"))
    host = parts.hostname or ""
    if not host and "unix_socket" not in options:
        raise ConfigError(f"{key} has no host: write mysql://user:password@HOST:3306/{database}"
                          " (or add ?unix_socket=/path/to/mysqld.sock)")
    if not database or "/" in database:
        raise ConfigError(f"{key} has no database name: write "
                          f"{scheme}://user:password@{host or 'host'}:{port or 3306}/DATABASE")
    if listed is not None and "unix_socket" in options:
        raise ConfigError(f"{key}: unix_socket cannot be combined with several hosts")
    hosts = tuple((h, p or 3306) for h, p in listed) if listed else (
        (host or "localhost", port or 3306),)
    return DatabaseURL(
        driver=SCHEMES[scheme],
        host=hosts[0][0],
        port=hosts[0][1],
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database,
        options=options,
        scheme=scheme,
        hosts=hosts,
        target=target,
        load_balance=load_balance,
        ssl_mode=ssl_mode,
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


_MIN_PIECE = 3  # mask every run of this many characters or more that the password holds


def scrub(message: str, url: str) -> str:
    """*message* with every piece of *url*'s would-be password masked as ``***``.

    The would-be password runs from the first ``:`` after the user to the last ``@``: the
    widest reading of a URL whose password holds an unencoded ``@ / ? #`` (which the URL
    parser splits into host, path, query or fragment, pieces an error message may quote).
    """
    _, sep, tail = url.partition("://")
    creds = tail.rpartition("@")[0] if sep else ""
    secret = creds.partition(":")[2]
    if len(secret) < _MIN_PIECE:
        return message
    secrets = {secret, unquote(secret)}
    out: list[str] = []
    i = 0
    while i < len(message):
        longest = 0
        for candidate in secrets:
            j = i + _MIN_PIECE
            while j <= len(message) and message[i:j] in candidate:
                j += 1
            longest = max(longest, j - 1 - i)
        if longest >= _MIN_PIECE:
            out.append(MASK)
            i += longest
        else:
            out.append(message[i])
            i += 1
    return "".join(out)
