"""poolkit.stress.sweep: sizes, the recommendation rule, the rule of thumb, a short sweep."""

from __future__ import annotations

import typing as t
from collections import Counter

import pytest
from conftest import server_count
from flask import Flask

from poolkit.stress.report import Load, ServerFigures, StrategyResult
from poolkit.stress.runner import ServerMonitor, StressError, StressOptions
from poolkit.stress.sweep import parse_sizes, recommend, rule_of_thumb, run_sweep
from poolkit.url import parse_url


def test_parse_sizes_sorts_and_deduplicates() -> None:
    assert parse_sizes("8, 1,2,4,2") == (1, 2, 4, 8)
    with pytest.raises(StressError, match="'x' is not a pool size"):
        parse_sizes("1,x")
    with pytest.raises(StressError, match="between 1 and 1000, not 0"):
        parse_sizes("0,4")
    with pytest.raises(StressError, match="needs pool sizes"):
        parse_sizes(" , ")
    with pytest.raises(StressError, match="at most 12 sizes"):
        parse_sizes(",".join(str(n) for n in range(1, 14)))


def _point(size: int, ok_per_s: float, p99_ms: float, errors: int = 0) -> StrategyResult:
    requests = int(ok_per_s * 2) + errors
    load = Load(requests=requests, elapsed=2.0, errors=Counter({"PoolTimeout: x": errors}),
                checkouts=requests, wait_time_total=0.0)
    # 100 successful latencies whose p99 is p99_ms (99 fast ones and one slow).
    load.latencies.extend([0.001] * 98 + [p99_ms / 1000] * 2)
    load.requests = len(load.latencies) + errors
    load.elapsed = len(load.latencies) / ok_per_s
    return StrategyResult("pooled", load, ServerFigures(size, size, 1), size)


def test_recommend_the_smallest_size_near_both_bests() -> None:
    points = [_point(1, 500, 30), _point(2, 960, 10.5), _point(4, 1000, 10), _point(8, 990, 12)]
    advice = recommend(points)
    assert advice.pool_size == 2  # 960 ≥ 95 % of 1000 and 10.5 ≤ 110 % of 10
    assert (advice.best_ok_per_s_size, advice.best_p99_size) == (4, 4)
    assert not advice.throughput_only
    assert advice.best_ok_per_s == pytest.approx(1000)
    assert "within 5 % of the best throughput and 10 % of the best p99" in advice.reason


def test_recommend_leaves_out_sizes_with_errors_and_falls_back_to_throughput() -> None:
    points = [_point(1, 2000, 5, errors=3), _point(2, 1000, 20), _point(4, 990, 40),
              _point(8, 700, 9)]
    advice = recommend(points)
    assert advice.pool_size == 2  # 1 timed out; no size is near both 1000 req/s and 9 ms
    assert advice.throughput_only
    assert "no size was also within 10 % of the best p99" in advice.reason
    assert recommend([]).pool_size is None


def test_rule_of_thumb_uses_the_servers_thread_pool_size(database_url: str,
                                                         admin: t.Any) -> None:
    url = parse_url(database_url)
    monitor = ServerMonitor(url.connect_kwargs(), url.masked())
    try:
        rule = rule_of_thumb(monitor, url)
        said = monitor.variable("thread_pool_size")
        assert monitor.variable("no_such_variable_here") is None
    finally:
        monitor.close()
    if said is not None:  # MariaDB: its default is the number of the server's CPUs
        assert rule.cores == int(said) == server_count(admin, "SELECT @@thread_pool_size")
        assert rule.cores_from == "@@thread_pool_size"
    else:  # MySQL on this machine
        assert rule.cores_from.startswith("os.cpu_count()")
    assert rule.cores is not None and rule.pool_size == rule.cores * 2 + 1


@pytest.mark.stress
def test_a_short_sweep_measures_each_size(app: Flask) -> None:
    seen: list[int] = []
    report = run_sweep(app, StressOptions(threads=4, seconds=0.5), (1, 3),
                       point=lambda r: seen.append(r.pool_size or 0))
    assert seen == [1, 3]
    data = report.to_dict()
    assert list(data) == ["schema", "database", "settings", "sweep"]
    assert data["settings"]["sizes"] == [1, 3]
    sweep = data["sweep"]
    assert [p["pool_size"] for p in sweep["points"]] == [1, 3]
    for point in sweep["points"]:
        assert point["requests"] > 0 and point["errors"] == 0
        assert point["connections_opened"] <= point["pool_size"]
        assert point["timeouts"] == 0 and point["wait_mean_ms"] >= 0
    assert sweep["recommended_pool_size"] in (1, 3)
    assert sweep["rule_of_thumb"]["pool_size"] == sweep["rule_of_thumb"]["cores"] * 2 + 1
    # one connection for four threads: they wait for it
    assert sweep["points"][0]["wait_mean_ms"] > 0


def test_sweep_of_an_app_without_poolkit_is_refused() -> None:
    with pytest.raises(StressError, match="does not use poolkit"):
        run_sweep(Flask("plain"), StressOptions(seconds=0.1), (1, 2))
