"""A rogue server (tests/…/fakemysql) asks for the password in clear text, shows a self-signed
or wrong-host certificate, greets a byte at a time, asks for a local file: the pool, initdb,
pool-status and dbshell each refuse with one line, and the password never reaches it."""

from __future__ import annotations

import time
import typing as t

import pytest
from conftest import needs_mysqlclient

from poolkit import Pool, load_config
from poolkit.testing.fakemysql import Certificates, FakeMySQL, Scenario

from .conftest import Project

PASSWORD = "s3cret-pw"
DRIVERS = ["mysql", pytest.param("mysql+mysqldb", marks=needs_mysqlclient)]


def connect(url: str, scheme: str = "mysql") -> dict[str, t.Any] | None:
    """One query through a pool on *url*; the row, or the exception raised."""
    url = scheme + url[url.index("://"):]
    pool = Pool(load_config({"POOLKIT_DATABASE_URL": url}).pools["default"])
    try:
        with pool.connection() as conn:
            return conn.query_one("SELECT 1")  # the fake answers v0=28800
    finally:
        pool.close()


def refused(url: str, scheme: str = "mysql") -> str:
    with pytest.raises(Exception) as info:
        connect(url, scheme)
    return str(info.value)


# -- clear-text authentication -------------------------------------------------------------
@pytest.mark.parametrize("scheme", DRIVERS)
@pytest.mark.parametrize("auth", ["clear", "dialog"])
def test_clear_text_auth_is_refused_without_a_verified_certificate(scheme: str, auth: str) -> None:
    plugin = {"clear": "mysql_clear_password", "dialog": "dialog"}[auth]
    with FakeMySQL(Scenario(auth=auth)) as rogue:
        message = refused(rogue.url(), scheme)
    assert f"the server asks for {plugin}" in message
    assert f"refused to send the password to 127.0.0.1:{rogue.port}" in message
    assert not rogue.received(PASSWORD)
    assert rogue.sessions and PASSWORD not in message


def test_sha2_without_tls_may_not_take_the_rogues_rsa_key() -> None:
    # caching_sha2_password's full authentication without TLS: PyMySQL would ask the server
    # for its RSA key and encrypt the password with it; the rogue hands out its own.
    with FakeMySQL(Scenario(auth="sha2")) as rogue:
        message = refused(rogue.url())
    assert "asks for caching_sha2_password without TLS" in message
    assert "server_public_key" in message
    assert not rogue.received(PASSWORD)


def test_sha2_with_a_pinned_key_logs_in() -> None:
    with FakeMySQL(Scenario(auth="sha2")) as server:
        pool = Pool(load_config({"POOLKIT_DATABASE_URL": server.url(), "POOLKIT_CONNECT_ARGS": {
            "server_public_key": server.public_key_pem}}).pools["default"])
        try:
            with pool.connection() as conn:
                assert conn.query_one("SELECT 1") is not None
        finally:
            pool.close()
    assert server.received(PASSWORD)  # encrypted to the key the app trusts


@needs_mysqlclient
def test_mysqlclient_keeps_its_guard_when_a_temp_cleaner_removed_the_file(tmp_path: t.Any) -> None:
    # libmariadb ignores a missing option file: the guard's file is made again before each
    # connect, and one that holds something else is refused.
    import os

    from poolkit.tls import restricted_auth_file

    os.unlink(restricted_auth_file())
    with FakeMySQL(Scenario(auth="clear")) as rogue:
        assert "asks for mysql_clear_password" in refused(rogue.url(), "mysql+mysqldb")
        assert not rogue.received(PASSWORD)
        with open(restricted_auth_file(), "w") as file:
            file.write("[poolkit-restricted-auth]\n")
        try:
            assert "not poolkit's restricted-auth file" in refused(rogue.url(), "mysql+mysqldb")
        finally:
            os.unlink(restricted_auth_file())
    assert not rogue.received(PASSWORD)


@pytest.mark.parametrize("query", ["", "ssl_mode=REQUIRED", "ssl_ca={ca}&ssl_mode=REQUIRED"])
def test_a_self_signed_tls_session_does_not_make_clear_text_safe(
        certs: Certificates, query: str) -> None:
    rogue_tls = (certs.self_signed_cert, certs.self_signed_key)
    with FakeMySQL(Scenario(auth="clear", certificate=rogue_tls)) as rogue:
        message = refused(rogue.url(query=query.format(ca=certs.ca)))
    assert "asks for mysql_clear_password" in message
    assert rogue.sessions[0].tls  # encrypted, but to whom: the rogue holds the key
    assert not rogue.received(PASSWORD)


@pytest.mark.parametrize("scheme", DRIVERS)
def test_clear_text_goes_to_a_server_that_proved_who_it_is(certs: Certificates,
                                                            scheme: str) -> None:
    # The same request from a server whose certificate the CA signed for 127.0.0.1 (a PAM or
    # LDAP login on a real server): the password is sent, over TLS.
    with FakeMySQL(Scenario(auth="clear", certificate=(certs.cert, certs.key))) as server:
        row = connect(server.url(query=f"ssl_mode=VERIFY_IDENTITY&ssl_ca={certs.ca}"), scheme)
    assert row is not None and server.received(PASSWORD) and server.sessions[0].tls


# -- certificates --------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", DRIVERS)
@pytest.mark.parametrize("query", ["ssl_ca={ca}", "ssl_mode=VERIFY_CA&ssl_ca={ca}",
                                   "ssl_mode=VERIFY_IDENTITY&ssl_ca={ca}",
                                   "ssl_verify_cert=true&ssl_ca={ca}"])
def test_a_self_signed_certificate_is_refused(certs: Certificates, query: str,
                                              scheme: str) -> None:
    with FakeMySQL(Scenario(certificate=(certs.self_signed_cert, certs.self_signed_key))) as rogue:
        message = refused(rogue.url(query=query.format(ca=certs.ca)), scheme)
    assert "self-signed certificate" in message or "certificate verify failed" in message
    assert not rogue.sessions[0].tls and not rogue.sessions[0].finished


def test_a_certificate_for_another_host_passes_verify_ca_only(
        wrong_host_certs: Certificates) -> None:
    # The trusted CA signed it, for db.example: VERIFY_CA accepts it (it never checks the
    # host name, as docs/security.md says), VERIFY_IDENTITY refuses it.
    scenario = Scenario(certificate=(wrong_host_certs.cert, wrong_host_certs.key))
    ca = wrong_host_certs.ca
    with FakeMySQL(scenario) as server:
        assert connect(server.url(query=f"ssl_mode=VERIFY_CA&ssl_ca={ca}")) is not None
        message = refused(server.url(query=f"ssl_mode=VERIFY_IDENTITY&ssl_ca={ca}"))
    assert "IP address mismatch" in message or "doesn't match" in message, message


@needs_mysqlclient
@pytest.mark.parametrize("mode", ["VERIFY_CA", "VERIFY_IDENTITY"])
def test_mysqlclient_checks_the_host_name_in_both_verify_modes(
        wrong_host_certs: Certificates, mode: str) -> None:
    # libmariadb has one switch (verify the server certificate) and it includes the name.
    scenario = Scenario(certificate=(wrong_host_certs.cert, wrong_host_certs.key))
    with FakeMySQL(scenario) as server:
        message = refused(server.url(query=f"ssl_mode={mode}&ssl_ca={wrong_host_certs.ca}"),
                          "mysql+mysqldb")
    assert "Validation of SSL server certificate failed" in message


def test_every_host_of_a_multi_host_url_must_prove_itself(certs: Certificates) -> None:
    # A spoofed host first in the list: its self-signed certificate is refused, the next host
    # (signed by the CA) serves the pool.
    rogue = FakeMySQL(Scenario(auth="clear",
                               certificate=(certs.self_signed_cert, certs.self_signed_key)))
    real = FakeMySQL(Scenario(auth="clear", certificate=(certs.cert, certs.key)))
    with rogue, real:
        url = (f"mysql://app:{PASSWORD}@{rogue.address},{real.address}/shop"
               f"?ssl_mode=VERIFY_IDENTITY&ssl_ca={certs.ca}")
        assert connect(url) is not None
    assert not rogue.received(PASSWORD) and real.received(PASSWORD)


# -- the handshake deadline ----------------------------------------------------------------
def test_a_byte_a_time_greeting_is_cut_at_connect_timeout() -> None:
    # ~80 bytes, 0.5 s apart: 40 s of greeting, each read well within any per-read timeout.
    with FakeMySQL(Scenario(greeting_delay=0.5)) as slow:
        started = time.monotonic()
        message = refused(slow.url(query="connect_timeout=2"))
        took = time.monotonic() - started
    assert "the handshake did not finish within connect_timeout=2 s" in message
    assert 1.9 < took < 6, took


def test_deadlines_of_concurrent_connects_each_fire_on_time(database_url: str) -> None:
    # One watchdog serves every connect: slow handshakes with 1 s and 3 s deadlines, started
    # together and interleaved, each end at their own deadline, and connects to a real server
    # in between are never cut.
    import threading

    from poolkit.pool.drivers import get_driver

    driver = get_driver("pymysql")
    results: dict[str, tuple[float, str]] = {}

    def attempt(name: str, kwargs: dict[str, t.Any]) -> None:
        started = time.monotonic()
        try:
            driver.connect(kwargs).close()
            results[name] = (time.monotonic() - started, "ok")
        except Exception as error:
            results[name] = (time.monotonic() - started, str(error))

    real = load_config({"POOLKIT_DATABASE_URL": database_url}).pools["default"].driver_kwargs()
    with FakeMySQL(Scenario(greeting_delay=0.5)) as slow:
        threads = []
        for number in range(6):
            timeout = 1 if number % 2 else 3
            kwargs = load_config({"POOLKIT_DATABASE_URL": slow.url(
                query=f"connect_timeout={timeout}")}).pools["default"].driver_kwargs()
            threads.append(threading.Thread(target=attempt, args=(f"slow{number}", kwargs)))
            threads.append(threading.Thread(target=attempt, args=(f"real{number}", real)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    for number in range(6):
        took, outcome = results[f"slow{number}"]
        timeout = 1 if number % 2 else 3
        assert f"within connect_timeout={timeout} s" in outcome
        assert timeout - 0.1 < took < timeout + 2, (number, took)
        assert results[f"real{number}"][1] == "ok"


# -- LOAD DATA LOCAL -----------------------------------------------------------------------
def test_a_local_file_request_gets_nothing(tmp_path: t.Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("private key material\n")
    with FakeMySQL(Scenario(local_file=str(secret))) as rogue, pytest.raises(
            Exception, match="local_infile"):
        connect(rogue.url())
    assert rogue.sessions[0].file_contents in (None, b"")


# -- the commands --------------------------------------------------------------------------
COMMANDS = [("pool-status",), ("initdb",), ("pool-stress", "--seconds", "1"),
            ("dbshell", "--", "-e", "SELECT 1")]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_clear_text_request_in_one_line(
        project: Project, command: tuple[str, ...]) -> None:
    with FakeMySQL(Scenario(auth="clear")) as rogue:
        done = project.run(rogue.url(), *command)
    assert done.returncode != 0, done
    assert not rogue.received(PASSWORD), command
    assert rogue.sessions, "the command never reached the server"
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 or command[0] == "pool-status", done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    if command[0] != "dbshell":  # the client's own words differ
        assert "asks for mysql_clear_password" in done.stdout + done.stderr


def test_dbshell_refuses_a_self_signed_certificate_under_verify_ca(
        project: Project, certs: Certificates) -> None:
    scenario = Scenario(auth="clear", certificate=(certs.self_signed_cert, certs.self_signed_key))
    with FakeMySQL(scenario) as rogue:
        done = project.run(rogue.url(query=f"ssl_verify_cert=true&ssl_ca={certs.ca}"),
                           "dbshell", "--", "-e", "SELECT 1")
    assert done.returncode != 0
    assert not rogue.received(PASSWORD) and not rogue.sessions[0].tls
    assert "certificate" in done.stderr.lower(), done.stderr


@pytest.mark.parametrize("command", COMMANDS[:2])
def test_the_commands_send_no_local_file(project: Project, tmp_path: t.Any,
                                         command: tuple[str, ...]) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("private key material\n")
    with FakeMySQL(Scenario(local_file=str(secret))) as rogue:
        done = project.run(rogue.url(), *command)
    assert done.returncode == 1
    assert "local_infile option is false" in done.stderr.strip().splitlines()[-1]
    assert all(not session.file_contents for session in rogue.sessions)
