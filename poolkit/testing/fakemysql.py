"""A fake MySQL server for security tests: it speaks just enough of the protocol to play a rogue.

A real server cannot be told to misbehave, so :class:`FakeMySQL` plays the server a man in the
middle (or a wrong DNS answer, or a spoofed host in a host list) would put in its place. On a
free ``127.0.0.1`` port it greets, optionally offers TLS with a certificate the test made,
then authenticates as its :class:`Scenario` says:

* ``auth="native"`` accepts any login (``mysql_native_password``, the password never sent);
* ``auth="clear"`` asks for ``mysql_clear_password`` (the client would send the password);
* ``auth="dialog"`` asks for ``dialog`` (PAM) with a ``Password:`` prompt;
* ``auth="sha2"`` greets with ``caching_sha2_password`` and asks for its full authentication:
  over TLS the client sends the password itself, without TLS it asks for the server's RSA key,
  which this server hands out and then decrypts the password with;
* ``greeting_delay`` sends the greeting one byte at a time, that many seconds apart;
* ``local_file`` answers the first query with a ``LOAD DATA LOCAL`` request for that path.

It records what every client sent (:attr:`FakeMySQL.sessions`): the user, whether TLS was
negotiated, the clear-text secrets it was handed, and any file contents. Queries get an OK,
``SELECT`` a one-row result (``28800``; ``0`` for each ``@@`` variable when it asks for
several; the pool's role query gets "writable, not a Galera node"). Every socket has a
timeout and every thread is a daemon joined on :meth:`FakeMySQL.stop`.

:func:`make_certificates` writes a CA and server certificates (``cryptography`` is needed:
it is in the dev extras).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import ssl
import struct
import threading
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

SERVER_VERSION = b"5.5.5-10.11.99-MariaDB-fake"

# Capability flags (the protocol's CLIENT_* constants).
LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, CONNECT_WITH_DB = 0x1, 0x2, 0x4, 0x8
LOCAL_FILES, PROTOCOL_41, SSL, TRANSACTIONS = 0x80, 0x200, 0x800, 0x2000
SECURE_CONNECTION, MULTI_STATEMENTS, MULTI_RESULTS = 0x8000, 1 << 16, 1 << 17
PLUGIN_AUTH, CONNECT_ATTRS, PLUGIN_AUTH_LENENC = 1 << 19, 1 << 20, 1 << 21
BASE_CAPABILITIES = (LONG_PASSWORD | FOUND_ROWS | LONG_FLAG | CONNECT_WITH_DB | LOCAL_FILES
                     | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | MULTI_STATEMENTS
                     | MULTI_RESULTS | PLUGIN_AUTH | CONNECT_ATTRS | PLUGIN_AUTH_LENENC)
STATUS_AUTOCOMMIT = 0x0002

COM_QUIT, COM_QUERY = 0x01, 0x03
IO_TIMEOUT = 10.0


@dataclass(frozen=True)
class Scenario:
    """How the fake server behaves towards every client."""

    auth: str = "native"  # native | clear | dialog | sha2
    #: PEM files of the certificate (chain) and key to offer TLS with; None: no TLS.
    certificate: tuple[str, str] | None = None
    greeting_delay: float = 0.0
    local_file: str | None = None


@dataclass
class Session:
    """What one client did and sent."""

    user: str = ""
    tls: bool = False
    tls_error: str | None = None
    auth_plugin: str = ""  # the plugin the client named in its handshake response
    #: Clear-text secrets the client handed over (mysql_clear_password, dialog answers).
    secrets: list[bytes] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    file_contents: bytes | None = None
    finished: bool = False  # the client got as far as the end of authentication


class FakeMySQL:
    """A fake MySQL server on a free loopback port; use it as a context manager."""

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.scenario = scenario or Scenario()
        self.sessions: list[Session] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._key: t.Any = None
        if self.scenario.certificate:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(*self.scenario.certificate)
        self._acceptor = threading.Thread(target=self._accept, name="fakemysql", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, user: str = "app", password: str = "s3cret-pw", database: str = "shop",
            query: str = "", host: str = "127.0.0.1") -> str:
        """A URL pointing at this server."""
        return (f"mysql://{user}:{password}@{host}:{self.port}/{database}"
                + (f"?{query}" if query else ""))

    def start(self) -> FakeMySQL:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def __enter__(self) -> FakeMySQL:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def received(self, secret: str) -> bool:
        """True when any client handed *secret* to this server (over TLS or not)."""
        return any(secret.encode() in s for session in self.sessions for s in session.secrets)

    # -- the server -------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(IO_TIMEOUT)
            session = Session()
            with self._lock:
                self._clients.append(client)
                self.sessions.append(session)
            thread = threading.Thread(target=self._serve, args=(client, session), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket, session: Session) -> None:
        wire = _Wire(client)
        try:
            self._handshake(wire, session)
            session.finished = True
            self._commands(wire, session)
        except (OSError, ConnectionError, ValueError, ssl.SSLError):
            pass  # the client gave up or was refused: what it sent is recorded
        finally:
            with contextlib.suppress(OSError):
                wire.sock.close()

    def _greeting(self, scramble: bytes) -> bytes:
        caps = BASE_CAPABILITIES | (SSL if self._tls else 0)
        plugin = {"clear": b"mysql_clear_password", "dialog": b"dialog",
                  "sha2": b"caching_sha2_password"}.get(self.scenario.auth,
                                                        b"mysql_native_password")
        return (b"\x0a" + SERVER_VERSION + b"\0" + struct.pack("<I", 7) + scramble[:8] + b"\0"
                + struct.pack("<HBHH", caps & 0xFFFF, 45, STATUS_AUTOCOMMIT, caps >> 16)
                + bytes([21]) + b"\0" * 10 + scramble[8:] + b"\0" + plugin + b"\0")

    def _handshake(self, wire: _Wire, session: Session) -> None:
        scramble = os.urandom(20).replace(b"\0", b"\1")
        greeting = _packet(0, self._greeting(scramble))
        if self.scenario.greeting_delay:
            for byte in greeting:
                if self._stopping.is_set():
                    raise ConnectionError("stopping")
                wire.sock.sendall(bytes([byte]))
                time.sleep(self.scenario.greeting_delay)
        else:
            wire.sock.sendall(greeting)
        payload = wire.read()
        caps = struct.unpack_from("<I", payload)[0]
        if caps & SSL and self._tls is not None and len(payload) == 32:
            try:
                wire.sock = self._tls.wrap_socket(wire.sock, server_side=True)
            except (ssl.SSLError, OSError) as error:
                session.tls_error = str(error)  # the client refused our certificate
                raise
            session.tls = True
            payload = wire.read()
        user, _, rest = payload[32:].partition(b"\0")
        session.user = user.decode(errors="replace")
        length, rest = _lenenc(rest) if caps & PLUGIN_AUTH_LENENC else (rest[0], rest[1:])
        rest = rest[length:]
        if caps & CONNECT_WITH_DB:
            rest = rest.partition(b"\0")[2]
        session.auth_plugin = rest.partition(b"\0")[0].decode(errors="replace")
        if self.scenario.auth == "clear":
            wire.write(b"\xfemysql_clear_password\0")
            self._take_secret(wire, session)
        elif self.scenario.auth == "dialog":
            wire.write(b"\xfedialog\0" + b"\x05Password: ")  # 0x04 password, 0x01 last
            self._take_secret(wire, session)
        elif self.scenario.auth == "sha2":
            self._sha2_full_auth(wire, session, scramble)
        wire.write(_ok())

    def _rsa_key(self) -> t.Any:
        from cryptography.hazmat.primitives.asymmetric import rsa

        with self._lock:
            if self._key is None:
                self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return self._key

    @property
    def public_key_pem(self) -> bytes:
        """The RSA public key this server hands out for SHA-2 logins (PEM)."""
        from cryptography.hazmat.primitives import serialization

        return t.cast(bytes, self._rsa_key().public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def _sha2_full_auth(self, wire: _Wire, session: Session, scramble: bytes) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        wire.write(b"\x01\x04")  # "perform full authentication"
        answer = wire.read()
        if session.tls:  # the password itself
            session.secrets.append(answer.rstrip(b"\0"))
            return
        if answer == b"\x02":  # a key request (a client with a pinned key sends none)
            wire.write(b"\x01" + self.public_key_pem)
            answer = wire.read()
        sha1 = hashes.SHA1()
        oaep = padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None)
        mixed = self._rsa_key().decrypt(answer, oaep)
        session.secrets.append(bytes(b ^ scramble[i % len(scramble)]
                                     for i, b in enumerate(mixed)).rstrip(b"\0"))

    def _take_secret(self, wire: _Wire, session: Session) -> None:
        # Over TLS too: the rogue holds the key of the TLS session it offered.
        session.secrets.append(wire.read().rstrip(b"\0"))

    def _commands(self, wire: _Wire, session: Session) -> None:
        asked_file = False
        while not self._stopping.is_set():
            wire.seq = -1
            payload = wire.read()
            if not payload or payload[0] == COM_QUIT:
                return
            if payload[0] != COM_QUERY:
                wire.write(_ok())
                continue
            sql = payload[1:].decode(errors="replace")
            session.queries.append(sql)
            if self.scenario.local_file and not asked_file and not sql.upper().startswith("SET"):
                asked_file = True
                wire.write(b"\xfb" + self.scenario.local_file.encode())
                contents = b""
                while True:  # the client sends the file, then an empty packet
                    chunk = wire.read()
                    if not chunk:
                        break
                    contents += chunk
                session.file_contents = contents
                wire.write(_ok())
            elif sql.lstrip().lower().startswith(("select", "show")):
                # The role query: not read-only, and NULL for the Galera state (no wsrep_on);
                # other @@variables 0 each; anything else one value.
                if "wsrep_on" in sql:
                    wire.write_result([b"0", None])
                elif "CURRENT_ROLE()" in sql:  # max_connections and the role, at connect
                    wire.write_result([b"151", None])
                elif sql.count("@@") > 1:
                    wire.write_result([b"0"] * sql.count("@@"))
                else:
                    wire.write_result([b"28800"])
            else:
                wire.write(_ok())


class _Wire:
    """Packets on one client socket, with their sequence numbers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = -1

    def _exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("client closed the connection")
            data += chunk
        return data

    def read(self) -> bytes:
        header = self._exactly(4)
        length = int.from_bytes(header[:3], "little")
        self.seq = header[3]
        return self._exactly(length)

    def write(self, payload: bytes) -> None:
        self.seq = (self.seq + 1) & 0xFF
        self.sock.sendall(_packet(self.seq, payload))

    def write_result(self, values: list[bytes | None]) -> None:
        """One row of *values* (BIGINT when digits, else VARCHAR; None is NULL), columns v0, …"""
        eof = b"\xfe" + struct.pack("<HH", 0, STATUS_AUTOCOMMIT)
        self.write(bytes([len(values)]))
        for number, value in enumerate(values):
            kind = 0x08 if value is None or value.isdigit() else 0xFD  # BIGINT or VARCHAR
            self.write(_lenstr(b"def") + _lenstr(b"") * 3 + _lenstr(f"v{number}".encode())
                       + _lenstr(b"") + b"\x0c" + struct.pack("<HIBHB", 33, 255, kind, 0, 0)
                       + b"\0\0")
        self.write(eof)
        self.write(b"".join(b"\xfb" if value is None else _lenstr(value) for value in values))
        self.write(eof)


def _packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def _ok() -> bytes:
    return b"\x00\x00\x00" + struct.pack("<HH", STATUS_AUTOCOMMIT, 0)


def _lenstr(value: bytes) -> bytes:
    return bytes([len(value)]) + value  # short strings only (< 251 bytes)


def _lenenc(data: bytes) -> tuple[int, bytes]:
    first = data[0]
    if first < 0xFB:
        return first, data[1:]
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(data[1:1 + size], "little"), data[1 + size:]


@dataclass(frozen=True)
class Certificates:
    """PEM files made by :func:`make_certificates`."""

    ca: str  # the CA's certificate: what a client trusts (ssl_ca)
    cert: str  # the server's certificate, signed by the CA, for the hosts asked for
    key: str
    self_signed_cert: str  # a self-signed certificate for the same hosts (no CA trusts it)
    self_signed_key: str


def make_certificates(folder: str | os.PathLike[str],
                      hosts: t.Sequence[str] = ("127.0.0.1",)) -> Certificates:
    """A CA and a server certificate it signed for *hosts* (IP or DNS names), plus a
    self-signed one for the same hosts, as PEM files in *folder* (valid for two days)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    base = Path(folder)
    base.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def names(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def alt_names() -> x509.SubjectAlternativeName:
        entries: list[x509.GeneralName] = []
        for host in hosts:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                entries.append(x509.DNSName(host))
        return x509.SubjectAlternativeName(entries)

    def build(subject: x509.Name, issuer: x509.Name, public: t.Any, signer: t.Any,
              is_ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None),
                                  critical=True))
        if is_ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            builder = builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        else:
            builder = builder.add_extension(alt_names(), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def write(name: str, data: bytes) -> str:
        path = base / name
        path.write_bytes(data)
        return str(path)

    def key_pem(key: t.Any) -> bytes:
        return t.cast(bytes, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))

    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build(names("poolkit test CA"), names("poolkit test CA"), ca_key.public_key(), ca_key,
               True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(names(hosts[0]), ca.subject, key.public_key(), ca_key, False)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = build(names(hosts[0]), names(hosts[0]), rogue_key.public_key(), rogue_key, False)
    return Certificates(
        ca=write("ca.pem", ca.public_bytes(pem)),
        cert=write("server-cert.pem", cert.public_bytes(pem)),
        key=write("server-key.pem", key_pem(key)),
        self_signed_cert=write("self-signed-cert.pem", rogue.public_bytes(pem)),
        self_signed_key=write("self-signed-key.pem", key_pem(rogue_key)),
    )
