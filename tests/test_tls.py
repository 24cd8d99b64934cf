"""TLS through the pool on real servers: every ``ssl_mode``, both drivers, and dbshell.

A private mariadbd gets a certificate that a test CA signed for 127.0.0.1 (not for
``localhost``), so one server shows each mode's promise: VERIFY_CA refuses another CA's
server, VERIFY_IDENTITY also refuses the right CA's certificate for the wrong name.

PyMySQL 1.2 builds a TLS context in ``Connection.__init__`` (~30-40 ms of CPU) before it knows
whether the server has TLS; poolkit hands it a stand-in that builds the one shared context on
first use. Two tests run a fresh process against the shared server (TLS off: never built)
and the private one (TLS on: the connection is encrypted).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

import pytest

from poolkit import Pool, load_config
from poolkit.testing.fakemysql import Certificates, make_certificates
from poolkit.testing.servers import PrivateServer, binaries_available
from poolkit.url import DatabaseURL

USER, PASSWORD = "tls_app", "tls-secret"

PROBE = textwrap.dedent("""
    import sys
    from poolkit.config import load_config
    from poolkit.pool import Pool
    from poolkit.pool import pymysql_compat

    pool = Pool(load_config({"POOLKIT_DATABASE_URL": sys.argv[1]}).pools["default"])
    with pool.connection() as conn:
        cipher = conn.query_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        print(repr(cipher["Value"] if cipher else ""), pymysql_compat._ssl_context is not None)
""")


def _probe(url: str) -> tuple[str, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE, url], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    cipher, built = out.stdout.split()
    return t.cast(str, eval(cipher)), built == "True"


def test_no_tls_context_is_built_for_a_server_without_tls(poolkit_server: DatabaseURL,
                                                          database_url: str) -> None:
    cipher, built = _probe(database_url)
    if cipher:
        pytest.skip("this server has TLS on; the private-server test covers that case")
    assert built is False


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA that did not sign the server's certificate."""
    return make_certificates(tmp_path_factory.mktemp("tls-other")).ca


@pytest.fixture(scope="module")
def tls_server(certs: Certificates) -> t.Iterator[PrivateServer]:
    if not binaries_available():
        reason = "mariadbd / mariadb-install-db are not installed"
        if os.environ.get("POOLKIT_TEST_REQUIRE_DB") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    server = PrivateServer(1, prefix="poolkit-tls-", options=(
        f"--ssl-cert={certs.cert}", f"--ssl-key={certs.key}", f"--ssl-ca={certs.ca}"))
    try:
        server.install()
        server.start()
        for host in ("%", "localhost"):
            server.execute(f"CREATE USER '{USER}'@'{host}' IDENTIFIED BY '{PASSWORD}'",
                           f"GRANT ALL ON mysql.* TO '{USER}'@'{host}'")
        yield server
    finally:
        server.destroy()


def cipher(url: str) -> str:
    """The TLS cipher of one pooled connection to *url* ('' when not encrypted)."""
    pool = Pool(load_config({"POOLKIT_DATABASE_URL": url}).pools["default"])
    try:
        with pool.connection() as conn:
            row = conn.query_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            return str(row["Value"]) if row else ""
    finally:
        pool.close()


def mode_url(server: PrivateServer, scheme: str, query: str, host: str = "127.0.0.1") -> str:
    return f"{scheme}://{USER}:{PASSWORD}@{host}:{server.port}/mysql?{query}"


DRIVERS = ["mysql", pytest.param("mysql+mysqldb", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("MySQLdb"), reason="mysqlclient not installed"))]


@pytest.mark.parametrize("scheme", DRIVERS)
@pytest.mark.parametrize(("query", "encrypted"), [
    ("ssl_mode=DISABLED", False),
    ("ssl_mode=REQUIRED", True),
    ("ssl_mode=VERIFY_CA&ssl_ca={ca}", True),
    ("ssl_mode=VERIFY_IDENTITY&ssl_ca={ca}", True),
    ("ssl_ca={ca}", True),  # VERIFY_CA
    ("ssl_verify_cert=true&ssl_ca={ca}", True),  # VERIFY_CA
    ("ssl_verify_identity=true&ssl_ca={ca}", True),  # VERIFY_IDENTITY
])
def test_each_mode_connects_to_the_server_that_proves_itself(
        tls_server: PrivateServer, certs: Certificates, scheme: str, query: str,
        encrypted: bool) -> None:
    got = cipher(mode_url(tls_server, scheme, query.format(ca=certs.ca)))
    assert bool(got) is encrypted, got


def test_preferred_encrypts_when_the_server_offers_tls(tls_server: PrivateServer) -> None:
    assert cipher(mode_url(tls_server, "mysql", "ssl_mode=PREFERRED")) != ""


@pytest.mark.parametrize("scheme", DRIVERS)
@pytest.mark.parametrize("query", ["ssl_ca={other}", "ssl_mode=VERIFY_CA&ssl_ca={other}",
                                   "ssl_mode=VERIFY_IDENTITY&ssl_ca={other}",
                                   "ssl_mode=VERIFY_CA"])  # the system's CAs did not sign it
def test_verify_modes_refuse_a_certificate_another_ca_signed(
        tls_server: PrivateServer, other_ca: str, scheme: str, query: str) -> None:
    with pytest.raises(Exception, match=r"certif|SSL|TLS"):
        cipher(mode_url(tls_server, scheme, query.format(other=other_ca)))


def test_verify_identity_checks_the_host_name_and_verify_ca_does_not(
        tls_server: PrivateServer, certs: Certificates) -> None:
    # The certificate names 127.0.0.1; "localhost" reaches the same server under another name.
    query = f"ssl_ca={certs.ca}&ssl_mode="
    assert cipher(mode_url(tls_server, "mysql", query + "VERIFY_CA", "localhost")) != ""
    with pytest.raises(Exception, match=r"mismatch|match"):
        cipher(mode_url(tls_server, "mysql", query + "VERIFY_IDENTITY", "localhost"))


def test_every_host_of_a_list_is_verified(tls_server: PrivateServer, certs: Certificates) -> None:
    # localhost first (wrong name under VERIFY_IDENTITY: refused), then 127.0.0.1 (right).
    url = (f"mysql://{USER}:{PASSWORD}@localhost:{tls_server.port},127.0.0.1:{tls_server.port}"
           f"/mysql?ssl_mode=VERIFY_IDENTITY&ssl_ca={certs.ca}")
    pool = Pool(load_config({"POOLKIT_DATABASE_URL": url}).pools["default"])
    try:
        with pool.connection() as conn:
            assert conn.query_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'")["Value"]
        hosts = {h["host"]: h["error"] for h in pool.hosts.describe()}
        assert hosts[f"localhost:{tls_server.port}"], hosts
    finally:
        pool.close()


FLASK = str(Path(sys.executable).with_name("flask"))


@pytest.mark.parametrize(("query", "ok"), [("ssl_mode=VERIFY_IDENTITY&ssl_ca={ca}", True),
                                           ("ssl_mode=VERIFY_CA&ssl_ca={other}", False)])
def test_dbshell_verifies_as_the_pool_does(tls_server: PrivateServer, certs: Certificates,
                                           other_ca: str, tmp_path: Path, query: str,
                                           ok: bool) -> None:
    (tmp_path / "app.py").write_text("from flask import Flask\nfrom poolkit import Poolkit\n"
                                     "app = Flask(__name__)\nPoolkit(app)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "POOLKIT_"))}
    env.update(FLASK_APP="app", POOLKIT_DATABASE_URL=mode_url(
        tls_server, "mysql", query.format(ca=certs.ca, other=other_ca)))
    done = subprocess.run([FLASK, "dbshell", "--", "-N", "-e",
                           "SHOW SESSION STATUS LIKE 'Ssl_cipher'"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    if ok:
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\t")[1].strip() != ""
    else:
        assert done.returncode == 1 and "certificate" in done.stderr.lower(), done.stderr


@pytest.mark.parametrize(("mode", "encrypted"), [("REQUIRED", True), ("PREFERRED", True),
                                                 ("DISABLED", False)])
def test_dbshell_under_each_unverified_mode(tls_server: PrivateServer, tmp_path: Path,
                                            mode: str, encrypted: bool) -> None:
    # REQUIRED: the pool's probe is encrypted, the client's --ssl session too (and its guard
    # lets an encrypted session through).
    (tmp_path / "app.py").write_text("from flask import Flask\nfrom poolkit import Poolkit\n"
                                     "app = Flask(__name__)\nPoolkit(app)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "POOLKIT_"))}
    env.update(FLASK_APP="app",
               POOLKIT_DATABASE_URL=mode_url(tls_server, "mysql", f"ssl_mode={mode}"))
    done = subprocess.run([FLASK, "dbshell", "-v", "--", "-N", "-e",
                           "SHOW SESSION STATUS LIKE 'Ssl_cipher'"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (done.stdout.split("\t")[1].strip() != "") is encrypted, done.stdout
    assert ("--init-command=" in done.stderr) is (mode == "REQUIRED"), done.stderr


def test_a_tls_server_gets_an_encrypted_connection(tls_server: PrivateServer) -> None:
    encrypted, built = _probe(f"mysql://root:@{tls_server.address}/mysql")
    assert encrypted != "" and built is True
