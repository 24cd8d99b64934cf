"""``flask dbshell``: the real client, on a real user with a password that never reaches argv.

The client on PATH is a small wrapper script that records its argv, its environment and what
kind of file its defaults file is (it must not read it: that would drain the pipe), then execs
the real ``mariadb``/``mysql``. Every test runs on the shared server and on a stock server
whose anonymous ``''@localhost`` accounts would win over ``'user'@'%'`` (name resolution on).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import typing as t
from pathlib import Path
from urllib.parse import quote

import pytest

from poolkit.commands.dbshell import TLS_GUARD, child_environment, client_args
from poolkit.testing.plugin import admin_connect
from poolkit.testing.servers import PrivateServer, binaries_available
from poolkit.url import DatabaseURL, parse_url

FLASK = str(Path(sys.executable).with_name("flask"))
# Quotes, backslash, '#', spaces: everything an option file could get wrong.
PASSWORD = "s3\"cr'et\\ #pa ss=1"
APP = """
    import os
    from flask import Flask
    from poolkit import Poolkit

    app = Flask(__name__)
    if os.environ.get("OTHER_URL"):
        app.config["POOLKIT_BINDS"] = {"other": os.environ["OTHER_URL"]}
    Poolkit(app)
"""
WRAPPER = """\
    #!/bin/sh
    # Record argv (NUL-separated) and the defaults file's mode, then run the real client.
    printf '%s\\0' "$0" "$@" > "$ARGV_FILE"
    env > "$ARGV_FILE.env"
    case "$1" in --defaults-extra-file=*)
        stat -L -c %F "${{1#--defaults-extra-file=}}" > "$ARGV_FILE.kind";;
    esac
    if [ -n "$FAKE_CLIENT" ]; then exec sh -c "$FAKE_CLIENT"; fi
    exec {real} "$@"
"""


class Shell:
    """A project with app.py, a wrapper client first on PATH, and a way to run dbshell."""

    def __init__(self, root: Path, url: str) -> None:
        real = shutil.which("mariadb") or shutil.which("mysql")
        assert real, "the tests need the mariadb or mysql client on PATH"
        self.root = root
        self.url = url
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        wrapper = self.bin / "mariadb"
        wrapper.write_text(textwrap.dedent(WRAPPER.format(real=real)))
        wrapper.chmod(0o755)
        self.argv_file = root / "argv"
        (root / "app.py").write_text(textwrap.dedent(APP))

    def env(self, **extra: str) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("FLASK_", "POOLKIT_", "MYSQL"))}
        environ.update(POOLKIT_DATABASE_URL=self.url, ARGV_FILE=str(self.argv_file),
                       PATH=f"{self.bin}{os.pathsep}{environ.get('PATH', '')}")
        environ.update(extra)
        return environ

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLASK, "dbshell", *args], cwd=self.root, env=self.env(**env),
                              capture_output=True, text=True, timeout=120)

    def argv(self) -> list[str]:
        return self.argv_file.read_bytes().decode().split("\0")[:-1]


#: A user is created for both: an anonymous ''@'localhost' is more specific than 'user'@'%'
#: and would take the login of a client that the server sees as localhost.
USER_HOSTS = ("%", "localhost")


@pytest.fixture(scope="module")
def stock_server() -> t.Iterator[PrivateServer]:
    """A private server as mariadb-install-db leaves many laptops: anonymous accounts, names
    resolved (127.0.0.1 is 'localhost')."""
    if not binaries_available():
        if os.environ.get("POOLKIT_TEST_REQUIRE_DB") == "1":
            pytest.fail("mariadbd / mariadb-install-db are not installed")
        pytest.skip("mariadbd / mariadb-install-db are not installed")
    server = PrivateServer(31, prefix="poolkit-stock-", options=("--skip-name-resolve=OFF",))
    try:
        server.install()
        server.start()
        hosts = {row[0] for row in server.execute("SELECT host FROM mysql.user")}
        for host in hosts | {"localhost"}:  # the anonymous accounts, where install-db skipped them
            server.execute(f"CREATE USER IF NOT EXISTS ''@'{host}'")
        server.execute("CREATE DATABASE shell_test")
        yield server
    finally:
        server.destroy()


@pytest.fixture(params=["shared", "stock"])
def server_url(request: pytest.FixtureRequest, database_url: str) -> str:
    """Root's URL on the shared server or on the stock one."""
    if request.param == "shared":
        return database_url
    stock: PrivateServer = request.getfixturevalue("stock_server")
    return f"mysql://root:@{stock.address}/shell_test"


@pytest.fixture
def user_url(server_url: str) -> t.Iterator[str]:
    """A URL for a new server user that has a password and rights on the session database."""
    server = parse_url(server_url)
    name = f"poolkit_shell_{secrets.token_hex(3)}"
    admin = admin_connect(server)
    try:
        with admin.cursor() as cur:
            for host in USER_HOSTS:
                cur.execute(f"CREATE USER '{name}'@'{host.replace('%', '%%')}' "
                            "IDENTIFIED BY %s", (PASSWORD,))
                cur.execute(f"GRANT ALL ON `{server.database}`.* TO '{name}'@'{host}'")
        yield (f"mysql://{name}:{quote(PASSWORD, safe='')}@{server.host}:{server.port}/"
               f"{server.database}")
    finally:
        with admin.cursor() as cur:
            for host in USER_HOSTS:
                cur.execute(f"DROP USER IF EXISTS '{name}'@'{host}'")
        admin.close()


@pytest.fixture
def shell(tmp_path: Path, user_url: str) -> Shell:
    return Shell(tmp_path / "proj", user_url)


def test_runs_the_query_as_the_apps_user(shell: Shell, server_url: str) -> None:
    done = shell.run("--", "-N", "-e", "SELECT 6*7, DATABASE(), CURRENT_USER()")
    assert done.returncode == 0, done.stderr
    database = parse_url(server_url).database
    user = parse_url(shell.url).user
    assert done.stdout in {f"42\t{database}\t{user}@{host}\n" for host in USER_HOSTS}


def test_a_stock_server_would_give_a_user_at_percent_to_the_anonymous_account(
        stock_server: PrivateServer) -> None:
    # Why USER_HOSTS has 'localhost': with only 'user'@'%' the stock server refuses the login.
    stock_server.execute("CREATE USER 'only_percent'@'%' IDENTIFIED BY 'pw'")
    try:
        with pytest.raises(Exception, match="1045"):
            stock_server.connect(user="only_percent", password="pw").close()
    finally:
        stock_server.execute("DROP USER 'only_percent'@'%'")


def test_the_password_never_reaches_argv(shell: Shell) -> None:
    done = shell.run("--", "-N", "-e", "SELECT 1")
    assert done.returncode == 0, done.stderr
    argv = shell.argv()
    assert argv[1].startswith("--defaults-extra-file=")  # the client reads it only there
    assert not [a for a in argv if PASSWORD in a or quote(PASSWORD, safe="") in a]
    url = parse_url(shell.url)
    assert argv[2:6] == [f"--host={url.host}", f"--port={url.port}", "--protocol=tcp",
                         f"--user={url.user}"]
    assert argv[6].startswith("--plugin-dir=")  # PREFERRED: no clear-text plugins
    assert argv[7:] == [f"--database={url.database}", "-N", "-e", "SELECT 1"]
    # The password came through an inherited pipe: nothing on disk, nothing left behind.
    assert argv[1].startswith("--defaults-extra-file=/dev/fd/")
    assert shell.argv_file.with_suffix(".kind").read_text().strip() == "fifo"
    assert PASSWORD not in done.stdout + done.stderr


def test_the_child_environment_holds_no_url_or_password(shell: Shell) -> None:
    done = shell.run("--", "-N", "-e", "SELECT 1", APP_SECRET=f"x{PASSWORD}x", MYSQL_PWD="p")
    assert done.returncode == 0, done.stderr
    env = shell.argv_file.with_suffix(".env").read_text()
    assert "POOLKIT_DATABASE_URL" not in env and "MYSQL_PWD" not in env
    assert "APP_SECRET" not in env and PASSWORD not in env
    assert "PATH=" in env  # the rest is inherited
    url = parse_url(shell.url)
    assert child_environment(url, {"A": quote(PASSWORD, safe=""), "B": "b"}) == {"B": "b"}


def test_the_clients_exit_status_is_ours(shell: Shell) -> None:
    failed = shell.run("--", "-e", "SELECT * FROM no_such_table")
    assert failed.returncode == 1
    assert "ERROR 1146" in failed.stderr and "no_such_table" in failed.stderr
    assert shell.run(FAKE_CLIENT="exit 7").returncode == 7


def test_bind_picks_another_pool_and_no_password_means_no_file(
        shell: Shell, make_database: t.Callable[[], str]) -> None:
    other = make_database()
    done = shell.run("--bind", "other", "-v", "--", "-N", "-e", "SELECT DATABASE()",
                     OTHER_URL=other)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{parse_url(other).database}\n"
    assert "--defaults-extra-file" not in done.stderr  # root has no password: nothing to hide
    assert f"--database={parse_url(other).database}" in done.stderr
    unknown = shell.run("--bind", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines()[-1].startswith("Error: no pool named 'nope'")


def test_no_client_on_path_is_one_line_naming_both(shell: Shell, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = shell.run(PATH=str(empty))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "neither mariadb nor mysql was found on PATH" in done.stderr


def test_ctrl_c_removes_the_file_and_exits_130(shell: Shell) -> None:
    # The terminal sends Ctrl-C to the whole foreground group: flask waits, the client dies.
    process = subprocess.Popen([FLASK, "dbshell"], cwd=shell.root,
                               env=shell.env(FAKE_CLIENT="exec sleep 60"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not shell.argv_file.with_suffix(".kind").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the client did not start"
            time.sleep(0.05)
        assert shell.argv()[1].startswith("--defaults-extra-file=/dev/fd/")
        time.sleep(0.2)  # let sh exec sleep
        os.killpg(process.pid, signal.SIGINT)
        err = process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err


def test_kill_9_leaves_no_password_file(shell: Shell, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = subprocess.Popen([FLASK, "dbshell"], cwd=shell.root,
                               env=shell.env(FAKE_CLIENT="exec sleep 60", TMPDIR=str(tmp)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not shell.argv_file.with_suffix(".kind").exists():
            assert time.monotonic() < deadline, "the client did not start"
            time.sleep(0.05)
        process.kill()  # flask dies; the client runs on
        process.wait(10)
        # Only the plugin folder's links (no secret) can stay behind; no file holds the password.
        leftovers = list(tmp.rglob("*"))
        assert [p for p in leftovers if p.is_file() and not p.is_symlink()] == []
        assert all(p.parent.name.startswith("poolkit-plugins-") for p in leftovers
                   if p.is_symlink())
    finally:
        os.killpg(process.pid, signal.SIGKILL)


def test_socket_and_url_options_become_client_options() -> None:
    url = parse_url("mysql://app:pw@db.example:3307/shop?unix_socket=/run/my.sock"
                    "&charset=utf8mb4&ssl_ca=/etc/ca.pem&connect_timeout=5")
    assert isinstance(url, DatabaseURL)
    assert client_args("mysql", url, ["-N"], "/dev/fd/3") == [
        "mysql", "--defaults-extra-file=/dev/fd/3", "--socket=/run/my.sock", "--user=app",
        "--default-character-set=utf8mb4", "--ssl-ca=/etc/ca.pem", "--connect-timeout=5",
        "--ssl", "--ssl-verify-server-cert", "--database=shop", "-N"]


@pytest.mark.parametrize(("query", "mariadb", "mysql"), [
    ("", [], []),
    ("ssl_mode=DISABLED", ["--skip-ssl"], ["--ssl-mode=DISABLED"]),
    ("ssl_mode=REQUIRED", ["--ssl"], ["--ssl-mode=REQUIRED"]),  # + the probe and the guard
    ("ssl_mode=VERIFY_CA", ["--ssl", "--ssl-verify-server-cert"], ["--ssl-mode=VERIFY_CA"]),
    ("ssl_verify_cert=true", ["--ssl", "--ssl-verify-server-cert"], ["--ssl-mode=VERIFY_CA"]),
    ("ssl_mode=VERIFY_IDENTITY", ["--ssl", "--ssl-verify-server-cert"],
     ["--ssl-mode=VERIFY_IDENTITY"]),
])
def test_the_tls_mode_becomes_the_clients(query: str, mariadb: list[str],
                                          mysql: list[str]) -> None:
    url = parse_url(f"mysql://app:pw@db.example/shop?{query}")
    base = ["c", "--host=db.example", "--port=3306", "--protocol=tcp", "--user=app"]
    assert client_args("c", url, [], None) == [*base, *mariadb, "--database=shop"]
    assert client_args("c", url, [], None, mariadb=False) == [*base, *mysql, "--database=shop"]


def test_verbose_prints_the_command_line_shell_quoted(shell: Shell) -> None:
    done = shell.run("-v", "--", "-N", "-e", "SELECT 'a b'")
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.endswith("-N -e 'SELECT '\"'\"'a b'\"'\"''"), first
    assert PASSWORD not in done.stderr


def test_a_plugin_the_client_loads_from_its_folder_still_works(
        stock_server: PrivateServer, tmp_path: Path) -> None:
    # Below VERIFY_* the client gets a plugin folder without the clear-text plugins; ed25519
    # (a plugin file like them) must still load through its link there.
    if not stock_server.execute("SELECT COUNT(*) FROM information_schema.PLUGINS "
                                "WHERE PLUGIN_NAME = 'ed25519'")[0][0]:
        stock_server.execute("INSTALL SONAME 'auth_ed25519'")
    stock_server.execute(
        "CREATE USER 'ed_user'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-Secret1')",
        "CREATE USER 'ed_user'@'localhost' IDENTIFIED VIA ed25519 USING PASSWORD('ed-Secret1')",
        "GRANT ALL ON shell_test.* TO 'ed_user'@'%'",
        "GRANT ALL ON shell_test.* TO 'ed_user'@'localhost'")
    try:
        shell = Shell(tmp_path / "ed", f"mysql://ed_user:ed-Secret1@{stock_server.address}"
                                       "/shell_test")
        done = shell.run("--", "-N", "-e", "SELECT CURRENT_USER()")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("ed_user@")
        assert any(a.startswith("--plugin-dir=") for a in shell.argv())
    finally:
        stock_server.execute("DROP USER 'ed_user'@'%'", "DROP USER 'ed_user'@'localhost'")


CIPHER = ("--", "-N", "-e", "SHOW SESSION STATUS LIKE 'Ssl_cipher'")


def test_required_on_a_server_without_tls_is_one_line_and_no_session(
        tmp_path: Path, user_url: str) -> None:
    # MariaDB's client falls back to plain TCP with a bare --ssl: the pool refuses first.
    done = Shell(tmp_path / "proj", f"{user_url}?ssl_mode=REQUIRED").run(*CIPHER)
    assert (done.returncode, done.stdout) == (1, ""), done.stdout
    assert done.stderr.splitlines() == [
        "Error: pool 'default': 2026 SSL is required but the server doesn't support it"]


@pytest.mark.parametrize("mode", ["PREFERRED", "DISABLED"])
def test_preferred_and_disabled_open_a_plain_session_on_a_server_without_tls(
        tmp_path: Path, user_url: str, mode: str) -> None:
    done = Shell(tmp_path / "proj", f"{user_url}?ssl_mode={mode}").run(*CIPHER)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Ssl_cipher\t\n"


def test_the_tls_guard_ends_a_plain_session(server_url: str) -> None:
    # What the client runs first under REQUIRED when another server than the probe's answers.
    server = parse_url(server_url)
    client = shutil.which("mariadb") or shutil.which("mysql")
    assert client
    done = subprocess.run([client, f"--host={server.host}", f"--port={server.port}",
                           "--protocol=tcp", f"--user={server.user}", "--skip-ssl",
                           f"--init-command={TLS_GUARD}", "-N", "-e", "SELECT 42"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "42" not in done.stdout
    assert "ssl_mode=REQUIRED: this session is not encrypted" in done.stderr
