"""poolkit.stress: figures (fast), the strategy interface, and short load runs (marked stress)."""

from __future__ import annotations

import math
import typing as t
from collections import Counter

import pytest
from conftest import server_count
from flask import Flask

from poolkit import db
from poolkit.stress.report import (
    STRATEGIES,
    Load,
    ServerFigures,
    StrategyResult,
    StressReport,
    error_key,
    latency_ms,
    percentile,
)
from poolkit.stress.runner import StressError, StressOptions, parse_strategies, run_stress
from poolkit.stress.strategies import make_strategy
from poolkit.testing.servers import PrivateServer, binaries_available

# -- figures ---------------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    ordered = [float(i) for i in range(1, 101)]
    assert percentile(ordered, 99) == pytest.approx(99.01)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile(values, 101)


def test_latency_summary_in_milliseconds() -> None:
    summary = latency_ms([0.004, 0.001, 0.002, 0.003])
    assert summary == {"avg": 2.5, "p50": 2.5, "p95": 3.85, "p99": 3.97, "max": 4.0}
    assert latency_ms([]) == dict.fromkeys(("avg", "p50", "p95", "p99", "max"))


def test_error_key_folds_varying_numbers_and_keeps_the_code() -> None:
    import pymysql

    assert error_key(pymysql.err.InternalError("Packet sequence number wrong - got 5 expected 1")
                     ) == "InternalError: Packet sequence number wrong - got # expected #"
    assert error_key(pymysql.err.OperationalError(1040, "Too many connections")
                     ) == "OperationalError 1040: Too many connections"
    assert error_key(KeyError()) == "KeyError"


def _result(name: str, requests: int, *, errors: int = 0, wrong: int = 0, opened: int = 0,
            server: int = 0, pool_size: int | None = None) -> StrategyResult:
    load = Load(requests=requests, wrong_rows=wrong, errors=Counter({"E: x": errors}),
                elapsed=2.0, connections_opened=opened, connect_time_total=opened * 0.04)
    load.latencies.extend([0.001] * (requests - errors - wrong))
    load.failed_latencies.extend([0.0002] * (errors + wrong))
    return StrategyResult(name, load, ServerFigures(server, 9, 1), pool_size)


def _report(*results: StrategyResult) -> StressReport:
    return StressReport(database="mysql://root@127.0.0.1:3306/test", workload="select",
                        threads=16, workers=1, seconds=2.0, requests=None, warmup=0.0,
                        pool_size=8, results=list(results))


def test_json_has_stable_keys() -> None:
    data = _report(_result("global", 100, errors=30, wrong=5, opened=3, server=3),
                   _result("per-view", 80, opened=80, server=80),
                   _result("pooled", 8000, opened=8, server=8, pool_size=8)).to_dict()
    assert list(data) == ["schema", "database", "settings", "strategies", "verdicts"]
    assert list(data["settings"]) == ["workload", "threads", "workers", "seconds", "requests",
                                      "warmup", "pool_size"]
    assert list(data["strategies"]) == ["global", "per-view", "pooled"]
    assert list(data["strategies"]["pooled"]) == [
        "requests", "seconds", "req_per_s", "ok_per_s", "latency_ms", "failed_latency_ms", "ok",
        "errors", "wrong_rows", "lost_rows", "server_connections", "peak_threads_connected",
        "threads_connected_before", "connections_opened", "connect_time_mean_ms",
        "connect_cpu_mean_ms", "pool_size", "checkouts", "wait_mean_ms", "timeouts",
        "hung_threads", "error_groups"]
    assert data["schema"] == 2
    glob = data["strategies"]["global"]
    assert (glob["errors"], glob["wrong_rows"], glob["ok"]) == (30, 5, 65)
    assert glob["error_groups"] == [{"error": "E: x", "count": 30}]
    assert data["strategies"]["per-view"]["connect_time_mean_ms"] == pytest.approx(40.0)
    assert data["strategies"]["pooled"]["req_per_s"] == 4000.0
    assert glob["ok_per_s"] == 32.5
    assert glob["latency_ms"]["p50"] == 1.0  # successful requests only
    assert glob["failed_latency_ms"]["p50"] == 0.2


def test_verdicts_are_backed_by_numbers() -> None:
    verdicts = _report(_result("global", 100, errors=3201, wrong=31),
                       _result("per-view", 80, opened=80, server=80),
                       _result("pooled", 8000, opened=8, server=8, pool_size=8)).verdicts()
    assert [v.holds for v in verdicts] == [True, True, True]
    texts = [v.text for v in verdicts]
    assert texts[0].startswith("global: 31 wrong rows and 3,201 errors in 2.0 s")
    assert "1.00 connections per request (80 opened for 80 requests)" in texts[1]
    assert "8 connections opened for 8,000 requests (pool 8)" in texts[2]
    assert "100× the per-view throughput" in texts[2]


def test_verdicts_say_when_the_lesson_did_not_show() -> None:
    verdicts = _report(_result("global", 100),
                       _result("pooled", 100, errors=2, opened=8, server=30,
                               pool_size=8)).verdicts()
    assert [v.holds for v in verdicts] == [False, False]
    assert "try more --threads" in verdicts[0].text
    assert "the server counted 30, other clients included" in verdicts[1].text


# -- options -----------------------------------------------------------------------------------


def test_parse_strategies() -> None:
    assert parse_strategies("pooled, per-view,pooled") == ("pooled", "per-view")
    assert parse_strategies("GLOBAL,per_view") == ("global", "per-view")
    with pytest.raises(StressError, match="unknown strategy 'shared'; choose from global"):
        parse_strategies("global,shared")


@pytest.mark.parametrize(("options", "message"), [
    (StressOptions(threads=0), "--threads must be between 1 and 512, not 0"),
    (StressOptions(seconds=0), "--seconds must be more than 0"),
    (StressOptions(requests=0), "--requests must be at least 1"),
    (StressOptions(workers=99), "--workers must be between 1 and 32"),
    (StressOptions(pool_size=0), "--pool-size must be between 1 and 1000"),
    (StressOptions(warmup=-1), "--warmup must be between 0 and 60"),
    (StressOptions(write=True, query="SELECT 1"), "--query and --write choose different"),
    (StressOptions(endpoint="employees"), "--endpoint must be a path"),
    (StressOptions(strategies=()), "--strategy is empty"),
])
def test_options_are_validated(options: StressOptions, message: str) -> None:
    with pytest.raises(StressError, match=message):
        options.validate()


def test_time_limit_bounds_every_run() -> None:
    assert StressOptions().time_limit == 3.0
    assert StressOptions(seconds=1.5).time_limit == 1.5
    assert StressOptions(requests=100).time_limit == 600.0


def test_a_flask_app_without_poolkit_is_refused() -> None:
    with pytest.raises(StressError, match="does not use poolkit"):
        run_stress(Flask("plain"), StressOptions(seconds=0.1))


# -- the strategy interface ----------------------------------------------------------------------


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest, app: Flask) -> t.Iterator[t.Any]:
    made = make_strategy(request.param, app.extensions["poolkit"].pool(), 4)
    yield made
    made.close()


def test_each_strategy_gives_a_working_connection(strategy: t.Any, app: Flask) -> None:
    with app.app_context():
        for n in range(3):
            with strategy.connection() as conn:
                assert conn.scalar("SELECT %s", (f"n{n}",)) == f"n{n}"
                assert conn.query("SELECT 1 AS one") == [{"one": 1}]
                with conn.transaction():
                    assert conn.query_one("SELECT 2 AS two") == {"two": 2}
    opened, spent, _ = strategy.connect_figures()
    expected = {"global": 1, "per-view": 3, "pooled": 1}[strategy.name]
    assert opened == expected
    assert spent > 0


# -- short load runs (≤ 2 s per strategy) ----------------------------------------------------


def _run(app: Flask, **options: t.Any) -> dict[str, t.Any]:
    options.setdefault("seconds", 1.0)
    options.setdefault("threads", 8)
    return run_stress(app, StressOptions(**options)).to_dict()


@pytest.mark.stress
def test_global_connection_mixes_up_replies(app: Flask) -> None:
    figures = _run(app, strategies=("global",), threads=16)["strategies"]["global"]
    assert figures["wrong_rows"] + figures["lost_rows"] + figures["errors"] > 0
    assert figures["hung_threads"] == 0


@pytest.mark.stress
def test_per_view_opens_one_server_connection_per_request(app: Flask) -> None:
    figures = _run(app, strategies=("per-view",))["strategies"]["per-view"]
    assert figures["requests"] > 0
    assert figures["errors"] == figures["wrong_rows"] == 0
    assert figures["connections_opened"] == figures["requests"]
    assert figures["server_connections"] >= figures["requests"]
    assert figures["connect_time_mean_ms"] > 0


@pytest.fixture(scope="module")
def quiet_server() -> t.Iterator[str]:
    """A private server no other client talks to: its Connections counter is ours alone."""
    if not binaries_available():
        pytest.fail("mariadbd and mariadb-install-db are needed (apt install mariadb-server)")
    server = PrivateServer(41, prefix="poolkit-stress-")
    try:
        server.install()
        server.start()
        server.execute("CREATE DATABASE stress")
        yield f"mysql://root:@127.0.0.1:{server.port}/stress"
    finally:
        server.destroy()


@pytest.fixture
def quiet_app(make_app: t.Callable[..., Flask], quiet_server: str) -> Flask:
    return make_app(POOLKIT_DATABASE_URL=quiet_server)


def _pooled(app: Flask, **options: t.Any) -> dict[str, t.Any]:
    # On the quiet server, the rise of Connections is exactly what the run opened.
    figures = _run(app, strategies=("pooled",), **options)["strategies"]["pooled"]
    assert figures["server_connections"] == figures["connections_opened"]
    return t.cast(dict[str, t.Any], figures)


@pytest.mark.stress
def test_pool_has_no_errors_and_a_bounded_number_of_connections(quiet_app: Flask) -> None:
    figures = _pooled(quiet_app, pool_size=4)
    assert figures["requests"] > 0
    assert figures["errors"] == figures["wrong_rows"] == figures["lost_rows"] == 0
    assert figures["connections_opened"] <= 4
    assert figures["server_connections"] <= 4
    assert figures["pool_size"] == 4


@pytest.mark.stress
def test_pool_in_worker_processes_stays_within_size_times_workers(quiet_app: Flask) -> None:
    figures = _pooled(quiet_app, pool_size=3, workers=2, threads=4)
    assert figures["requests"] > 0
    assert figures["errors"] == figures["wrong_rows"] == 0
    assert 0 < figures["connections_opened"] <= 6
    assert figures["server_connections"] <= 6


@pytest.mark.stress
def test_write_workload_finds_lost_or_foreign_rows_only_when_shared(app: Flask,
                                                                    admin: t.Any) -> None:
    data = _run(app, strategies=("global", "pooled"), write=True, threads=8)["strategies"]
    glob, pooled = data["global"], data["pooled"]
    assert glob["wrong_rows"] + glob["lost_rows"] + glob["errors"] > 0
    assert pooled["requests"] > 0
    assert pooled["errors"] == pooled["wrong_rows"] == pooled["lost_rows"] == 0
    assert server_count(admin, "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                        "TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE '\\_poolkit\\_stress%'") == 0


@pytest.mark.stress
def test_endpoint_and_query_use_the_apps_own_views(app: Flask) -> None:
    @app.get("/answer")
    def answer() -> dict[str, int]:
        return {"answer": db.scalar("SELECT 42")}

    data = _run(app, strategies=("per-view", "pooled"), endpoint="/answer", seconds=0.5,
                threads=4)["strategies"]
    assert data["pooled"]["requests"] > 0 and data["pooled"]["errors"] == 0
    assert data["per-view"]["connections_opened"] == data["per-view"]["requests"] > 0
    queried = _run(app, strategies=("pooled",), query="SELECT 1", seconds=0.5, threads=4)
    assert queried["strategies"]["pooled"]["errors"] == 0


def test_unknown_endpoint_is_a_clear_error(app: Flask) -> None:
    with pytest.raises(StressError, match="--endpoint /nowhere: no GET view"):
        run_stress(app, StressOptions(endpoint="/nowhere", seconds=0.1))


@pytest.mark.stress
def test_requests_budget_stops_the_run(app: Flask) -> None:
    figures = _run(app, strategies=("pooled",), requests=50, seconds=None)
    assert figures["strategies"]["pooled"]["requests"] == 50


@pytest.mark.stress
def test_latency_counts_successful_requests_only(app: Flask) -> None:
    calls = iter(range(10_000))

    @app.get("/flaky")
    def flaky() -> tuple[str, int]:
        # Every other request fails at once; the others hold a connection for a moment.
        if next(calls) % 2:
            return "no", 500
        db.scalar("SELECT SLEEP(0.002)")
        return "ok", 200

    report = run_stress(app, StressOptions(strategies=("pooled",), endpoint="/flaky",
                                           requests=40, threads=1))
    result = report.results[0]
    figures = result.to_dict()
    assert (figures["requests"], figures["ok"], figures["errors"]) == (40, 20, 20)
    assert len(result.load.latencies) == len(result.load.failed_latencies) == 20
    assert figures["latency_ms"]["p50"] >= 2.0 > figures["failed_latency_ms"]["p50"]
    assert figures["checkouts"] == 20 and figures["timeouts"] == 0
    assert figures["wait_mean_ms"] is not None
