"""PyMySQL's SHA-2 authentication with the RSA-key guard: the private API it needs, in one place.

Without TLS, ``caching_sha2_password`` (MySQL 8's default) and ``sha256_password`` encrypt the
password with an RSA key that PyMySQL asks *the server* for: a rogue server hands out its own
key and decrypts the password. MySQL's own client refuses that unless told
``--get-server-public-key``; so does poolkit below the VERIFY_* modes, unless the key is pinned
(``server_public_key`` in POOLKIT_CONNECT_ARGS). Over TLS PyMySQL sends the password itself,
as MySQL's client does. :class:`poolkit.tls` registers these handlers in ``auth_plugin_map``.

Private members (what breaks if PyMySQL changes them):

* ``pymysql._auth.caching_sha2_password_auth`` / ``sha256_password_auth``: the exchanges run
  here unchanged; renamed, the import fails and every such login fails loudly, never silently.
* ``Connection._secure``: True once the socket is TLS (or a Unix socket); if it disappeared,
  ``getattr`` gives False and the guard refuses even over TLS (safe, not silent).
* the key request goes out through the public ``write_packet``: ``_auth._roundtrip`` calls it.
  If PyMySQL wrote by another path, the request would pass unguarded: the tests in
  tests/security (the rogue hands out its own RSA key) would then fail.
"""

from __future__ import annotations

import typing as t

#: The byte each method sends to ask the server for its RSA public key.
KEY_REQUEST = {"caching_sha2_password": b"\x02", "sha256_password": b"\x01"}


def refuse_server_key(plugin: str, error: t.Callable[[t.Any, str], BaseException]) -> type[t.Any]:
    """A handler class running PyMySQL's *plugin* exchange, refusing an unpinned server key.

    *error(connection, why)* builds the exception raised instead of asking for the key.
    """

    class GuardedSHA2:
        def __init__(self, connection: t.Any) -> None:
            self.connection = connection

        def authenticate(self, packet: t.Any) -> t.Any:
            from pymysql import _auth  # private: PyMySQL's exchanges (see the module doc)

            con = self.connection
            pinned = bool(con.server_public_key)
            secure = bool(getattr(con, "_secure", False))  # private: TLS or a Unix socket
            why = (f"{plugin} without TLS, with the password encrypted by an RSA key the "
                   "server itself would supply")
            if plugin == "sha256_password":
                # Its key request went out in the first packet; this packet brings the key.
                if not (secure or pinned):
                    raise error(con, why)
                return _auth.sha256_password_auth(con, packet)
            base_write = con.write_packet

            def write_packet(data: bytes) -> None:
                if data == KEY_REQUEST[plugin] and not (secure or pinned):
                    raise error(con, why)
                base_write(data)

            con.write_packet = write_packet
            try:
                return _auth.caching_sha2_password_auth(con, packet)
            finally:
                del con.write_packet

    GuardedSHA2.__name__ = GuardedSHA2.__qualname__ = f"Guarded_{plugin}"
    return GuardedSHA2
