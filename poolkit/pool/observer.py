"""Per-pool observers: the cheap way to watch one pool's connections (poolkit.metrics uses it).

A :mod:`poolkit.signals` receiver is reached through blinker's dispatch, and once any pool has
a receiver every pool in the process pays for a dispatch. An observer belongs to one pool:

>>> class Timings(Observer):
...     def checked_out(self, wait_time: float) -> None:
...         waits.append(wait_time)
>>> pool.add_observer(Timings())  # doctest: +SKIP

With no observer the pool pays one attribute check per event. The engine calls the observer
outside its lock, after its state is consistent, in the thread that caused the event (the
fast path included), before it sends the matching signal. An ``Exception`` from an observer
is logged (logger ``poolkit``, with its traceback) and swallowed, as a signal receiver's is:
it never fails a borrow nor changes the pool's counts.
"""

from __future__ import annotations

import logging
import typing as t

logger = logging.getLogger("poolkit")


class Observer:
    """Base class of a pool observer: override the events you need (the others do nothing).

    Times are in seconds, measured with :func:`time.monotonic`.
    """

    __slots__ = ()

    def opened(self, connect_time: float) -> None:
        """A new server connection was opened in *connect_time*."""

    def checked_out(self, wait_time: float) -> None:
        """A connection was handed to a borrower after *wait_time* (0.0 from the idle cache)."""

    def returned(self, held_time: float) -> None:
        """A borrower gave its connection back after holding it *held_time*."""

    def timed_out(self) -> None:
        """A borrower waited ``POOLKIT_TIMEOUT`` and got :class:`~poolkit.errors.PoolTimeout`."""


def failed(observer: object, event: str) -> None:
    """Log the exception an observer's *event* method is raising (call in ``except``)."""
    logger.exception("poolkit: observer %r raised in %s(); ignored", observer, event)


class Observers(Observer):
    """Several observers of one pool, called in order; one that raises does not stop the rest."""

    __slots__ = ("observers",)

    def __init__(self, observers: t.Iterable[Observer]) -> None:
        self.observers = tuple(observers)

    def opened(self, connect_time: float) -> None:
        for observer in self.observers:
            try:
                observer.opened(connect_time)
            except Exception:
                failed(observer, "opened")

    def checked_out(self, wait_time: float) -> None:
        for observer in self.observers:
            try:
                observer.checked_out(wait_time)
            except Exception:
                failed(observer, "checked_out")

    def returned(self, held_time: float) -> None:
        for observer in self.observers:
            try:
                observer.returned(held_time)
            except Exception:
                failed(observer, "returned")

    def timed_out(self) -> None:
        for observer in self.observers:
            try:
                observer.timed_out()
            except Exception:
                failed(observer, "timed_out")

    def __repr__(self) -> str:
        return f"Observers({list(self.observers)!r})"


def combine(current: Observer | None, added: Observer) -> Observer:
    """*current* and *added* as one observer (*added* alone when there is none yet)."""
    if current is None:
        return added
    if isinstance(current, Observers):
        return Observers((*current.observers, added))
    return Observers((current, added))


def without(current: Observer | None, removed: Observer) -> Observer | None:
    """*current* less *removed* (compared by identity); None when nothing is left."""
    if current is removed:
        return None
    if not isinstance(current, Observers):
        return current
    rest = tuple(o for o in current.observers if o is not removed)
    if len(rest) == len(current.observers):
        return current
    return rest[0] if len(rest) == 1 else Observers(rest) if rest else None
