"""``flask dbshell``: the real client, on a real user with a password that never reaches argv.

The client on PATH is a small wrapper script that records its argv (and the mode of the
defaults file it was given) and then execs the real ``mariadb``/``mysql``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import typing as t
from pathlib import Path
from urllib.parse import quote

import pytest

from poolkit.commands.dbshell import client_args
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
    case "$1" in --defaults-extra-file=*)
        stat -c %a "${{1#--defaults-extra-file=}}" > "$ARGV_FILE.mode"
        cat "${{1#--defaults-extra-file=}}" > "$ARGV_FILE.cnf";;
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


@pytest.fixture
def user_url(database_url: str, admin: t.Any) -> t.Iterator[str]:
    """A URL for a new server user that has a password and rights on the session database."""
    server = parse_url(database_url)
    name = f"poolkit_shell_{secrets.token_hex(3)}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (PASSWORD,))
        cur.execute(f"GRANT ALL ON `{server.database}`.* TO '{name}'@'%'")
    try:
        yield (f"mysql://{name}:{quote(PASSWORD, safe='')}@{server.host}:{server.port}/"
               f"{server.database}")
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")


@pytest.fixture
def shell(tmp_path: Path, user_url: str) -> Shell:
    return Shell(tmp_path / "proj", user_url)


def test_runs_the_query_as_the_apps_user(shell: Shell, database_url: str) -> None:
    done = shell.run("--", "-N", "-e", "SELECT 6*7, DATABASE(), CURRENT_USER()")
    assert done.returncode == 0, done.stderr
    database = parse_url(database_url).database
    user = parse_url(shell.url).user
    assert done.stdout == f"42\t{database}\t{user}@%\n"


def test_the_password_never_reaches_argv(shell: Shell) -> None:
    done = shell.run("--", "-N", "-e", "SELECT 1")
    assert done.returncode == 0, done.stderr
    argv = shell.argv()
    assert argv[1].startswith("--defaults-extra-file=")  # the client reads it only there
    assert not [a for a in argv if PASSWORD in a or quote(PASSWORD, safe="") in a]
    url = parse_url(shell.url)
    assert argv[2:] == [f"--host={url.host}", f"--port={url.port}", "--protocol=tcp",
                        f"--user={url.user}", f"--database={url.database}", "-N", "-e",
                        "SELECT 1"]
    assert shell.argv_file.with_suffix(".mode").read_text().strip() == "600"
    assert PASSWORD not in done.stdout + done.stderr
    # The file held the password while the client ran, and is gone now.
    assert "[client]" in shell.argv_file.with_suffix(".cnf").read_text()
    assert not Path(argv[1].partition("=")[2]).exists()


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
        while not shell.argv_file.with_suffix(".cnf").exists() or not shell.argv_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the client did not start"
            time.sleep(0.05)
        defaults = Path(shell.argv()[1].partition("=")[2])
        assert stat.S_IMODE(defaults.stat().st_mode) == 0o600
        time.sleep(0.2)  # let sh exec sleep
        os.killpg(process.pid, signal.SIGINT)
        err = process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert not defaults.exists()


def test_socket_and_url_options_become_client_options() -> None:
    url = parse_url("mysql://app:pw@db.example:3307/shop?unix_socket=/run/my.sock"
                    "&charset=utf8mb4&ssl_ca=/etc/ca.pem&connect_timeout=5")
    assert isinstance(url, DatabaseURL)
    assert client_args("mysql", url, ["-N"], "/tmp/x.cnf") == [
        "mysql", "--defaults-extra-file=/tmp/x.cnf", "--socket=/run/my.sock", "--user=app",
        "--default-character-set=utf8mb4", "--ssl-ca=/etc/ca.pem", "--connect-timeout=5",
        "--database=shop", "-N"]
