"""Scenario 4: the network stops answering in the middle of a query (a black hole).

Figures: when the hung requests fail (assertion: read_timeout = 1 s, within +0.5 s), threads
left stuck after a bounded join (assertion: 0), requests that fail once traffic flows again
(assertion: 0).
"""

from __future__ import annotations

import threading
import time
import typing as t

import pytest
from flask import Flask

from poolkit import db
from poolkit.testing.faultproxy import FaultProxy

from .test_outage import with_options

pytestmark = pytest.mark.faults

READ_TIMEOUT = 1.0
HUNG = 4


def test_black_hole_mid_query_fails_after_read_timeout(fault_app: t.Callable[..., Flask],
                                                       proxy: FaultProxy,
                                                       proxied_url: str) -> None:
    app = fault_app(POOLKIT_DATABASE_URL=with_options(
                        proxied_url, f"read_timeout={READ_TIMEOUT:g}&connect_timeout=1"),
                    POOLKIT_MAX_CONNECTIONS=8, POOLKIT_TIMEOUT=2.0)
    app.testing = True

    @app.get("/slow")
    def slow() -> dict[str, t.Any]:
        return {"slept": db.scalar("SELECT SLEEP(0.3)")}

    @app.get("/fast")
    def fast() -> dict[str, t.Any]:
        return {"one": db.scalar("SELECT 1")}

    client = app.test_client()
    assert client.get("/fast").status_code == 200
    results: list[tuple[float, str]] = []
    lock = threading.Lock()

    def hung_request() -> None:
        started = time.monotonic()
        try:
            app.test_client().get("/slow")
            error = "no error"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        with lock:
            results.append((time.monotonic() - started, error))

    threads = [threading.Thread(target=hung_request, daemon=True) for _ in range(HUNG)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)  # every query is on the server now; its answer will never come back
    proxy.black_hole()
    for thread in threads:
        thread.join(READ_TIMEOUT + 4.0)
    stuck = sum(thread.is_alive() for thread in threads)
    proxy.restore()
    after = [client.get("/fast").status_code for _ in range(10)]
    stats = app.extensions["poolkit"].pool().stats()
    took = sorted(r[0] for r in results)
    print(f"\n[scenario 4] {HUNG} requests in a black hole failed after "
          f"{', '.join(f'{s:.2f}' for s in took)} s (read_timeout={READ_TIMEOUT:g} s); "
          f"stuck threads {stuck}; after restore {after.count(200)}/10 ok; discarded "
          f"{stats['discarded']}; errors: {sorted({r[1] for r in results})}")
    assert stuck == 0
    assert len(results) == HUNG
    for seconds, error in results:
        assert "Lost connection to MySQL server" in error and "timeout" in error, error
        assert READ_TIMEOUT <= seconds < READ_TIMEOUT + 0.5
    assert after == [200] * 10
    assert stats["in_use"] == 0 and stats["discarded"] >= HUNG
