"""poolkit.metrics: Prometheus (one process and multiprocess mode) and OpenTelemetry, for real.

The Prometheus tests read prometheus_client's default registry, shared by the whole test
process: they compare values before and after, on the label of their own pool.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

import pytest
from flask import Flask

from poolkit import ConfigError, PoolTimeout, db, load_config

ROOT = Path(__file__).resolve().parents[1]
TYPES = {"db_client_connection_count": "gauge", "db_client_connection_max": "gauge",
         "db_client_connection_idle_max": "gauge", "db_client_connection_idle_min": "gauge",
         "db_client_connection_pending_requests": "gauge",
         "db_client_connection_timeouts_total": "counter",
         "db_client_connection_create_time_seconds": "histogram",
         "db_client_connection_wait_time_seconds": "histogram",
         "db_client_connection_use_time_seconds": "histogram"}


def _value(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def _metrics_app(make_app: t.Callable[..., Flask], **config: t.Any) -> tuple[Flask, str]:
    from poolkit.metrics.prometheus import pool_label

    app = make_app(POOLKIT_METRICS="prometheus", **config)

    @app.get("/one")
    def one() -> str:
        return str(db.scalar("SELECT 1"))

    label = pool_label(app.extensions["poolkit"].pool())
    assert label is not None
    return app, label


def test_prometheus_names_appear_after_a_few_requests(make_app: t.Callable[..., Flask],
                                                      database_url: str) -> None:
    from prometheus_client import generate_latest

    from poolkit.url import parse_url

    app, label = _metrics_app(make_app, POOLKIT_MAX_CONNECTIONS=3, POOLKIT_MAX_CACHED=2)
    url = parse_url(database_url)
    assert label.split("#")[0] == f"default@{url.host}:{url.port}"
    before = {name: _value(f"db_client_connection_{name}_time_seconds_count", pool_name=label)
              for name in ("wait", "use", "create")}
    client = app.test_client()
    for _ in range(5):
        assert client.get("/one").data == b"1"
    text = generate_latest().decode()
    for name, kind in TYPES.items():
        assert f"# TYPE {name} {kind}\n" in text, name
    assert f'db_client_connection_count{{pool_name="{label}",state="idle"}} 1.0' in text
    assert f'db_client_connection_count{{pool_name="{label}",state="used"}} 0.0' in text
    assert _value("db_client_connection_max", pool_name=label) == 3
    assert _value("db_client_connection_idle_max", pool_name=label) == 2
    assert _value("db_client_connection_idle_min", pool_name=label) == 0
    assert _value("db_client_connection_wait_time_seconds_count", pool_name=label) \
        == before["wait"] + 5
    assert _value("db_client_connection_use_time_seconds_count", pool_name=label) \
        == before["use"] + 5
    assert _value("db_client_connection_create_time_seconds_count", pool_name=label) \
        == before["create"] + 1
    assert _value("db_client_connection_create_time_seconds_sum", pool_name=label) > 0


def test_gauges_are_read_at_scrape_time_and_timeouts_counted(
        make_app: t.Callable[..., Flask]) -> None:
    app, label = _metrics_app(make_app, POOLKIT_MAX_CONNECTIONS=1, POOLKIT_TIMEOUT=0.05)
    pool = app.extensions["poolkit"].pool()
    timeouts = _value("db_client_connection_timeouts_total", pool_name=label)
    with pool.connection() as conn:
        conn.scalar("SELECT 1")
        assert _value("db_client_connection_count", pool_name=label, state="used") == 1
        assert _value("db_client_connection_count", pool_name=label, state="idle") == 0
        with pytest.raises(PoolTimeout):
            pool.connection()
    assert _value("db_client_connection_count", pool_name=label, state="used") == 0
    assert _value("db_client_connection_count", pool_name=label, state="idle") == 1
    assert _value("db_client_connection_timeouts_total", pool_name=label) == timeouts + 1


def test_two_apps_on_the_same_server_get_distinct_pool_names(
        make_app: t.Callable[..., Flask]) -> None:
    _first, first_label = _metrics_app(make_app)
    _second, second_label = _metrics_app(make_app)
    assert first_label != second_label
    assert second_label.split("#")[0] == first_label.split("#")[0]


def test_metrics_observe_their_pool_only_and_leave_with_it(database_url: str) -> None:
    # The histograms are fed by the instrumented pool's observer: no signal receiver is
    # connected (other pools pay no dispatch), another pool gets no observer, and a pool
    # that is gone leaves nothing registered behind.
    import gc
    import weakref

    from poolkit import Pool, signals
    from poolkit.metrics import otel, prometheus
    from poolkit.pool.observer import Observers

    before = len(signals.connection_checked_out.receivers)
    pool = Pool(load_config({"POOLKIT_DATABASE_URL": database_url}).pools["default"])
    other = Pool(load_config({"POOLKIT_DATABASE_URL": database_url}).pools["default"])
    prometheus.instrument([pool])
    otel.instrument([pool])
    prometheus.instrument([pool])  # idempotent: still one observer per backend
    assert len(signals.connection_checked_out.receivers) == before
    observer = pool.observer
    assert isinstance(observer, Observers)
    assert [type(o).__module__ for o in observer.observers] == ["poolkit.metrics.prometheus",
                                                               "poolkit.metrics.otel"]
    assert other.observer is None
    with other.connection() as conn:
        assert conn.scalar("SELECT 1") == 1
    label = prometheus.pool_label(pool)
    assert label is not None
    assert _value("db_client_connection_wait_time_seconds_count", pool_name=label) == 0
    for _ in range(3):  # one observation per checkout and per return, fast path included
        with pool.connection() as conn:
            assert conn.scalar("SELECT 1") == 1
    assert _value("db_client_connection_wait_time_seconds_count", pool_name=label) == 3
    assert _value("db_client_connection_use_time_seconds_count", pool_name=label) == 3
    assert _value("db_client_connection_create_time_seconds_count", pool_name=label) == 1
    gone = weakref.ref(observer.observers[0])
    pool.close()
    other.close()
    del pool, other, observer, conn  # (conn holds its pool)
    gc.collect()
    assert gone() is None  # _Metrics.pools dropped its entry with the pool


def test_opentelemetry_through_the_sdk_reader(make_pool: t.Callable[..., t.Any]) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from poolkit.metrics import otel

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    pool = make_pool(POOLKIT_MAX_CONNECTIONS=4)
    otel.instrument([pool], meter_provider=provider)
    for _ in range(3):
        with pool.connection() as conn:
            conn.scalar("SELECT 1")
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[t.Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "poolkit"
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    name = otel.POOL_NAME
    assert set(found) == {
        "db.client.connection.count", "db.client.connection.max",
        "db.client.connection.idle.max", "db.client.connection.idle.min",
        "db.client.connection.pending_requests", "db.client.connection.timeouts",
        "db.client.connection.create_time", "db.client.connection.wait_time",
        "db.client.connection.use_time"}
    counts = {p.attributes[otel.STATE]: p.value for p in found["db.client.connection.count"]}
    assert counts == {"idle": 1, "used": 0}
    assert [p.value for p in found["db.client.connection.max"]] == [4]
    assert found["db.client.connection.max"][0].attributes[name].startswith("default@")
    assert [p.count for p in found["db.client.connection.wait_time"]] == [3]
    assert [p.count for p in found["db.client.connection.use_time"]] == [3]
    assert [p.count for p in found["db.client.connection.create_time"]] == [1]
    assert [p.value for p in found["db.client.connection.timeouts"]] == [0]
    provider.shutdown()


@pytest.mark.parametrize(("value", "message"), [
    ("statsd", "POOLKIT_METRICS must be one of 'prometheus', 'opentelemetry' or None (off), "
               "not 'statsd'"),
    (True, "POOLKIT_METRICS must be one of"),
])
def test_bad_metrics_value_is_a_config_error(value: t.Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config({"POOLKIT_DATABASE_URL": "mysql://u@h/db", "POOLKIT_METRICS": value})


def test_missing_backend_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError) as caught:
        load_config({"POOLKIT_DATABASE_URL": "mysql://u@h/db", "POOLKIT_METRICS": "prometheus"})
    assert str(caught.value) == ("POOLKIT_METRICS='prometheus' needs the prometheus_client "
                                 "package: pip install 'poolkit[metrics]'")
    assert load_config({"POOLKIT_DATABASE_URL": "mysql://u@h/db"}).metrics is None


# -- in a fresh interpreter: what gets imported, the global OTel provider, multiprocess -------
_APP = """
import json, os, sys
from flask import Flask
from poolkit import Poolkit, db
app = Flask("metrics_subprocess")
app.config.update(POOLKIT_DATABASE_URL={url!r}, POOLKIT_MAX_CONNECTIONS=3, {config})
Poolkit(app)
@app.get("/one")
def one():
    return str(db.scalar("SELECT 1"))
client = app.test_client()
for _ in range({requests}):
    assert client.get("/one").data == b"1"
"""


def _python(code: str, **env: str) -> dict[str, t.Any]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    full.update(env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return t.cast(dict[str, t.Any], json.loads(done.stdout.strip().splitlines()[-1]))


_IMPORTED = """
prefixes = ("prometheus_client", "opentelemetry", "poolkit.metrics")
found = {".".join(m.split(".")[:2]) if m.startswith("poolkit.") else m.split(".")[0]
         for m in sys.modules if m.startswith(prefixes)}
print(json.dumps({"imported": sorted(found)}))
"""


@pytest.mark.parametrize(("config", "imported"), [
    ("", []),
    ("POOLKIT_METRICS=None", []),
    ("POOLKIT_METRICS='prometheus'", ["poolkit.metrics", "prometheus_client"]),
])
def test_only_the_chosen_backend_is_imported(database_url: str, config: str,
                                             imported: list[str]) -> None:
    code = _APP.format(url=database_url, config=config, requests=3) + _IMPORTED
    assert _python(code)["imported"] == imported


_OTEL_GLOBAL = """
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
"""
_OTEL_POINTS = """
points = {}
for rm in reader.get_metrics_data().resource_metrics:
    for sm in rm.scope_metrics:
        for m in sm.metrics:
            for p in m.data.data_points:
                points[m.name] = getattr(p, "count", getattr(p, "value", None))
print(json.dumps({"points": points,
                  "prometheus": any(m.startswith("prometheus_client") for m in sys.modules)}))
"""


def test_opentelemetry_through_the_global_provider(database_url: str) -> None:
    app = _APP.format(url=database_url, requests=3, config="POOLKIT_METRICS='opentelemetry'")
    result = _python(_OTEL_GLOBAL + app + _OTEL_POINTS)
    assert result["prometheus"] is False
    assert result["points"]["db.client.connection.wait_time"] == 3
    assert result["points"]["db.client.connection.max"] == 3


def test_prometheus_multiprocess_mode_sums_live_workers(database_url: str,
                                                        tmp_path: Path) -> None:
    # Two forked workers serve three requests each; the parent (a --preload master that never
    # serves) scrapes through a MultiProcessCollector, then one worker is marked dead.
    code = _APP.format(url=database_url, config="POOLKIT_METRICS='prometheus'",
                       requests=0) + """
from prometheus_client import multiprocess
import time
from poolkit.metrics.prometheus import PUBLISH_INTERVAL, exposition, pool_label
from prometheus_client.parser import text_string_to_metric_families
label = pool_label(app.extensions["poolkit"].pool())
def scrape():
    text = exposition()[0].decode()
    return {s.name + ("/" + s.labels["state"] if "state" in s.labels else ""): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("pool_name") == label}
pids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        try:
            c = app.test_client()
            for _ in range(3):
                assert c.get("/one").data == b"1"
            time.sleep(PUBLISH_INTERVAL + 0.5)  # the worker's thread writes its gauges
        finally:
            os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
both = scrape()
multiprocess.mark_process_dead(pids[0])
one = scrape()
print(json.dumps({"both": both, "one": one}))
"""
    result = _python(code, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    both, one = result["both"], result["one"]
    assert both["db_client_connection_wait_time_seconds_count"] == 6
    assert both["db_client_connection_max"] == 6  # 2 live workers × 3; the parent never wrote
    assert both["db_client_connection_count/idle"] == 2
    assert both["db_client_connection_count/used"] == 0
    assert one["db_client_connection_max"] == 3
    assert one["db_client_connection_wait_time_seconds_count"] == 6  # counters keep the dead
