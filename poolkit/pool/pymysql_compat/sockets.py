"""The socket under a PyMySQL connection: TLS context, kernel timeouts, closing without a word."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import sys
import threading
import typing as t

_KERNEL_TIMEOUTS = sys.platform.startswith("linux")

_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def _new_ssl_lock() -> None:
    # A fork while another thread built the context would leave the lock held forever in
    # the child: every TLS connect there would hang.
    global _ssl_lock
    _ssl_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_ssl_lock)


def shared_ssl_context(factory: t.Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """One TLS context for every connect (PyMySQL >= 1.2 builds one per connect, ~40 ms)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = factory()
        return _ssl_context


class LazySSLContext:
    """The shared TLS context, built the first time the handshake uses it.

    PyMySQL's PREFERRED mode (no ``ssl_*`` options) builds its context in ``__init__``, before
    it knows whether the server offers TLS at all: ~30-40 ms of CPU on the first connect of
    every process (a ``flask initdb`` run, a web worker) even when the server has TLS off. The
    handshake touches ``ctx`` only when the server offers TLS, so a stand-in that builds the
    real context on first attribute access costs nothing otherwise.
    """

    __slots__ = ("_factory",)

    def __init__(self, factory: t.Callable[[], ssl.SSLContext]) -> None:
        self._factory = factory

    def __getattr__(self, name: str) -> t.Any:
        return getattr(shared_ssl_context(self._factory), name)


def uses_kernel_timeouts(sock: object) -> bool:
    """True for a plain (or TLS) stdlib socket, whose timeouts the kernel can enforce.

    gevent's (monkey-patched) sockets are non-blocking and wait in gevent's hub, where
    ``SO_RCVTIMEO`` never fires: they keep PyMySQL's Python-level timeouts.
    """
    return _KERNEL_TIMEOUTS and type(sock).__module__ in ("socket", "ssl")


def _timeval(seconds: float | None) -> bytes:
    seconds = seconds or 0.0
    return struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))


def force_close(raw: t.Any) -> None:
    """Close the socket without COM_QUIT (a forked child must not end the parent's session)."""
    # Not raw._force_close(): it closes the buffered reader, whose lock a parent thread that
    # was reading at fork time holds for ever in the child. Closing the reader's raw stream
    # needs no lock, and the reader, finding it closed, never takes its lock again.
    rfile = raw._rfile  # private: PyMySQL's buffered reader of the socket
    if rfile is not None:
        rfile.raw.close()
    sock = raw._sock  # private: PyMySQL's socket
    if sock is not None:
        sock.close()
    raw._rfile = raw._sock = None


def disable_timeouts(raw: t.Any) -> None:
    """No read/write timeout from now on (a long ``ALTER`` in ``flask initdb``), whichever way
    the connection enforces them (kernel socket options or PyMySQL's Python timeouts)."""
    sock = raw._sock  # private: PyMySQL's socket
    if raw.poolkit_timeouts != (None, None) and sock is not None:
        forever = _timeval(0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, forever)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, forever)
        raw.poolkit_timeouts = (None, None)
    # private: PyMySQL applies _read_timeout/_write_timeout before each read/write.
    raw._read_timeout = raw._write_timeout = None


def shutdown_socket(raw: t.Any) -> None:
    """Cut the connection under a running statement (another thread's; the stress tool)."""
    sock = getattr(raw, "_sock", None)  # private: PyMySQL's socket
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def is_closed(raw: t.Any) -> bool:
    """True once the socket is closed (PyMySQL closes it on every connection error)."""
    return raw._sock is None  # private: PyMySQL's socket, None once closed
