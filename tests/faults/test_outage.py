"""Scenario 3: a server "restart" — every connection cut, connections refused for 2 s.

Figures: how long requests took to fail during the outage (fail fast, no hang), the recovery
time after the server is back (assertion: < 5 s), the longest request (assertion: under
POOLKIT_TIMEOUT), and failures after recovery (assertion: 0).
"""

from __future__ import annotations

import time
import typing as t

import pytest
from flask import Flask

from poolkit import db
from poolkit.testing.faultproxy import FaultProxy

from .conftest import start_load, summary

pytestmark = pytest.mark.faults

OUTAGE = 2.0
TIMEOUT = 2.0
THREADS = 8


def with_options(url: str, options: str) -> str:
    return url + ("&" if "?" in url else "?") + options


def test_server_restart_fails_fast_and_recovers(fault_app: t.Callable[..., Flask],
                                                proxy: FaultProxy, proxied_url: str) -> None:
    app = fault_app(POOLKIT_DATABASE_URL=with_options(
                        proxied_url, "connect_timeout=1&read_timeout=2&write_timeout=2"),
                    POOLKIT_MAX_CONNECTIONS=THREADS, POOLKIT_TIMEOUT=TIMEOUT)
    app.testing = True

    @app.get("/ping")
    def ping() -> dict[str, t.Any]:
        return {"one": db.scalar("SELECT 1")}

    load = start_load(app, lambda client, i, n: client.get("/ping"), threads=THREADS,
                      max_requests=3000, max_seconds=15.0, pause=0.01)
    try:
        time.sleep(0.5)
        down = time.monotonic()
        proxy.refuse(OUTAGE)
        cut = proxy.cut()
        back = down + OUTAGE
        deadline = back + 5.0
        recovered: float | None = None
        while time.monotonic() < deadline:  # until 0.5 s of success after the outage
            time.sleep(0.05)
            fine = [o for o in load.done(since=back) if not o.error]
            if fine and time.monotonic() - fine[0].ended > 0.5:
                recovered = fine[0].ended
                break
    finally:
        load.finish()
    during = load.done(since=down + 0.05, until=back - 0.05)
    during_ok = [o for o in during if not o.error]
    after = load.failed(since=recovered) if recovered else []
    longest = max(o.took for o in load.done())
    slowest_failure = max((o.took for o in load.failed()), default=0.0)
    errors = summary(load.failed(since=down))
    print(f"\n[scenario 3] cut {cut} connections, refused {OUTAGE:.0f} s: {len(during)} requests "
          f"during the outage, {len(during) - len(during_ok)} failed, slowest failure "
          f"{slowest_failure * 1000:.0f} ms; recovered "
          f"{(recovered - back) if recovered else float('nan'):.2f} s after the server came "
          f"back; longest request {longest * 1000:.0f} ms; failed after recovery "
          f"{len(after)}\n  errors: {errors}")
    assert cut >= 1
    assert len(during) >= THREADS, "the load stalled during the outage"
    assert during_ok == [], "requests succeeded while the server was down?"
    assert recovered is not None and recovered - back < 5.0, "no recovery within 5 s"
    assert longest < TIMEOUT, f"a request waited {longest:.2f} s (POOLKIT_TIMEOUT={TIMEOUT})"
    assert slowest_failure < 1.0, "failures during the outage were not fast"
    assert after == [], summary(after)
    for outcome in load.failed(since=down):
        assert "MySQL server" in (outcome.error or ""), f"unclear error: {outcome.error}"
