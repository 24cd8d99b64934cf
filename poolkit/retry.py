"""Re-running a whole transaction that the server rolled back: deadlocks, Galera certification.

Two Galera nodes that write the same rows at the same time both succeed locally; at
``COMMIT`` one of them loses certification and its transaction is rolled back with error
**1213** (``Deadlock found when trying to get lock; try restarting transaction``). InnoDB
deadlocks on one server end the same way. The server's advice is the only correct one: run
the *whole* transaction again -- re-running the failed statement alone would commit half of
it. :func:`retry_transaction` does that::

    @retry_transaction(retries=5)
    def transfer(conn, source, target, amount):
        conn.execute("UPDATE account SET balance = balance - %s WHERE id = %s", (amount, source))
        conn.execute("UPDATE account SET balance = balance + %s WHERE id = %s", (amount, target))

    with pool.connection() as conn:      # or, in a view: transfer(db, 1, 2, 10)
        transfer(conn, 1, 2, 10)

The function gets the connection as its first argument and runs inside
``conn.transaction()``: ``BEGIN``, the function, ``COMMIT``; on a retryable error the block
is rolled back and the function runs again from the start after a short jittered pause, at
most *retries* more times, then the error is raised. So the function must do nothing but
database work that the rollback undoes (no e-mail sent, no file written inside it).

Called inside an open transaction, the function runs once, as a savepoint, and is not
retried: the error ends the outer transaction too, so only the outer one can be re-run.
"""

from __future__ import annotations

import functools
import logging
import random
import time
import typing as t

from .pool.hosts import error_code

logger = logging.getLogger("poolkit")

#: Errors after which the server has rolled back the whole transaction, so that running it
#: again is safe: 1213 (deadlock, Galera certification failure / brute-force abort) and 1205
#: (lock wait timeout; the block's rollback undoes the rest).
RETRYABLE_CODES = frozenset({1213, 1205})

P = t.ParamSpec("P")
R = t.TypeVar("R")


def is_retryable(error: BaseException, codes: t.Collection[int] = RETRYABLE_CODES) -> bool:
    """True when *error* is one after which the whole transaction may be run again."""
    return error_code(error) in codes


def run_transaction(conn: t.Any, func: t.Callable[..., R], *args: t.Any, retries: int = 3,
                    codes: t.Collection[int] = RETRYABLE_CODES, pause: float = 0.02,
                    **kwargs: t.Any) -> R:
    """``func(conn, *args, **kwargs)`` inside ``conn.transaction()``, run again (at most
    *retries* more times) when the server rolled it back with one of *codes*."""
    if retries < 0:
        raise ValueError(f"retries={retries} must be 0 or more")
    nested = bool(conn.in_transaction)
    attempt = 0
    while True:
        try:
            with conn.transaction():
                return func(conn, *args, **kwargs)
        except Exception as error:
            if nested or attempt >= retries or not is_retryable(error, codes):
                raise
            attempt += 1
            logger.info("poolkit: transaction %s rolled back by the server (%s); running it "
                        "again (%d of %d)", getattr(func, "__qualname__", func), error,
                        attempt, retries)
            # Jitter: two writers that collided must not collide again in lockstep.
            time.sleep(pause * attempt * (0.5 + random.random()))


def retry_transaction(retries: int = 3, *, codes: t.Collection[int] = RETRYABLE_CODES,
                      pause: float = 0.02) -> t.Callable[[t.Callable[P, R]], t.Callable[P, R]]:
    """Decorator form of :func:`run_transaction`: the function's first argument is the
    connection (``db``, or one from ``pool.connection()``)."""

    def decorate(func: t.Callable[P, R]) -> t.Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not args:
                raise TypeError(f"{func.__qualname__}() needs the connection as its first "
                                "argument")
            call = t.cast(t.Callable[..., R], func)
            return run_transaction(args[0], call, *args[1:], retries=retries, codes=codes,
                                   pause=pause, **kwargs)

        return wrapper

    return decorate
