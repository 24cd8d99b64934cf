"""Blinker signals, Flask style. Subscribing is optional; with no receiver a signal costs one check.

>>> from poolkit import signals
>>> @signals.connection_opened.connect
... def opened(pool, **extra): ...

Every signal is sent with the :class:`poolkit.pool.Pool` as sender; the keyword arguments are
listed next to each signal.

The pool sends them outside its lock, after its state is consistent, in the thread that
caused them: a slow receiver slows only that thread. A receiver's exception is logged
(logger ``poolkit``, with its traceback) and swallowed, as a logging handler's is: a bug in a
metrics hook never fails a request or loses a connection, and the other receivers still run.
"""

from __future__ import annotations

import logging
import typing as t

from blinker import Namespace, Signal

logger = logging.getLogger("poolkit")

_signals = Namespace()

#: A new server connection was opened. ``connect_time`` (s).
connection_opened = _signals.signal("poolkit.pool.connection-opened")
#: A connection was handed to a borrower. ``wait_time`` (s).
connection_checked_out = _signals.signal("poolkit.pool.connection-checked-out")
#: A borrower gave its connection back. ``held_time`` (s).
connection_returned = _signals.signal("poolkit.pool.connection-returned")
#: A connection was closed for good. ``reason``: broken, lifetime, idle, usage, overflow, fork,
#: close, unread (returned with an unread unbuffered result), reset (its session could not be
#: reset in place).
connection_discarded = _signals.signal("poolkit.pool.connection-discarded")
#: A borrower waited POOLKIT_TIMEOUT seconds and got :class:`poolkit.errors.PoolTimeout`.
pool_timeout = _signals.signal("poolkit.pool-timeout")
#: A connection was held longer than POOLKIT_LEAK_THRESHOLD. ``held_time``, ``stack``.
connection_leaked = _signals.signal("poolkit.pool.connection-leaked")


def send(signal: Signal, sender: object, **kwargs: t.Any) -> None:
    """Call every receiver of *signal*; an ``Exception`` from one is logged, never raised."""
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, **kwargs)
        except Exception:
            logger.exception("poolkit: a receiver of signal %r raised; ignored",
                             getattr(signal, "name", signal))
