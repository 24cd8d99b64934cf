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
code, and :data:`CLEAR_TEXT_PLUGINS` maps each to a handler that refuses. A Unix socket counts as
proven: only who can write its folder can put a server there.
"""

from __future__ import annotations

import functools
import ssl
import typing as t
from dataclasses import dataclass

SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
VERIFIED_MODES = frozenset({"VERIFY_CA", "VERIFY_IDENTITY"})
#: Authentication methods that send the password itself to the server.
CLEAR_TEXT_PLUGINS = ("mysql_clear_password", "dialog")
#: MySQL's client error number for a refused authentication plugin (CR_AUTH_PLUGIN_ERR).
AUTH_REFUSED = 2061


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
            raise pymysql.err.OperationalError(
                AUTH_REFUSED,
                f"refused to send the password to {con.host}:{con.port}: the server asks for "
                f"{plugin}, which sends it in clear text, and it has not proved who it is; "
                "if it is your server, connect with ssl_mode=VERIFY_IDENTITY and ssl_ca=<its "
                "CA file> (see docs/security.md)")

        prompt = authenticate  # dialog's other entry point

    Refuse.__name__ = Refuse.__qualname__ = f"Refuse_{plugin}"
    return Refuse


_GUARDS: dict[str, type[t.Any]] = {name: refuse_clear_text(name) for name in CLEAR_TEXT_PLUGINS}


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
            kwargs["auth_plugin_map"] = dict(_GUARDS)
        return kwargs


def mysqldb_kwargs(kwargs: dict[str, t.Any]) -> dict[str, t.Any]:
    """PyMySQL-style TLS arguments (see :meth:`TLSOptions.pymysql_kwargs`) as mysqlclient's."""
    kwargs = dict(kwargs)
    kwargs.pop("auth_plugin_map", None)
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
