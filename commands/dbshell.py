"""``flask dbshell``: the ``mariadb`` (or ``mysql``) client, connected as the app connects.

Host, port, user and database come from the pool's URL (``--bind`` for another pool). The
password goes into a temporary defaults file readable only by the user (``0600``), named by
``--defaults-extra-file``, never onto the command line, where ``ps`` would show it; the file
is removed when the client exits, Ctrl-C included. Arguments after ``--`` go to the client.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import typing as t
from contextlib import contextmanager

import click

from poolkit.url import DatabaseURL

from ._cli import poolkit_state, with_poolkit_app

#: Tried in this order on PATH (MariaDB's ``mysql`` is a link to ``mariadb``).
CLIENTS = ("mariadb", "mysql")

# URL options with a client option of their own.
_CLIENT_OPTIONS = {"charset": "--default-character-set", "ssl_ca": "--ssl-ca",
                   "ssl_cert": "--ssl-cert", "ssl_key": "--ssl-key",
                   "connect_timeout": "--connect-timeout"}


def find_client() -> str | None:
    """The first of :data:`CLIENTS` on PATH."""
    for name in CLIENTS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _quote(value: str) -> str:
    """*value* as a double-quoted option-file value (the client undoes these escapes)."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


@contextmanager
def defaults_file(password: str) -> t.Iterator[str]:
    """A ``[client]`` option file holding *password*, mode 0600, removed afterwards."""
    fd, path = tempfile.mkstemp(prefix="poolkit-dbshell-", suffix=".cnf")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(f"[client]\npassword={_quote(password)}\n")
        yield path
    finally:
        os.unlink(path)


def client_args(client: str, url: DatabaseURL, extra: t.Sequence[str],
                defaults: str | None) -> list[str]:
    """The client's argv: never the password (that is in *defaults*)."""
    # The client reads --defaults-extra-file only as its very first argument.
    args = [client] + ([f"--defaults-extra-file={defaults}"] if defaults else [])
    socket = url.options.get("unix_socket")
    if socket:
        args.append(f"--socket={socket}")
    else:
        # TCP even for "localhost", which the client would otherwise take for its socket.
        args += [f"--host={url.host}", f"--port={url.port}", "--protocol=tcp"]
    if url.user:
        args.append(f"--user={url.user}")
    args += [f"{option}={url.options[key]}" for key, option in _CLIENT_OPTIONS.items()
             if url.options.get(key) is not None]
    args.append(f"--database={url.database}")
    return args + list(extra)


def run_client(args: list[str]) -> int:
    """Run the client in the foreground; its exit status (128 + N when signal N ended it)."""
    started: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, frame: t.Any) -> None:
        if not started:  # not running yet: stop here (the caller removes the file)
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        if signum != signal.SIGINT:
            started[0].send_signal(signum)
        # Ctrl-C reaches the client from the terminal too: it decides (a running query is
        # cancelled, the prompt stays), and we keep waiting for it.

    # A Python handler, not SIG_IGN: exec resets handled signals, so the client gets the
    # default Ctrl-C behaviour while ignored ones would stay ignored in it.
    caught = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s]
    previous = {number: signal.signal(number, on_signal) for number in caught}
    try:
        started.append(subprocess.Popen(args))
        code = started[0].wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - code if code < 0 else code


@click.command("dbshell")
@click.option("--bind", default="default", show_default=True,
              help="The pool whose database to open (a name in POOLKIT_BINDS).")
@click.option("-v", "--verbose", is_flag=True,
              help="Print the client's command line first (it holds no password).")
@click.argument("client_arguments", nargs=-1, type=click.UNPROCESSED)
@with_poolkit_app
def dbshell_command(bind: str, verbose: bool, client_arguments: tuple[str, ...]) -> None:
    """Open the mariadb/mysql client on the app's database, as the app's user.

    Arguments after -- go to the client; its exit status becomes this command's:

    \b
        flask dbshell
        flask dbshell --bind replica
        flask dbshell -- -N -e "SELECT COUNT(*) FROM employee"
        flask dbshell < dump.sql
    """
    url = poolkit_state().pool(bind).settings.url
    client = find_client()
    if client is None:
        raise click.ClickException(
            f"neither {' nor '.join(CLIENTS)} was found on PATH: install the MariaDB or MySQL "
            "command-line client (e.g. apt install mariadb-client)")
    try:
        if url.password:
            with defaults_file(url.password) as path:
                code = _run(client, url, client_arguments, path, verbose)
        else:
            code = _run(client, url, client_arguments, None, verbose)
    except KeyboardInterrupt:  # before the client started; the file is removed already
        code = 130
    raise SystemExit(code)


def _run(client: str, url: DatabaseURL, extra: t.Sequence[str], defaults: str | None,
         verbose: bool) -> int:
    args = client_args(client, url, extra, defaults)
    if verbose:
        click.echo(" ".join(args), err=True)
    return run_client(args)
