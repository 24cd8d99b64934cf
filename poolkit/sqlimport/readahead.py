"""Split a big file in a thread while the server runs the statements before.

The socket wait releases the GIL, so reading and splitting a big dump overlaps with the
server's work instead of adding to it.
"""

from __future__ import annotations

import queue
import threading
import typing as t

from .statement import Statement

#: Files from this size on are split in a thread while the server works (see read_ahead).
READ_AHEAD_MIN_BYTES = 4 * 1024 * 1024

_END = object()


def read_ahead(statements: t.Iterator[Statement], depth: int = 2) -> t.Iterator[Statement]:
    """Split in a thread while the server runs the previous statement.

    The socket wait releases the GIL, so reading and splitting a big dump overlaps with the
    server's work instead of adding to it. At most *depth* statements wait in the queue.
    """
    items: queue.Queue[t.Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for stmt in statements:
                if not put(stmt):
                    return
            put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)
        finally:
            close = getattr(statements, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="poolkit-sql-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
