"""``flask dbshell``: the ``mariadb`` (or ``mysql``) client, connected as the app connects.

Host, port, user, database and TLS mode come from the pool's URL (``--bind`` for another
pool). The password reaches the client through a pipe it inherits, named as
``--defaults-extra-file=/dev/fd/N``: never on the command line (``ps`` shows it), in the
environment (``/proc/N/environ``) or in a file that a ``kill -9`` would leave behind. The
child's environment holds neither the URL nor any variable containing the password.

The URL's ``ssl_mode`` becomes the client's options: ``--ssl-mode`` for MySQL's client;
``--ssl``/``--skip-ssl`` and ``--ssl-verify-server-cert`` for MariaDB's (which then checks the
host name too, under VERIFY_CA as well). Below the VERIFY_* modes the MariaDB client loads its
plugins from a folder of links that leaves out the clear-text ones (``mysql_clear_password``,
``dialog``), so a rogue server cannot ask it for the password; MySQL's client refuses them
unless told ``--enable-cleartext-plugin``. Arguments after ``--`` go to the client.

MariaDB's client has no REQUIRED: a bare ``--ssl`` falls back to plain TCP when the server
has no TLS, and ``--ssl-verify-server-cert`` (its only enforcing option) also checks the
certificate, which REQUIRED does not. So under REQUIRED dbshell first connects through the pool
itself, which refuses a server without TLS with its own one line (2026), and starts the client
only when that connection is encrypted. Against a MariaDB server the client also gets an
``--init-command`` that ends its own session unless it is encrypted (a host list or a load
balancer could hand it another server than the pool's probe got).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import typing as t
from contextlib import contextmanager
from urllib.parse import quote

import click

from poolkit.app_commands import describe_error
from poolkit.errors import Error, PoolkitError
from poolkit.tls import CLEAR_TEXT_PLUGINS
from poolkit.url import DatabaseURL, mask_url

from ._cli import poolkit_state, with_poolkit_app

#: Tried in this order on PATH (MariaDB's ``mysql`` is a link to ``mariadb``).
CLIENTS = ("mariadb", "mysql")

# URL options with a client option of their own.
_CLIENT_OPTIONS = {"charset": "--default-character-set", "ssl_ca": "--ssl-ca",
                   "ssl_cert": "--ssl-cert", "ssl_key": "--ssl-key",
                   "connect_timeout": "--connect-timeout"}
#: Environment variables the client must not inherit: the app's settings (the URL and its
#: password) and the ones that would hand the password over or allow clear-text methods.
_DROPPED_ENV = ("MYSQL_PWD", "LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN")
#: Where libmariadb's client plugins live on common systems (mariadb_config --plugindir).
_PLUGIN_DIRS = ("/usr/lib/*/libmariadb3/plugin", "/usr/lib/*/mariadb*/plugin",
                "/usr/lib64/mariadb/plugin", "/usr/lib/mysql/plugin",
                "/usr/local/lib/mariadb/plugin", "/opt/homebrew/lib/mariadb/plugin")


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
def password_pipe(password: str) -> t.Iterator[int]:
    """The read end of a pipe holding a ``[client]`` option file with *password*.

    The whole file is written (and the write end closed) before the client starts: it is far
    below the pipe's buffer, and the client reads it to the end once. Nothing is on disk.
    """
    data = f"[client]\npassword={_quote(password)}\n".encode()
    if len(data) > 4096:  # POSIX guarantees PIPE_BUF (512+) and Linux 64 KiB; stay far below
        raise click.ClickException("the password is longer than 4000 bytes: dbshell cannot "
                                   "hand it to the client")
    read, write = os.pipe()
    try:
        os.write(write, data)
    finally:
        os.close(write)
    try:
        yield read
    finally:
        os.close(read)


def is_mariadb_client(client: str) -> bool:
    """True for MariaDB's client (its options differ from MySQL's ``--ssl-mode``)."""
    try:
        out = subprocess.run([client, "--version"], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return "mysql" not in os.path.basename(client) or "mariadb" in out.stdout.lower()


def system_plugin_dir() -> str | None:
    """libmariadb's client plugin folder, if it can be found."""
    try:
        out = subprocess.run(["mariadb_config", "--plugindir"], capture_output=True, text=True,
                             timeout=10, check=False)
        if out.returncode == 0 and os.path.isdir(out.stdout.strip()):
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    for pattern in _PLUGIN_DIRS:
        for folder in sorted(glob.glob(pattern)):
            if os.path.isfile(os.path.join(folder, "mysql_clear_password.so")):
                return folder
    return None


@contextmanager
def safe_plugin_dir() -> t.Iterator[str]:
    """A folder of links to libmariadb's plugins, without the clear-text ones (removed
    afterwards; it holds no secret). Empty when the system folder is not found: then every
    plugin not built into the client is refused, clear-text ones included."""
    folder = tempfile.mkdtemp(prefix="poolkit-plugins-")
    try:
        source = system_plugin_dir()
        blocked = {f"{name}.so" for name in CLEAR_TEXT_PLUGINS}
        for name in sorted(os.listdir(source)) if source else ():
            if name not in blocked:
                os.symlink(os.path.join(t.cast(str, source), name), os.path.join(folder, name))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


#: Run by the MariaDB client first under REQUIRED on a MariaDB server: no TLS, no session.
TLS_GUARD = ("IF (SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS "
             "WHERE VARIABLE_NAME = 'Ssl_cipher') = '' THEN SIGNAL SQLSTATE '08004' "
             "SET MESSAGE_TEXT = 'ssl_mode=REQUIRED: this session is not encrypted'; END IF")


def require_tls(pool: t.Any, name: str) -> bool:
    """Connect through *pool* (its REQUIRED refuses a server without TLS) and check that the
    session is encrypted; one line when not. True when the server is MariaDB."""
    try:
        with pool.connection() as conn:
            row = conn.query_one("SELECT VERSION() AS version")
            cipher = conn.query_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    except (Error, PoolkitError) as error:
        raise click.ClickException(f"pool {name!r}: {mask_url(describe_error(error))}"
                                   ) from None
    if not cipher or not str(cipher["Value"]):
        raise click.ClickException(f"pool {name!r}: ssl_mode=REQUIRED, but the server's "
                                   "session is not encrypted: dbshell did not start the client")
    return "mariadb" in str(row["version"] if row else "").lower()


def tls_args(url: DatabaseURL, mariadb: bool) -> list[str]:
    """The client's TLS options for the URL's ``ssl_mode`` and files."""
    mode = url.ssl_mode
    if not mariadb:
        return [] if mode == "PREFERRED" else [f"--ssl-mode={mode}"]
    return {"DISABLED": ["--skip-ssl"], "PREFERRED": [], "REQUIRED": ["--ssl"]}.get(
        mode, ["--ssl", "--ssl-verify-server-cert"])


def child_environment(url: DatabaseURL, environ: t.Mapping[str, str] | None = None
                      ) -> dict[str, str]:
    """*environ* (default: ours) without the app's settings or anything holding the password."""
    environ = os.environ if environ is None else environ
    secrets = {url.password, quote(url.password, safe="")} if url.password else set()
    return {k: v for k, v in environ.items()
            if not k.startswith("POOLKIT_") and k not in _DROPPED_ENV
            and not any(secret in v for secret in secrets)}


def client_args(client: str, url: DatabaseURL, extra: t.Sequence[str],
                defaults: str | None, *, mariadb: bool = True,
                plugin_dir: str | None = None, init_command: str | None = None) -> list[str]:
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
    args += tls_args(url, mariadb)
    if plugin_dir:
        args.append(f"--plugin-dir={plugin_dir}")
    if init_command:
        args.append(f"--init-command={init_command}")
    args.append(f"--database={url.database}")
    return args + list(extra)


def run_client(args: list[str], env: dict[str, str] | None = None,
               pass_fds: t.Sequence[int] = ()) -> int:
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
        started.append(subprocess.Popen(args, env=env, pass_fds=tuple(pass_fds)))
        code = started[0].wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - code if code < 0 else code


@click.command("dbshell")
@click.option("--bind", default="default", show_default=True,
              help="The pool whose database to open (a name in POOLKIT_BINDS).")
@click.option("-v", "--verbose", is_flag=True,
              help="Print the client's command line first, shell-quoted (it holds no password).")
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
    pool = poolkit_state().pool(bind)
    url = pool.settings.url
    client = find_client()
    if client is None:
        raise click.ClickException(
            f"neither {' nor '.join(CLIENTS)} was found on PATH: install the MariaDB or MySQL "
            "command-line client (e.g. apt install mariadb-client)")
    mariadb = is_mariadb_client(client)
    guard = None
    if mariadb and url.ssl_mode == "REQUIRED" and require_tls(pool, bind):
        guard = TLS_GUARD
    try:
        code = _run(client, url, client_arguments, verbose, mariadb, guard)
    except KeyboardInterrupt:  # before the client started; the pipe is closed already
        code = 130
    raise SystemExit(code)


def _run(client: str, url: DatabaseURL, extra: t.Sequence[str], verbose: bool,
         mariadb: bool, init_command: str | None) -> int:
    with contextlib.ExitStack() as stack:
        fds: list[int] = []
        defaults = None
        if url.password:
            fds.append(stack.enter_context(password_pipe(url.password)))
            defaults = f"/dev/fd/{fds[0]}"
        plugin_dir = None
        if mariadb and not url.tls.verified and not url.options.get("unix_socket"):
            plugin_dir = stack.enter_context(safe_plugin_dir())
        args = client_args(client, url, extra, defaults, mariadb=mariadb,
                           plugin_dir=plugin_dir, init_command=init_command)
        if verbose:
            click.echo(shlex.join(args), err=True)
        return run_client(args, child_environment(url), fds)
