"""PyMySQL's PREFERRED TLS mode through the pool: a TLS context only for a server with TLS.

PyMySQL 1.2 builds a TLS context in ``Connection.__init__`` (~30-40 ms of CPU) before it knows
whether the server has TLS; poolkit hands it a stand-in that builds the one shared context on
first use. These tests run a fresh process against the shared server (TLS off: never built)
and a private mariadbd with a self-signed certificate (TLS on: the connection is encrypted).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

import pytest

from poolkit.testing.servers import PrivateServer, binaries_available
from poolkit.url import DatabaseURL

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
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[PrivateServer]:
    if not binaries_available() or shutil.which("openssl") is None:
        reason = "mariadbd / mariadb-install-db / openssl are not installed"
        if os.environ.get("POOLKIT_TEST_REQUIRE_DB") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    certs: Path = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(certs / "key.pem"),
                    "-out", str(certs / "cert.pem")], check=True, capture_output=True,
                   timeout=60)
    server = PrivateServer(1, prefix="poolkit-tls-", options=(
        f"--ssl-cert={certs / 'cert.pem'}", f"--ssl-key={certs / 'key.pem'}"))
    try:
        server.install()
        server.start()
        yield server
    finally:
        server.destroy()


def test_a_tls_server_gets_an_encrypted_connection(tls_server: PrivateServer) -> None:
    cipher, built = _probe(f"mysql://root:@{tls_server.address}/mysql")
    assert cipher != "" and built is True
