"""TLS modes and the password guard: what a server must prove before it gets the password.

``ssl_mode`` takes the names MySQL and MariaDB users know:

========================  ===================================================================
``DISABLED``              plain TCP
``PREFERRED`` (default)   TLS when the server offers it, certificate not checked
``REQUIRED``              TLS or no connection, certificate not checked
``VERIFY_CA``             TLS, the certificate signed by ``ssl_ca`` (else the system's CAs);
                          the host name in it is **not** checked
``VERIFY_IDENTITY``       as VERIFY_CA, and the certificate names the host connected to
========================  ===================================================================

Only the two ``VERIFY_*`` modes prove who the server is. Below them a man in the middle can
answer in the server's place, so an authentication method that would hand it the password
(``mysql_clear_password``; ``dialog``, which PAM uses) is refused with one line naming the
server's request: PyMySQL calls the handlers of ``auth_plugin_map`` before its own clear-text
code, and :data:`CLEAR_TEXT_PLUGINS` maps each to a handler that refuses. The SHA-2 methods
without TLS may not fetch the RSA key from the server (as MySQL's client without
``--get-server-public-key``): see :mod:`poolkit.pool.pymysql_compat.handshake`. A Unix socket
counts as proven: only who can write its folder can put a server there.

mysqlclient (libmariadb) takes no handlers; it gets the same refusal from an option file of
ours naming the methods it may use (``restricted-auth``, Connector/C >= 3.3), which holds no
secret. Its error 5010 becomes the same line as PyMySQL's.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import ssl
import tempfile
import threading
import typing as t
from dataclasses import dataclass

SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
VERIFIED_MODES = frozenset({"VERIFY_CA", "VERIFY_IDENTITY"})
#: Authentication methods that send the password itself to the server.
CLEAR_TEXT_PLUGINS = ("mysql_clear_password", "dialog")
#: MySQL's client error number for a refused authentication plugin (CR_AUTH_PLUGIN_ERR).
AUTH_REFUSED = 2061
#: libmariadb's error for a method outside ``restricted-auth``.
MARIADB_RESTRICTED_AUTH = 5010
#: The methods libmariadb may use below the VERIFY_* modes: none hands over the password.
SAFE_PLUGINS = ("mysql_native_password", "client_ed25519", "caching_sha2_password",
                "sha256_password", "mysql_old_password")
_OPTION_GROUP = "poolkit-restricted-auth"


def refusal(plugin: str, host: str, port: int | str, why: str | None = None) -> str:
    """The one line that says why the password was not sent."""
    why = why or f"{plugin}, which sends it in clear text"
    pin = ("; or pin its RSA key: POOLKIT_CONNECT_ARGS={'server_public_key': <PEM bytes>}"
           if "RSA" in why else "")
    return (f"refused to send the password to {host}:{port}: the server asks for {why}, "
            "and it has not proved who it is; if it is your server, connect with "
            f"ssl_mode=VERIFY_IDENTITY and ssl_ca=<its CA file>{pin} (see docs/security.md)")


def default_mode(options: t.Mapping[str, t.Any]) -> str:
    """The mode the older ``ssl_*`` keys mean when ``ssl_mode`` is not given.

    ``ssl_ca`` alone means VERIFY_CA (as MySQL's client), ``ssl_verify_cert=true`` VERIFY_CA
    too (it never checked the host name), ``ssl_verify_identity=true`` VERIFY_IDENTITY.
    """
    if options.get("ssl_disabled"):
        return "DISABLED"
    if options.get("ssl_verify_identity"):
        return "VERIFY_IDENTITY"
    verify = options.get("ssl_verify_cert")
    if verify or (verify is None and options.get("ssl_ca")):
        return "VERIFY_CA"
    if verify is False or options.get("ssl_cert") or options.get("ssl_key"):
        return "REQUIRED"
    return "PREFERRED"


class PoolkitSSLContext(ssl.SSLContext):
    """A client TLS context that remembers the mode and files it was built from (mysqlclient
    takes those, not a context)."""

    poolkit_mode: str
    poolkit_files: dict[str, str]


@functools.lru_cache(maxsize=32)
def client_context(mode: str, ca: str | None, cert: str | None,
                   key: str | None) -> PoolkitSSLContext:
    """The TLS context for *mode*, built once per set of files (a build costs ~30-40 ms)."""
    context = PoolkitSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode in VERIFIED_MODES:
        if ca:
            context.load_verify_locations(cafile=ca)
        else:
            context.load_default_certs()
        context.check_hostname = mode == "VERIFY_IDENTITY"
        context.verify_mode = ssl.CERT_REQUIRED
        # MySQL's own auto-generated certificates fail Python 3.13's strict X.509 checks.
        context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(cert, keyfile=key)
    context.poolkit_mode = mode
    context.poolkit_files = {name: path for name, path in
                             (("ca", ca), ("cert", cert), ("key", key)) if path}
    return context


def refuse_clear_text(plugin: str) -> type[t.Any]:
    """A PyMySQL auth-plugin handler class that refuses *plugin*, naming the server."""

    class Refuse:
        def __init__(self, connection: t.Any) -> None:
            self.connection = connection

        def authenticate(self, packet: t.Any) -> t.Any:
            import pymysql

            con = self.connection
            raise pymysql.err.OperationalError(AUTH_REFUSED, refusal(plugin, con.host, con.port))

        prompt = authenticate  # dialog's other entry point

    Refuse.__name__ = Refuse.__qualname__ = f"Refuse_{plugin}"
    return Refuse


def _sha2_error(connection: t.Any, why: str) -> BaseException:
    import pymysql

    return t.cast(BaseException, pymysql.err.OperationalError(
        AUTH_REFUSED, refusal("", connection.host, connection.port, why)))


@functools.cache
def _guards() -> dict[str, type[t.Any]]:
    # The SHA-2 handlers run PyMySQL's private exchanges: that code lives with the pool's
    # other PyMySQL adapters, imported on first use (poolkit.pool imports this module).
    from .pool.pymysql_compat.handshake import KEY_REQUEST, refuse_server_key

    guards = {name: refuse_clear_text(name) for name in CLEAR_TEXT_PLUGINS}
    guards.update({name: refuse_server_key(name, _sha2_error) for name in KEY_REQUEST})
    return guards



@dataclass(frozen=True)
class TLSOptions:
    """The TLS part of a URL: its mode and files."""

    mode: str = "PREFERRED"
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def verified(self) -> bool:
        """True when the server must prove who it is (a VERIFY_* mode)."""
        return self.mode in VERIFIED_MODES

    def pymysql_kwargs(self, unix_socket: bool = False) -> dict[str, t.Any]:
        """PyMySQL ``connect()`` arguments for this mode, the clear-text guard included."""
        kwargs: dict[str, t.Any] = {}
        if self.mode == "DISABLED":
            kwargs["ssl_disabled"] = True
        elif self.mode != "PREFERRED" or self.cert:
            # PyMySQL makes TLS required whenever it is given a context (or a client cert).
            kwargs["ssl"] = client_context(self.mode, self.ca, self.cert, self.key)
        if not (self.verified or unix_socket):
            kwargs["auth_plugin_map"] = dict(_guards())
        return kwargs


_file_lock = threading.Lock()
_restricted_file: str | None = None
_RESTRICTED_TEXT = f"[{_OPTION_GROUP}]\nrestricted-auth={','.join(SAFE_PLUGINS)}\n".encode()


def restricted_auth_file() -> str:
    """An option file (made once per process, removed at its exit) allowing only SAFE_PLUGINS."""
    global _restricted_file
    with _file_lock:
        if _restricted_file is None:
            fd, path = tempfile.mkstemp(prefix="poolkit-auth-", suffix=".cnf")
            with os.fdopen(fd, "wb") as file:
                file.write(_RESTRICTED_TEXT)
            atexit.register(_remove, path, os.getpid())
            _restricted_file = path
        return _restricted_file


def check_restricted_file(kwargs: t.Mapping[str, t.Any]) -> None:
    """Before a mysqlclient connect: the option file of the guard is there and ours.

    libmariadb silently ignores a missing option file -- which would lift the guard -- so a
    file removed since (a temp cleaner) is made again, never through a link, and one that
    holds anything else is an error.
    """
    if kwargs.get("read_default_group") != _OPTION_GROUP:
        return
    path = str(kwargs["read_default_file"])
    with _file_lock:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(_RESTRICTED_TEXT)
            return
        with os.fdopen(fd, "rb") as file:
            if file.read(4096) != _RESTRICTED_TEXT:
                raise PermissionError(f"{path} is not poolkit's restricted-auth file: remove it")


def _remove(path: str, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child: the parent and its workers still use it
        with contextlib.suppress(OSError):
            os.unlink(path)


def mysqldb_kwargs(kwargs: dict[str, t.Any]) -> dict[str, t.Any]:
    """PyMySQL-style TLS arguments (see :meth:`TLSOptions.pymysql_kwargs`) as mysqlclient's."""
    kwargs = dict(kwargs)
    if kwargs.pop("auth_plugin_map", None) and "read_default_file" not in kwargs:
        kwargs["read_default_file"] = restricted_auth_file()
        kwargs["read_default_group"] = _OPTION_GROUP
    context = kwargs.pop("ssl", None)
    if kwargs.pop("ssl_disabled", None):
        kwargs["ssl_mode"] = "DISABLED"
    elif isinstance(context, PoolkitSSLContext):
        kwargs["ssl_mode"] = context.poolkit_mode
        if context.poolkit_files:
            kwargs["ssl"] = dict(context.poolkit_files)
    elif context is not None:
        kwargs["ssl"] = context
    return kwargs
