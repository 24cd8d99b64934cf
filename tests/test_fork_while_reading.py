"""fork() while another thread is blocked reading a pooled connection (issue 10 item 3).

The reading thread holds its socket reader's lock; in the child that thread is gone and the
lock stays held for ever, so the child must detach the inherited connection without it.
Found by tests/test_invariants.py (a forked child hung in PyMySQL's ``_force_close``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import typing as t
import warnings

from poolkit import Pool


def test_child_of_a_fork_during_a_read_detaches_and_connects(
        make_pool: t.Callable[..., Pool]) -> None:
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=2)
    reading = threading.Event()
    answers: list[t.Any] = []

    def read() -> None:
        with pool.connection() as conn:
            reading.set()
            answers.append(conn.scalar("SELECT SLEEP(1.5)"))

    reader = threading.Thread(target=read)
    reader.start()
    assert reading.wait(10)
    time.sleep(0.3)  # the reader is now inside recv(), holding its buffered reader's lock
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*fork", DeprecationWarning)  # Python >= 3.12
        pid = os.fork()
    if pid == 0:  # the child
        code = 2
        try:
            with pool.connection() as conn:
                code = 0 if conn.scalar("SELECT 6 * 7") == 42 else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung detaching the connection being read")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0
    reader.join(timeout=10)
    assert answers == [0]  # the parent's read was not disturbed
    assert pool.stats()["in_use"] == 0
