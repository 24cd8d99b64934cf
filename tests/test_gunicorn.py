"""The example app under real gunicorn: sync --preload, gthread and gevent workers, HUP, 503.

Each test loads a fresh database with ``flask initdb`` (examples' sql/), starts gunicorn on
``127.0.0.1:0`` (the port is read from its log), sends real HTTP requests from client threads
(http.client, one connection per request) for a couple of seconds, and stops it: SIGTERM, then
SIGKILL to its whole process group. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import typing as t
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import query_rows

from poolkit.url import parse_url

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 40.0
LOAD_SECONDS = 2.0
_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


class Gunicorn:
    """One gunicorn master and its workers, in their own process group."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0",
                   "-c", str(ROOT / "examples" / "gunicorn.conf.py"), "--chdir", str(ROOT),
                   "--graceful-timeout", "10", *args, "examples.app:create_app()"]
        self.log: list[str] = []
        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.port:
            for line in list(self.log):
                if match := _LISTENING.search(line):
                    self.port = int(match.group(1))
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("gunicorn did not start:\n" + "\n".join(self.log))
            time.sleep(0.05)
        while True:  # the app is loaded (and the database answers) in at least one worker
            try:
                if get(self.port, "/whoami")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("gunicorn never answered:\n" + "\n".join(self.log))
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their master
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def call(port: int, method: str, path: str,
         body: dict[str, t.Any] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    return call(port, "GET", path)


@dataclass
class Load:
    """What the client threads saw: (seconds since start, status, JSON body) and errors."""

    answers: list[tuple[float, int, dict[str, t.Any]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    peak_server_connections: int = 0
    sampler_errors: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        bad = [f"HTTP {status}: {body}" for _, status, body in self.answers
               if status not in (200, 201)]
        return self.errors + bad

    def owners(self) -> dict[int, set[int]]:
        """Server connection id → the worker pids that used it."""
        seen: dict[int, set[int]] = {}
        for _, _, body in self.answers:
            if "connection_id" in body:
                seen.setdefault(body["connection_id"], set()).add(body["pid"])
        return seen


def drive(port: int, url: str, threads: int, seconds: float,
          at: tuple[float, t.Callable[[], None]] | None = None) -> Load:
    """*threads* clients, each alternating /whoami and a 1.00 transfer, for *seconds*.

    A sampler counts the server's connections to the test database meanwhile; *at* runs one
    action (a HUP) that many seconds into the load.
    """
    load = Load()
    lock = threading.Lock()
    start = time.monotonic()
    end = start + seconds
    database = parse_url(url).database

    def client(index: int) -> None:
        rng = random.Random(index)
        n = 0
        while time.monotonic() < end:
            n += 1
            try:
                if n % 2:
                    status, _, raw = get(port, "/whoami")
                else:
                    source, target = rng.sample(range(1, 11), 2)
                    status, _, raw = call(port, "POST", "/transfers",
                                          {"source": source, "target": target, "amount": "1.00"})
                body = json.loads(raw) if raw.startswith(b"{") else {"text": raw[:200]}
                with lock:
                    load.answers.append((time.monotonic() - start, status, body))
            except Exception as error:
                with lock:
                    load.errors.append(f"{type(error).__name__}: {error}")

    def sampler() -> None:
        sql = ("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '"
               f"{database}' AND ID <> CONNECTION_ID()")
        while time.monotonic() < end:
            try:
                count = int(query_rows(url, sql)[0][0])
            except Exception as error:  # a sample lost to the server is a sample, not a failure
                load.sampler_errors.append(f"{type(error).__name__}: {error}")
            else:
                load.peak_server_connections = max(load.peak_server_connections, count)
            time.sleep(0.1)

    workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    workers.append(threading.Thread(target=sampler, daemon=True))
    for worker in workers:
        worker.start()
    if at is not None:
        time.sleep(max(0.0, start + at[0] - time.monotonic()))
        at[1]()
    for worker in workers:
        worker.join(seconds + 30)
    assert not any(worker.is_alive() for worker in workers), "a client thread hung"
    return load


@pytest.fixture
def example_db(make_database: t.Callable[[], str]) -> str:
    """A fresh database with the example app's schema and seed, loaded by `flask initdb`."""
    url = make_database()
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "examples.app", "initdb",
                           "-q"], cwd=ROOT, env=_env(url), capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return url


def _env(url: str, **config: t.Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POOLKIT_", "FLASK_", "PROMETHEUS_"))}
    env["POOLKIT_DATABASE_URL"] = url
    for key, value in config.items():
        env[f"FLASK_POOLKIT_{key}"] = json.dumps(value)
    return env


@pytest.fixture
def serve() -> t.Iterator[t.Callable[..., Gunicorn]]:
    """Start gunicorn with args and env; every server is stopped at the end, whatever happens."""
    started: list[Gunicorn] = []

    def start(args: list[str], env: dict[str, str]) -> Gunicorn:
        server = Gunicorn(args, env)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def total(port: int) -> dict[str, t.Any]:
    status, _, raw = get(port, "/accounts/total")
    assert status == 200, raw
    return t.cast(dict[str, t.Any], json.loads(raw))


WORKERS = 2
SHAPES = {
    # name: (gunicorn args, pool per worker, client threads)
    "sync-preload": (["-w", "2", "--preload"], 2, 6),
    "gthread": (["-w", "2", "-k", "gthread", "--threads", "4"], 2, 10),
    "gevent": (["-w", "2", "-k", "gevent", "--worker-connections", "64"], 3, 12),
}


def _metrics_env(url: str, tmp_path: Path, **config: t.Any) -> dict[str, str]:
    """The env of a server with POOLKIT_METRICS = "prometheus" in multiprocess mode."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = _env(url, METRICS="prometheus", **config)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return env


def scrape_until_max(port: int, url: str, expected: float) -> dict[t.Any, float]:
    """Scrape /metrics until db_client_connection_max (summed over live workers) is *expected*.

    A worker writes its gauges from its first checkout on, once a second: requests in between
    make every worker serve one.
    """
    parsed = parse_url(url)
    name = (("pool_name", f"default@{parsed.host}:{parsed.port}"),)
    deadline = time.monotonic() + 15
    while True:
        samples = _samples(get(port, "/metrics")[2].decode())
        found = samples.get(("db_client_connection_max", name))
        if found == expected:
            return {key[0] + "".join(f"/{v}" for k, v in key[1] if k == "state"): value
                    for key, value in samples.items() if key[1][:1] == name}
        assert time.monotonic() < deadline, f"db_client_connection_max: {found} != {expected}"
        for _ in range(4):
            get(port, "/whoami")
        time.sleep(0.2)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_workers_share_nothing_and_keep_the_balance(shape: str, example_db: str,
                                                    serve: t.Callable[..., Gunicorn],
                                                    tmp_path: Path) -> None:
    args, pool_size, threads = SHAPES[shape]
    # MIN_CACHED=1: with --preload the master opens a connection before it forks; the workers
    # must never use the socket they inherit (and the master must not count in the metrics).
    server = serve(args, _metrics_env(example_db, tmp_path, MAX_CONNECTIONS=pool_size,
                                      MIN_CACHED=1))
    assert total(server.port) == {"accounts": 10, "total": "10000.00"}
    load = drive(server.port, example_db, threads, LOAD_SECONDS)
    print(f"\n[{shape}] {len(load.answers)} requests in {LOAD_SECONDS:g} s, peak server "
          f"connections {load.peak_server_connections}, connections used "
          f"{len(load.owners())}, worker pids {sorted({b['pid'] for _, _, b in load.answers})}")
    assert load.failures() == []
    assert len(load.answers) > 20
    owners = load.owners()
    shared = {cid: pids for cid, pids in owners.items() if len(pids) > 1}
    assert shared == {}, f"server connections used by two processes: {shared}"
    assert len(owners) <= WORKERS * pool_size
    # + 1: the --preload master keeps its own prefilled connection (it never serves).
    master = 1 if "--preload" in args else 0
    assert 0 < load.peak_server_connections <= WORKERS * pool_size + master, load.sampler_errors
    assert len({body["pid"] for _, _, body in load.answers}) == WORKERS
    assert total(server.port) == {"accounts": 10, "total": "10000.00"}
    rows = query_rows(example_db, "SELECT COUNT(*), SUM(balance), MIN(balance) FROM account")
    assert rows[0][:2] == (10, Decimal("10000.00")) and rows[0][2] >= 0
    metrics = scrape_until_max(server.port, example_db, WORKERS * pool_size)
    assert metrics["db_client_connection_wait_time_seconds_count"] >= len(load.answers)
    assert metrics["db_client_connection_idle_min"] == WORKERS  # MIN_CACHED=1 each
    assert 1 <= metrics["db_client_connection_count/idle"] <= len(owners)


def test_pool_timeout_answers_503_with_retry_after(example_db: str,
                                                   serve: t.Callable[..., Gunicorn]) -> None:
    server = serve(["-w", "1", "-k", "gthread", "--threads", "4"],
                   _env(example_db, MAX_CONNECTIONS=1, TIMEOUT=0.3))
    barrier = threading.Barrier(3)
    answers: list[tuple[int, dict[str, str]]] = []

    def slow() -> None:
        barrier.wait(10)
        status, headers, _ = get(server.port, "/slow?seconds=1.5")
        answers.append((status, headers))

    clients = [threading.Thread(target=slow) for _ in range(3)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    assert sorted(status for status, _ in answers) == [200, 503, 503]
    for status, headers in answers:
        if status == 503:
            retry = {k.lower(): v for k, v in headers.items()}.get("retry-after")
            assert retry is not None and retry.isdigit() and int(retry) >= 1, headers


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_hup_mid_load_loses_no_request_and_metrics_follow(
        example_db: str, serve: t.Callable[..., Gunicorn], tmp_path: Path) -> None:
    server = serve(["-w", "2"], _metrics_env(example_db, tmp_path, MAX_CONNECTIONS=2))
    first = {json.loads(get(server.port, "/whoami")[2])["pid"] for _ in range(6)}
    load = drive(server.port, example_db, 6, 3.5,
                 at=(1.0, lambda: os.kill(server.proc.pid, signal.SIGHUP)))
    late = {body["pid"] for when, _, body in load.answers if when > 3.0}
    print(f"\n[HUP] {len(load.answers)} requests, workers before {sorted(first)}, "
          f"at the end {sorted(late)}")
    assert load.failures() == []
    assert late and not late & first, "the HUP did not replace the workers"
    assert total(server.port) == {"accounts": 10, "total": "10000.00"}

    # The old workers' gauges left the sums (child_exit → mark_process_dead); their
    # histograms stayed: every request above checked out once.
    metrics = scrape_until_max(server.port, example_db, WORKERS * 2)
    assert metrics["db_client_connection_wait_time_seconds_count"] \
        >= len(load.answers) + len(first)
    assert metrics["db_client_connection_use_time_seconds_count"] >= len(load.answers)
    used, idle = metrics["db_client_connection_count/used"], metrics[
        "db_client_connection_count/idle"]
    assert 0 <= used <= WORKERS * 2 and 1 <= used + idle <= WORKERS * 2
    assert metrics["db_client_connection_timeouts_total"] == 0
