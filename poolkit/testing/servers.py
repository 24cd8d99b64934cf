"""Private MariaDB servers for tests: a primary and its replica, a Galera cluster, on loopback.

Tests that change a server's role, stop replication or kill a server cannot use the shared
test server. :class:`PrivateServer` runs ``mariadb-install-db`` into a temporary directory and
starts a ``mariadbd`` of its own on a free ``127.0.0.1`` port; :func:`start_replication_pair`
starts two and connects them (GTID replication, ``MASTER_USE_GTID=slave_pos``). Every wait is
bounded, and :meth:`PrivateServer.destroy` kills the process and removes its directory.
:func:`start_galera_cluster` starts three ``mariadbd`` nodes with Debian's ``galera-4``
provider (rsync state transfer) that form one synced cluster, about 15 s.

The application user that the pair creates has no ``SUPER`` or ``READ ONLY ADMIN``: MariaDB
lets those write through ``read_only``, which would hide exactly what the tests look for.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import typing as t
from dataclasses import dataclass

APP_USER = "poolkit_app"
APP_PASSWORD = "app-secret"
REPL_USER = "poolkit_repl"
REPL_PASSWORD = "repl-secret"
DATABASE = "poolkit_repl"


_live: set[PrivateServer] = set()


@atexit.register
def _destroy_leftovers() -> None:
    # A run that ends without its fixtures' finalizers (sys.exit in a thread, a crash of
    # pytest itself) must not leave servers running or data directories behind.
    for server in list(_live):
        server.destroy()


class ServerError(RuntimeError):
    """A private server could not be set up; the message holds the end of its error log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binaries_available() -> bool:
    """True when ``mariadbd`` and ``mariadb-install-db`` are on PATH (or in /usr/sbin)."""
    return _find("mariadbd") is not None and _find("mariadb-install-db") is not None


def _find(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


class PrivateServer:
    """One ``mariadbd`` in a temporary directory, on its own 127.0.0.1 port."""

    def __init__(self, server_id: int, *, read_only: bool = False, prefix: str = "poolkit-db-",
                 options: t.Sequence[str] = (), port: int = 0, user: str | None = None) -> None:
        self.server_id = server_id
        self.user = user or _user()  # the account mariadbd runs as
        self.read_only = read_only
        self.options = tuple(options)  # more mariadbd options (--ssl-cert=…)
        self.basedir = tempfile.mkdtemp(prefix=prefix)
        self.datadir = os.path.join(self.basedir, "data")
        self.tmpdir = os.path.join(self.basedir, "tmp")
        os.makedirs(self.tmpdir)
        if user is not None and os.geteuid() == 0:
            _give_to(user, self.basedir, self.tmpdir)
        self.port = port  # 0: a free one at start()
        self.process: subprocess.Popen[bytes] | None = None
        _live.add(self)

    @property
    def error_log(self) -> str:
        return os.path.join(self.basedir, "error.log")

    def _log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.error_log, errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return "(no error log)"

    def install(self, timeout: float = 60.0) -> None:
        """Create the system tables (``mariadb-install-db``), root without a password."""
        install = _find("mariadb-install-db")
        if install is None:
            raise ServerError("mariadb-install-db is not installed (apt install mariadb-server)")
        for _attempt in range(2):
            result = subprocess.run(
                [install, "--no-defaults", "--auth-root-authentication-method=normal",
                 f"--datadir={self.datadir}", "--skip-test-db", "--user=" + self.user],
                capture_output=True, timeout=timeout, check=False)
            if result.returncode == 0:
                return
            # A bootstrap that crashed (seen once under heavy load): once more, from scratch.
            shutil.rmtree(self.datadir, ignore_errors=True)
        raise ServerError("mariadb-install-db failed twice: "
                          + result.stderr.decode(errors="replace")[-2000:])

    def start(self, timeout: float = 30.0) -> None:
        """Start ``mariadbd`` on a free port and wait (bounded) until it answers."""
        binary = _find("mariadbd")
        if binary is None:
            raise ServerError("mariadbd is not installed (apt install mariadb-server)")
        self.port = self.port or free_port()
        args = [
            binary, "--no-defaults", f"--user={self.user}", f"--datadir={self.datadir}",
            f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--socket={os.path.join(self.basedir, 'mysqld.sock')}",
            f"--pid-file={os.path.join(self.basedir, 'mysqld.pid')}",
            # Its own tmpdir: never share internal temporary files with the machine's server.
            f"--tmpdir={self.tmpdir}",
            f"--log-error={self.error_log}", f"--server-id={self.server_id}",
            f"--log-bin={os.path.join(self.datadir, 'binlog')}", "--log-slave-updates",
            "--skip-name-resolve", "--innodb-buffer-pool-size=16M",
            "--performance-schema=OFF", "--max-connections=200",
        ]
        if self.read_only:
            args.append("--read-only")
        args.extend(self.options)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"mariadbd (server-id {self.server_id}) exited with "
                                  f"{self.process.returncode}:\n{self._log_tail()}")
            try:
                self.connect().close()
                return
            except Exception:
                time.sleep(0.05)
        raise ServerError(f"mariadbd on port {self.port} did not answer within {timeout} s:\n"
                          f"{self._log_tail()}")

    def connect(self, user: str = "root", password: str = "", database: str | None = None,
                **extra: t.Any) -> t.Any:
        """A plain autocommit PyMySQL connection (root by default)."""
        import pymysql

        extra.setdefault("connect_timeout", 2)
        extra.setdefault("read_timeout", 10)
        return pymysql.connect(host="127.0.0.1", port=self.port, user=user, password=password,
                               database=database, autocommit=True, **extra)

    def execute(self, *statements: str) -> list[tuple[t.Any, ...]]:
        """Run *statements* as root on a fresh connection; the last one's rows."""
        con = self.connect()
        try:
            rows: list[tuple[t.Any, ...]] = []
            with con.cursor() as cur:
                for sql in statements:
                    cur.execute(sql)
                    rows = list(cur.fetchall())
            return rows
        finally:
            con.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the server (a crash: no shutdown, clients see the sockets drop)."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)

    def destroy(self) -> None:
        """Kill the server and remove its directory (safe to call twice)."""
        self.kill()
        shutil.rmtree(self.basedir, ignore_errors=True)
        _live.discard(self)


def _give_to(user: str, *paths: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _server_user() -> str | None:
    # Galera's rsync state transfer runs an rsync daemon, which as root switches to "nobody"
    # and then cannot write the joiner's data directory: run the nodes as the mysql account.
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        return pwd.getpwnam("mysql").pw_name
    except (ImportError, KeyError):
        return None


def _user() -> str:
    # mariadbd refuses to run as root unless told to; as another user it needs no flag.
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "root"


@dataclass
class ReplicationPair:
    """A primary, a replica of it, and the application user's URL for both."""

    primary: PrivateServer
    replica: PrivateServer

    def url(self, *servers: PrivateServer, query: str = "") -> str:
        """``mysql://app:…@h1:p1,h2:p2/db?query`` for *servers* (default: primary, replica)."""
        hosts = ",".join(s.address for s in (servers or (self.primary, self.replica)))
        return (f"mysql://{APP_USER}:{APP_PASSWORD}@{hosts}/{DATABASE}"
                + (f"?{query}" if query else ""))

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Block until the replica has applied everything the primary has written so far."""
        position = self.primary.execute("SELECT @@GLOBAL.gtid_binlog_pos")[0][0]
        rows = self.replica.execute(f"SELECT MASTER_GTID_WAIT('{position}', {timeout})")
        if rows[0][0] != 0:
            status = self.replica.execute("SHOW SLAVE STATUS")
            raise ServerError(f"replica did not reach {position} within {timeout} s: {status}")

    def destroy(self) -> None:
        for server in (self.replica, self.primary):
            server.destroy()


def start_replica(primary: PrivateServer, server_id: int,
                  timeout: float = 30.0) -> PrivateServer:
    """Start one more read-only replica of *primary* (GTID from the start of its binlog)."""
    replica = PrivateServer(server_id, read_only=True, prefix="poolkit-replica-")
    try:
        replica.install()
        replica.start(timeout)
        replica.execute(
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
            f"MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{REPL_PASSWORD}', "
            "MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos",
            "START SLAVE")
        ReplicationPair(primary, replica).wait_replicated(timeout)
    except BaseException:
        replica.destroy()
        raise
    return replica


def start_replication_pair(first_id: int = 1, timeout: float = 30.0) -> ReplicationPair:
    """Start a primary and a read-only replica of it, with the app user and database."""
    primary = PrivateServer(first_id, prefix="poolkit-primary-")
    try:
        primary.install()
        primary.start(timeout)
        primary.execute(
            f"CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}'",
            f"GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%'",
            f"CREATE DATABASE {DATABASE}",
            f"CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'",
            # Everything on the app's database, SLAVE MONITOR to read the replication lag;
            # no SUPER / READ ONLY ADMIN, which would write through read_only.
            f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{APP_USER}'@'%'",
            f"GRANT SLAVE MONITOR ON *.* TO '{APP_USER}'@'%'",
        )
        replica = start_replica(primary, first_id + 1, timeout)
    except BaseException:
        primary.destroy()
        raise
    return ReplicationPair(primary, replica)


# -- Galera ------------------------------------------------------------------------------------
GALERA_PROVIDERS = ("/usr/lib/galera/libgalera_smm.so", "/usr/lib/libgalera_smm.so",
                    "/usr/lib64/galera-4/libgalera_smm.so", "/usr/lib64/galera/libgalera_smm.so")


def galera_provider() -> str | None:
    """The Galera provider library (Debian's ``galera-4``), or None when it is not installed."""
    found = os.environ.get("POOLKIT_GALERA_PROVIDER")
    candidates = (found,) if found else GALERA_PROVIDERS
    return next((path for path in candidates if path and os.path.exists(path)), None)


def galera_available() -> bool:
    """True when the binaries, the provider and ``rsync`` (the state transfer) are installed."""
    return binaries_available() and galera_provider() is not None and bool(shutil.which("rsync"))


@dataclass
class GaleraNode:
    """One node: its server and the loopback ports of its group, IST and SST channels."""

    server: PrivateServer
    gport: int
    iport: int
    sport: int

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return self.server.address

    def status(self, *names: str) -> dict[str, str]:
        """``SHOW GLOBAL STATUS`` values (lower-case names), asked as root on a fresh connection."""
        wanted = ", ".join(f"'{name}'" for name in names)
        rows = self.server.execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({wanted})")
        return {str(name).lower(): str(value) for name, value in rows}

    def state(self) -> str:
        """``wsrep_local_state_comment`` (Synced, Donor/Desynced, Joining, Initialized …)."""
        return self.status("wsrep_local_state_comment").get("wsrep_local_state_comment", "?")

    def isolate(self, on: bool = True) -> None:
        """Cut this node off from the others (``gmcast.isolate``): it leaves the primary
        component and refuses queries with 1047 until it is let back in and resynced."""
        self.server.execute(
            f"SET GLOBAL wsrep_provider_options='gmcast.isolate={1 if on else 0}'")

    def desync(self, on: bool = True) -> None:
        """``wsrep_desync``: the node stays in the cluster but reports Donor/Desynced."""
        self.server.execute(f"SET GLOBAL wsrep_desync={'ON' if on else 'OFF'}")

    def wait_state(self, wanted: str = "Synced", timeout: float = 60.0,
                   cluster_size: int | None = None) -> None:
        """Block (bounded) until the node reports *wanted* (and the cluster has that size)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                seen = self.status("wsrep_local_state_comment", "wsrep_ready",
                                   "wsrep_cluster_size", "wsrep_cluster_status")
                if (seen.get("wsrep_local_state_comment") == wanted
                        and (cluster_size is None
                             or seen.get("wsrep_cluster_size") == str(cluster_size))):
                    return
            time.sleep(0.1)
        raise ServerError(f"Galera node {self.address} is not {wanted} after {timeout} s "
                          f"({seen}):\n{self.server._log_tail()}")


@dataclass
class GaleraCluster:
    """Three Galera nodes on loopback, the application user and database on all of them."""

    nodes: list[GaleraNode]

    def url(self, *nodes: GaleraNode, query: str = "target=primary") -> str:
        """``mysql://app:…@n1,n2,n3/db?query`` for *nodes* (default: every node)."""
        hosts = ",".join(node.address for node in (nodes or tuple(self.nodes)))
        return (f"mysql://{APP_USER}:{APP_PASSWORD}@{hosts}/{DATABASE}"
                + (f"?{query}" if query else ""))

    def node_on(self, port: int) -> GaleraNode:
        return next(node for node in self.nodes if node.port == port)

    def wait_synced(self, timeout: float = 60.0) -> None:
        """Block until every node is Synced in a cluster of all of them."""
        for node in self.nodes:
            node.wait_state("Synced", timeout, cluster_size=len(self.nodes))

    def destroy(self) -> None:
        for node in reversed(self.nodes):
            node.server.destroy()


def _galera_options(provider: str, name: str, node: GaleraNode, cluster: str) -> list[str]:
    # The options that make loopback nodes one cluster: each node's group channel, IST and
    # rsync SST on ports of its own; row binlog and interleaved auto-increment locks, which
    # Galera requires. An empty *cluster* bootstraps a new one.
    return [
        "--wsrep-on=ON", f"--wsrep-provider={provider}", f"--wsrep-cluster-name={name}",
        f"--wsrep-cluster-address=gcomm://{cluster}",
        f"--wsrep-node-address=127.0.0.1:{node.gport}",
        f"--wsrep-node-name=node{node.server.server_id}",
        "--wsrep-provider-options=" + ";".join((
            f"gmcast.listen_addr=tcp://127.0.0.1:{node.gport}",
            f"ist.recv_addr=127.0.0.1:{node.iport}", "gcache.size=32M",
            # A cut-off node notices in ~3 s instead of Galera's default 5-15 s, so the tests
            # measure poolkit, not the failure detector (documented in docs/scale.md).
            "evs.suspect_timeout=PT3S", "evs.inactive_timeout=PT6S",
            "evs.inactive_check_period=PT0.5S", "evs.keepalive_period=PT0.5S")),
        "--wsrep-sst-method=rsync", f"--wsrep-sst-receive-address=127.0.0.1:{node.sport}",
        "--binlog-format=ROW", "--innodb-autoinc-lock-mode=2", "--default-storage-engine=InnoDB",
    ]


def start_galera_cluster(size: int = 3, first_id: int = 31,
                         timeout: float = 90.0) -> GaleraCluster:
    """Start a *size*-node Galera cluster on free loopback ports (the first node bootstraps).

    The app user (no SUPER) gets the database and ``SLAVE MONITOR``; each node has its own
    temporary directory, and everything is removed if any step fails.
    """
    provider = galera_provider()
    if provider is None:
        raise ServerError("the Galera provider libgalera_smm.so is not installed "
                          "(apt install galera-4)")
    name = f"poolkit-{os.getpid()}-{first_id}"
    user = _server_user()
    nodes = [GaleraNode(PrivateServer(first_id + i, prefix="poolkit-galera-", user=user),
                        free_port(), free_port(), free_port()) for i in range(size)]
    cluster = GaleraCluster(nodes)
    try:
        for node in nodes:
            node.server.install()
        deadline = time.monotonic() + timeout
        every = ",".join(f"127.0.0.1:{node.gport}" for node in nodes)
        for i, node in enumerate(nodes):
            # The first node bootstraps (gcomm://); the others join through the whole list,
            # which is also where an isolated node finds the cluster again.
            node.server.options = (*node.server.options,
                                   *_galera_options(provider, name, node, every if i else ""))
            node.server.start(max(1.0, deadline - time.monotonic()))
            node.wait_state("Synced", max(1.0, deadline - time.monotonic()))
        cluster.nodes[0].server.execute(
            f"CREATE DATABASE {DATABASE}",
            f"CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'",
            f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{APP_USER}'@'%'",
            f"GRANT SLAVE MONITOR ON *.* TO '{APP_USER}'@'%'")
        cluster.wait_synced(max(1.0, deadline - time.monotonic()))
    except BaseException:
        cluster.destroy()
        raise
    return cluster
