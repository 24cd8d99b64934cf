"""A loopback TCP proxy that misbehaves on request, for fault tests and benchmarks.

``FaultProxy`` listens on ``127.0.0.1:<ephemeral>`` and forwards each accepted connection to
the target server. While it runs, a test can make the network fail the ways production does::

    with FaultProxy("127.0.0.1", 3306) as proxy:
        url = proxy.url("mysql://root:@127.0.0.1:3306/app")  # same URL, through the proxy
        proxy.delay(connect=0.15)   # slow connects: the server's greeting arrives 150 ms late
        proxy.delay(chunk=0.01)     # 10 ms of latency on every chunk, both ways
        proxy.cut()                 # close every open connection (a server restart)
        proxy.refuse(2.0)           # connection refused for 2 s (the server is down)
        proxy.black_hole()          # accept and keep connections, forward nothing either way
        proxy.restore()             # pass traffic again

One thread accepts; each connection gets one thread that moves bytes both ways with
``select``. Every wait is short (``TICK``) so that ``stop()`` — called on leaving the ``with``
block — ends every thread within a bounded join. A proxy also stops itself after
``max_lifetime`` seconds, so a forgotten one cannot outlive its test run by long.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from urllib.parse import urlsplit, urlunsplit

TICK = 0.02  # seconds: the longest any proxy thread sleeps before it looks at its state again
_CHUNK = 65536


def _hard_close(sock: socket.socket | None) -> None:
    """Close *sock* with an RST (SO_LINGER 0): the peer sees a reset, as after a crash."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


class _Link:
    """One client connection and its upstream connection, moved by one thread."""

    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()
        self.dropped = False  # bytes were black-holed: the two streams no longer agree
        self.thread = threading.Thread(target=self._run, name="faultproxy-link", daemon=True)

    def close(self) -> None:
        self.closed.set()

    def _connect_upstream(self) -> bool:
        proxy = self.proxy
        delay = proxy.connect_delay
        if delay and self.closed.wait(delay):
            return False
        try:
            self.upstream = socket.create_connection(proxy.target, timeout=proxy.connect_timeout)
        except OSError:
            return False
        self.upstream.settimeout(None)
        return True

    def _run(self) -> None:
        proxy = self.proxy
        try:
            # A connection accepted during a black hole waits for the hole to close (the
            # client sees a connect that hangs); no bytes were sent yet, so it can then go on.
            while proxy._black_hole and not self.closed.wait(TICK):
                self.dropped = self.dropped or self._drain(self.client)
            if self.closed.is_set() or self.dropped or not self._connect_upstream():
                return
            self._pump()
        finally:
            # Cut: reset both sides, as a crash does. End of stream: close politely.
            close = _hard_close if self.closed.is_set() else _close
            close(self.client)
            close(self.upstream)
            proxy._forget(self)

    def _drain(self, sock: socket.socket) -> bool:
        """Read and drop what *sock* has (black hole); True when bytes were dropped."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        data = sock.recv(_CHUNK)
        if not data:
            self.closed.set()
        return bool(data)

    def _pump(self) -> None:
        assert self.upstream is not None
        proxy = self.proxy
        peer = {self.client: self.upstream, self.upstream: self.client}
        while not self.closed.is_set():
            if self.dropped and not proxy._black_hole:
                return  # after a black hole the protocol state is lost: end the connection
            try:
                readable, _, _ = select.select(list(peer), [], [], TICK)
                for sock in readable:
                    data = sock.recv(_CHUNK)
                    if not data:
                        return
                    if proxy._black_hole:
                        self.dropped = True
                        continue
                    delay = proxy.chunk_delay
                    if delay and self.closed.wait(delay):
                        return
                    peer[sock].sendall(data)
                    proxy.bytes_forwarded += len(data)
            except OSError:
                return


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target_host:target_port`` (see module doc)."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 3306, *,
                 connect_timeout: float = 5.0, max_connections: int = 256,
                 max_lifetime: float = 3600.0) -> None:
        self.target = (target_host, target_port)
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.max_lifetime = max_lifetime
        self.host = "127.0.0.1"
        self.port = 0
        self.connect_delay = 0.0
        self.chunk_delay = 0.0
        self.accepted = 0
        self.refused = 0
        self.bytes_forwarded = 0
        self._black_hole = False
        self._refuse_until = 0.0  # monotonic time; inf while refuse() has no end
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed_listener = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Bind 127.0.0.1:<ephemeral> and start accepting."""
        if self._acceptor is not None:
            raise RuntimeError("this FaultProxy is already running")
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._stop.clear()
        self._acceptor = threading.Thread(target=self._accept_loop, name="faultproxy-accept",
                                          daemon=True)
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; join every thread (bounded by *timeout*)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        if self._acceptor is not None:
            self._acceptor.join(max(0.0, deadline - time.monotonic()))
            self._acceptor = None
        for link in self._snapshot():
            link.close()
        for link in self._snapshot():
            link.thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------
    def delay(self, connect: float = 0.0, chunk: float = 0.0) -> None:
        """Delay new connections' greeting by *connect* s and every chunk by *chunk* s."""
        if connect < 0 or chunk < 0:
            raise ValueError("delays must be >= 0 seconds")
        self.connect_delay = connect
        self.chunk_delay = chunk

    def cut(self) -> int:
        """Reset every open connection (both sides); returns how many were cut."""
        links = self._snapshot()
        for link in links:
            link.close()
        deadline = time.monotonic() + 2.0
        for link in links:
            link.thread.join(max(0.0, deadline - time.monotonic()))
        return len(links)

    def black_hole(self) -> None:
        """Keep accepting and keep open connections, but forward nothing, either way."""
        self._black_hole = True

    def refuse(self, seconds: float | None = None) -> None:
        """Refuse new connections (ECONNREFUSED) for *seconds*, or until :meth:`restore`."""
        until = float("inf") if seconds is None else time.monotonic() + seconds
        self._closed_listener.clear()
        self._refuse_until = until
        if self._acceptor is not None and self._acceptor.is_alive():
            # Return once nothing listens any more, so that a cut() right after this call
            # leaves no connection open (as a server restart does).
            self._closed_listener.wait(1.0)

    def restore(self) -> None:
        """Pass traffic again: no delays, no black hole, no refusal.

        Connections that lost bytes in a black hole are ended: their protocol state is gone.
        """
        self.connect_delay = self.chunk_delay = 0.0
        self._black_hole = False
        self._refuse_until = 0.0

    # -- state ------------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` clients connect to."""
        return (self.host, self.port)

    @property
    def open_connections(self) -> int:
        """Connections currently open through the proxy."""
        with self._lock:
            return len(self._links)

    @property
    def refusing(self) -> bool:
        """True while new connections are refused."""
        return time.monotonic() < self._refuse_until

    def url(self, database_url: str) -> str:
        """*database_url* with its host and port replaced by the proxy's."""
        parts = urlsplit(database_url)
        auth, at, _ = parts.netloc.rpartition("@")
        netloc = f"{auth}{at}{self.host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    # -- internals --------------------------------------------------------------------------
    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        listener.listen(128)
        return listener

    def _snapshot(self) -> list[_Link]:
        with self._lock:
            return list(self._links)

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept_loop(self) -> None:
        ends = time.monotonic() + self.max_lifetime
        try:
            while not self._stop.is_set() and time.monotonic() < ends:
                if self.refusing:
                    # Refused for real: no socket listens on the port, the kernel answers RST.
                    if self._listener is not None:
                        self._listener.close()
                        self._listener = None
                    self._closed_listener.set()
                    self._stop.wait(TICK)
                    continue
                if self._listener is None:
                    try:
                        self._listener = self._listen(self.port)
                    except OSError:  # the port is busy for a moment: try again next tick
                        self._stop.wait(TICK)
                        continue
                readable, _, _ = select.select([self._listener], [], [], TICK)
                if readable:
                    self._accept()
        finally:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            self._stop.set()
            for link in self._snapshot():
                link.close()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if len(self._links) >= self.max_connections:
                self.refused += 1
                _hard_close(client)
                return
            link = _Link(self, client)
            self._links.add(link)
            self.accepted += 1
        link.thread.start()
