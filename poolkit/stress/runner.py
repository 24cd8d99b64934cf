"""``flask pool-stress``: measure a global connection, a connection per view and the pool.

:func:`run_stress` drives the user's own app through WSGI (routing, app context, hooks,
teardown) from N threads — or N threads in each of P forked workers — once per strategy
(:mod:`poolkit.stress.strategies`). During a run a ``before_request`` hook binds ``db`` to the
strategy's connection, so the same view code runs against all three: the stress views under
``/_poolkit/stress/`` (``SELECT %s`` of a per-request nonce, INSERT-then-SELECT-own-row with
``write``, or the user's ``query``) or an existing view of the app (``endpoint``).

A separate admin connection reads the server's ``Connections`` counter before and after each
run and samples ``Threads_connected``. Figures and verdicts are in
:mod:`poolkit.stress.report`; nothing here prints (``progress`` is a callback).
"""

from __future__ import annotations

import io
import secrets
import threading
import time
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

import pymysql
from flask import Blueprint, Flask, current_app, request
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.test import EnvironBuilder

from ..errors import PoolkitError
from ..extension import EXTENSION_KEY, db
from ._private import bind_request_connection
from .load import GRACE, LocalLoad, Plan, ProcessLoad, Tick
from .report import (
    STRATEGIES,
    Load,
    ServerFigures,
    StrategyResult,
    StressReport,
    WrongRow,
    percentile,
)
from .strategies import Strategy, make_strategy

STATE_KEY = "poolkit_stress"
PREFIX = "/_poolkit/stress"
DEFAULT_SECONDS = 3.0
#: Time limit of a run bounded by ``requests`` only.
MAX_SECONDS = 600.0
_LIMITS = {"threads": (1, 512), "workers": (1, 32), "pool_size": (1, 1000)}


class StressError(PoolkitError):
    """The stress run cannot start; the message says what to change."""


@dataclass(frozen=True)
class StressOptions:
    """What to run; :meth:`validate` explains any bad value in one line."""

    strategies: tuple[str, ...] = STRATEGIES
    threads: int = 16
    seconds: float | None = None
    requests: int | None = None
    pool_size: int | None = None  # None: the app's POOLKIT_MAX_CONNECTIONS
    warmup: float = 0.0
    workers: int = 1
    query: str | None = None
    endpoint: str | None = None
    write: bool = False

    @property
    def workload(self) -> str:
        """``select`` (default), ``write``, ``query`` or ``endpoint``."""
        if self.endpoint:
            return "endpoint"
        if self.query:
            return "query"
        return "write" if self.write else "select"

    @property
    def time_limit(self) -> float:
        """Seconds per strategy: ``seconds``, else 3, else (with ``requests``) 600 at most."""
        if self.seconds is not None:
            return self.seconds
        return MAX_SECONDS if self.requests is not None else DEFAULT_SECONDS

    def validate(self) -> None:
        """Raise :class:`StressError` naming the option when a value is out of range."""
        if not self.strategies:
            raise StressError("--strategy is empty: give one or more of " + ", ".join(STRATEGIES))
        for name, (low, high) in _LIMITS.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                flag = "--" + name.replace("_", "-")
                raise StressError(f"{flag} must be between {low} and {high}, not {value}")
        if self.seconds is not None and not 0 < self.seconds <= MAX_SECONDS:
            raise StressError(f"--seconds must be more than 0 and at most {MAX_SECONDS:g}, "
                              f"not {self.seconds:g}")
        if self.requests is not None and self.requests < 1:
            raise StressError(f"--requests must be at least 1, not {self.requests}")
        if not 0 <= self.warmup <= 60:
            raise StressError(f"--warmup must be between 0 and 60 seconds, not {self.warmup:g}")
        chosen = [name for name in ("query", "endpoint", "write") if getattr(self, name)]
        if len(chosen) > 1:
            raise StressError(f"--{chosen[0]} and --{chosen[1]} choose different workloads; "
                              "pick one")
        if self.endpoint is not None and not self.endpoint.startswith("/"):
            raise StressError(f"--endpoint must be a path such as /employees, "
                              f"not {self.endpoint!r}")


def parse_strategies(text: str) -> tuple[str, ...]:
    """``"global,pooled"`` → ``("global", "pooled")``, in the order given, without repeats."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip().lower().replace("_", "-")
        if name == "perview":
            name = "per-view"
        if name not in STRATEGIES:
            raise StressError(f"--strategy: unknown strategy {raw.strip()!r}; choose from "
                              + ", ".join(STRATEGIES) + " (comma-separated)")
        if name not in names:
            names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class Progress:
    """The last second of a running strategy, for a progress line."""

    elapsed: float
    strategy: str
    threads: int
    workers: int
    req_per_s: float
    p95_ms: float
    err_per_s: float


# -- the app side: stress views and the hook that binds db to the strategy ------------------
class _StressState:
    def __init__(self) -> None:
        self.active: Strategy | None = None
        self.query = ""
        self.table = ""
        self.outcome = threading.local()


def _fail(error: Exception) -> tuple[str, int]:
    # The view hands its exception to the load thread directly: an app's own error handlers
    # or logging never see it, and a wrong row is never mistaken for a server error.
    t.cast(_StressState, current_app.extensions[STATE_KEY]).outcome.error = error
    return "error", 500


def _check(nonce: str, got: t.Any) -> None:
    if got != nonce:
        raise WrongRow(f"sent {nonce!r}, got {got!r}", lost=got is None)


def _select_view() -> tuple[str, int] | str:
    nonce = request.args.get("n", "")
    try:
        _check(nonce, db.scalar("SELECT %s", (nonce,)))
    except Exception as error:
        return _fail(error)
    return "ok"


def _write_view() -> tuple[str, int] | str:
    nonce = request.args.get("n", "")
    table = t.cast(_StressState, current_app.extensions[STATE_KEY]).table
    try:
        with db.transaction():
            db.execute(f"INSERT INTO `{table}` (nonce) VALUES (%s)", (nonce,))
            row_id = db.scalar("SELECT LAST_INSERT_ID()")
        _check(nonce, db.scalar(f"SELECT nonce FROM `{table}` WHERE id = %s", (row_id,)))
    except Exception as error:
        return _fail(error)
    return "ok"


def _query_view() -> tuple[str, int] | str:
    try:
        db.query(t.cast(_StressState, current_app.extensions[STATE_KEY]).query)
    except Exception as error:
        return _fail(error)
    return "ok"


_blueprint = Blueprint("poolkit_stress", __name__, url_prefix=PREFIX)
_blueprint.add_url_rule("/select", view_func=_select_view)
_blueprint.add_url_rule("/write", view_func=_write_view)
_blueprint.add_url_rule("/query", view_func=_query_view)


def _bind_strategy() -> None:
    strategy = t.cast(_StressState, current_app.extensions[STATE_KEY]).active
    if strategy is not None and not strategy.via_extension:
        # The extension's teardown closes whatever is bound here, as it does for the pool.
        bind_request_connection(strategy.request_connection())


def install(app: Flask) -> None:
    """Add the stress views and the strategy hook to *app* (once; a no-op between runs)."""
    if STATE_KEY in app.extensions:
        return
    if EXTENSION_KEY not in app.extensions:
        raise StressError(f"the Flask app {app.name!r} does not use poolkit: call "
                          "Poolkit(app) or pool.init_app(app) in it first")
    try:
        app.register_blueprint(_blueprint)
    except AssertionError:
        raise StressError("the app has already handled a request: run the stress on a fresh "
                          "app (flask pool-stress loads one)") from None
    # First of the before_request hooks, so the app's own hooks see the strategy's db too.
    app.before_request_funcs.setdefault(None, []).insert(0, _bind_strategy)
    app.extensions[STATE_KEY] = _StressState()


class HTTPStatusError(Exception):
    """The app answered a stress request with an error status."""


class _AppSession:
    """One strategy driving the app in this process (see :class:`poolkit.stress.load.Session`)."""

    def __init__(self, app: Flask, strategy: Strategy, path: str, query: str,
                 nonce: bool) -> None:
        self._app = app
        self._strategy = strategy
        self._state = t.cast(_StressState, app.extensions[STATE_KEY])
        self._state.active = strategy
        self._environ = EnvironBuilder(path=path, base_url="http://localhost/").get_environ()
        self._query = query
        self._nonce = nonce

    def request(self, nonce: str) -> None:
        # A copy of a prepared environ: a third of the cost of app.test_client(), same cycle.
        environ = dict(self._environ)
        environ["QUERY_STRING"] = f"n={nonce}" if self._nonce else self._query
        environ["wsgi.input"] = io.BytesIO()
        outcome = self._state.outcome
        outcome.error = None
        statuses: list[str] = []

        def start_response(status: str, headers: t.Any, exc_info: t.Any = None) -> t.Any:
            statuses.append(status)
            return None

        body = self._app(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        error = outcome.error
        if error is not None:
            outcome.error = None
            raise error
        code, _, reason = statuses[0].partition(" ")
        if int(code) >= 400:
            raise HTTPStatusError(int(code), reason)

    def connect_figures(self) -> tuple[int, float, float | None]:
        return self._strategy.connect_figures()

    def pool_figures(self) -> tuple[int, float, int] | None:
        return self._strategy.pool_figures()

    def abort(self) -> None:
        self._strategy.abort()

    def close(self) -> None:
        self._state.active = None
        self._strategy.close()


# -- the server side ---------------------------------------------------------------------------
class ServerMonitor:
    """A separate admin connection reading ``Connections`` and ``Threads_connected``."""

    def __init__(self, kwargs: dict[str, t.Any], where: str) -> None:
        try:
            self._con = pymysql.connect(**kwargs, autocommit=True, connect_timeout=5,
                                        read_timeout=5, write_timeout=5)
        except pymysql.Error as error:
            raise StressError(f"cannot connect to {where}: {error}") from None

    def status(self) -> tuple[int, int]:
        """The server's ``Connections`` counter and ``Threads_connected`` now."""
        with self._con.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS WHERE Variable_name IN "
                           "('Connections', 'Threads_connected')")
            values = {name.lower(): int(value) for name, value in cursor.fetchall()}
        return values["connections"], values["threads_connected"]

    def variable(self, name: str) -> str | None:
        """A global server variable as text, None when this server has no such variable."""
        with self._con.cursor() as cursor:
            cursor.execute("SHOW GLOBAL VARIABLES LIKE %s", (name.replace("_", "\\_"),))
            row = cursor.fetchone()
        return None if row is None else str(row[1])

    def execute(self, sql: str) -> None:
        """Run one statement (the scratch table of ``--write``)."""
        with self._con.cursor() as cursor:
            cursor.execute(sql)

    def close(self) -> None:
        """Close the admin connection."""
        self._con.close()


# -- the runner --------------------------------------------------------------------------------
def _target(app: Flask, options: StressOptions) -> tuple[str, str, bool]:
    """The path and query string each request uses, and whether it carries a nonce."""
    if options.endpoint is None:
        return f"{PREFIX}/{options.workload}", "", options.workload != "query"
    parts = urlsplit(options.endpoint)
    try:
        app.url_map.bind("localhost").match(parts.path, "GET")
    except (NotFound, MethodNotAllowed):
        raise StressError(f"--endpoint {parts.path}: no GET view of the app matches that "
                          "path (see 'flask routes')") from None
    except Exception:  # a redirect or the like: the app itself answers it
        pass
    return parts.path, parts.query, False


def run_stress(app: Flask, options: StressOptions,
               progress: t.Callable[[Progress], None] | None = None) -> StressReport:
    """Run every chosen strategy against *app*, one after another, and return the figures."""
    options.validate()
    install(app)
    app_pool = app.extensions[EXTENSION_KEY].pool()
    url = app_pool.settings.url
    pool_size = options.pool_size or app_pool.settings.max_connections
    path, query, nonce = _target(app, options)
    state = t.cast(_StressState, app.extensions[STATE_KEY])
    state.query = options.query or ""
    report = StressReport(database=url.masked(), workload=options.workload,
                          threads=options.threads, workers=options.workers,
                          seconds=options.time_limit, requests=options.requests,
                          warmup=options.warmup, pool_size=pool_size)
    monitor = ServerMonitor(url.connect_kwargs(), url.masked())
    propagate = app.config.get("PROPAGATE_EXCEPTIONS")
    # An exception of the app's own view reaches the load thread with its type and message
    # (and is not logged once per request).
    app.config["PROPAGATE_EXCEPTIONS"] = True
    try:
        if options.workload == "write":
            state.table = f"_poolkit_stress_{secrets.token_hex(4)}"
            monitor.execute(f"CREATE TABLE `{state.table}` (id BIGINT AUTO_INCREMENT "
                            "PRIMARY KEY, nonce VARCHAR(64) NOT NULL) ENGINE=InnoDB")
        for name in options.strategies:
            def factory(name: str = name) -> _AppSession:
                strategy = make_strategy(name, app_pool, pool_size)
                return _AppSession(app, strategy, path, query, nonce)

            result = _run_one(name, factory, options, monitor, progress)
            if name == "pooled":
                result = StrategyResult(name, result.load, result.server, pool_size)
            report.results.append(result)
    finally:
        app.config["PROPAGATE_EXCEPTIONS"] = propagate
        try:
            if state.table:
                monitor.execute(f"DROP TABLE IF EXISTS `{state.table}`")
        finally:
            state.table = ""
            monitor.close()
    return report


def _run_one(name: str, factory: t.Callable[[], _AppSession], options: StressOptions,
             monitor: ServerMonitor,
             progress: t.Callable[[Progress], None] | None) -> StrategyResult:
    plan = Plan(options.threads, options.time_limit, options.requests, options.warmup)
    source: LocalLoad | ProcessLoad
    if options.workers == 1:
        source = LocalLoad(factory, plan)
    else:
        source = ProcessLoad(factory, plan, options.workers)
    try:
        source.prepare()
    except RuntimeError as error:
        raise StressError(f"{name}: {error}") from None
    connections_before, threads_before = monitor.status()
    peak = threads_before
    source.start()
    started = time.monotonic()
    hard_end = started + plan.seconds + 2 * GRACE
    window = Tick(latencies=[])
    next_report = started + 1.0
    try:
        while source.running():
            time.sleep(0.1)
            peak = max(peak, monitor.status()[1])
            tick = source.poll()
            window.requests += tick.requests
            window.errors += tick.errors
            assert window.latencies is not None
            window.latencies.extend(tick.latencies or ())
            now = time.monotonic()
            if now >= next_report:
                if progress is not None:
                    progress(_progress(name, options, now - started, window, now - next_report))
                window = Tick(latencies=[])
                next_report = now + 1.0
            if now > hard_end:
                source.stop()
                break
    finally:
        source.stop()
        load: Load = source.finish()
    connections_after, threads_after = monitor.status()
    server = ServerFigures(connections=connections_after - connections_before,
                           peak_threads_connected=max(peak, threads_after),
                           threads_connected_before=threads_before)
    return StrategyResult(name, load, server)


def _progress(name: str, options: StressOptions, elapsed: float, window: Tick,
              late: float) -> Progress:
    span = 1.0 + late
    ordered = sorted(window.latencies or ())
    p95 = percentile(ordered, 95) * 1000 if ordered else 0.0
    return Progress(elapsed=elapsed, strategy=name, threads=options.threads,
                    workers=options.workers, req_per_s=window.requests / span,
                    p95_ms=p95, err_per_s=window.errors / span)
