"""Blinker signals, Flask style. Subscribing is optional; with no receiver a signal costs one check.

>>> from poolkit import signals
>>> @signals.connection_opened.connect
... def opened(pool, **extra): ...

Every signal is sent with the :class:`poolkit.pool.Pool` as sender; the keyword arguments are
listed next to each signal.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A new server connection was opened. ``connect_time`` (s).
connection_opened = _signals.signal("poolkit.pool.connection-opened")
#: A connection was handed to a borrower. ``wait_time`` (s).
connection_checked_out = _signals.signal("poolkit.pool.connection-checked-out")
#: A borrower gave its connection back. ``held_time`` (s).
connection_returned = _signals.signal("poolkit.pool.connection-returned")
#: A connection was closed for good. ``reason``: broken, lifetime, idle, usage, overflow, fork,
#: close.
connection_discarded = _signals.signal("poolkit.pool.connection-discarded")
#: A borrower waited POOLKIT_TIMEOUT seconds and got :class:`poolkit.errors.PoolTimeout`.
pool_timeout = _signals.signal("poolkit.pool-timeout")
#: A connection was held longer than POOLKIT_LEAK_THRESHOLD. ``held_time``, ``stack``.
connection_leaked = _signals.signal("poolkit.pool.connection-leaked")
