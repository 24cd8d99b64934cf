"""What a :class:`~poolkit.pool.connection.Connection` needs around it: its pool's interface,
where a borrow began (for the dropped-handle warning), and handles dropped without close().
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import types
import typing as t

from .drivers import Driver


class PoolLike(t.Protocol):
    """All a :class:`Connection` knows of its pool (:class:`poolkit.pool.Pool` is one)."""

    name: str
    driver: Driver

    def _checkout(self) -> t.Any:
        """A steady connection, waiting for one if needed (PoolTimeout).

        The pool must keep a reference to what it lends: a handle that dies in a reference
        cycle is collected with everything only it references, finalizers included (DBUtils
        and the socket would close the connection that ``__del__`` is giving back).
        """

    def _checkin(self, con: t.Any) -> None:
        """Take back a connection that its borrower returned."""

    def _checkin_dropped(self, con: t.Any) -> None:
        """Take back a connection whose handle was garbage collected unreturned."""


# -- where a borrow began ---------------------------------------------------------------------
_HERE = os.path.dirname(os.path.abspath(__file__))
#: Frames of these files are poolkit's, not the borrower's (see :func:`skip_frames_of`).
_SKIP = {os.path.join(_HERE, name) for name in ("connection.py", "handles.py", "pool.py")}
_SKIP.add(contextlib.__file__)
_getframe = sys._getframe


def skip_frames_of(*files: str) -> None:
    """Name modules whose frames stand between a borrower and :class:`Connection`.

    The ResourceWarning for a dropped handle names the first frame outside them.
    """
    _SKIP.update(os.path.abspath(f) for f in files)


def _borrower() -> tuple[types.CodeType, int] | None:
    # Code object and instruction offset only (the line number is worked out if ever needed):
    # this runs on every checkout. Keeping the frame itself would keep its locals alive.
    try:
        frame = _getframe(2)
    except ValueError:  # created straight from C code: no Python caller
        return None
    while frame.f_code.co_filename in _SKIP and frame.f_back is not None:
        frame = frame.f_back
    return frame.f_code, frame.f_lasti


def _describe(where: tuple[types.CodeType, int] | None) -> str:
    if where is None:
        return "an unknown place"
    code, offset = where
    line = next((number for start, end, number in code.co_lines() if start <= offset < end),
                code.co_firstlineno)
    return f"{code.co_filename}:{line} (in {code.co_name})"


# -- handles dropped without close() ----------------------------------------------------------
#: Connections given back by a garbage-collected handle while this thread was inside the pool
#: (the collector runs at any allocation, also under the pool's lock): handed to the pool at
#: the next safe moment instead of deadlocking on that lock.
_deferred: collections.deque[tuple[PoolLike, t.Any]] = collections.deque()
_THIS = (os.path.join(_HERE, "connection.py"), os.path.join(_HERE, "handles.py"))


def _inside_pool(frame: types.FrameType | None) -> bool:
    # Any module of poolkit.pool but this one: the engine, Pool, the drivers' connect lock.
    prefix = _HERE + os.sep
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(prefix) and filename not in _THIS:
            return True
        frame = frame.f_back
    return False


def _give_back_deferred() -> None:
    while _deferred:
        try:
            pool, con = _deferred.popleft()
        except IndexError:  # another thread took the last one
            return
        pool._checkin_dropped(con)
