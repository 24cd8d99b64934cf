"""Read and validate the app's ``POOLKIT_*`` configuration once, at ``init_app``.

Every key, its default and its meaning is listed in ``KEYS`` and in docs/config.md.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import typing as t
from dataclasses import dataclass, field

from .errors import ConfigError
from .url import MASK, DatabaseURL, parse_url

PREFIX = "POOLKIT_"
DEFAULT_BIND = "default"

#: Driver timeouts poolkit sets unless the URL or POOLKIT_CONNECT_ARGS says otherwise, so
#: that a half-open socket can never hang a request or the pool (seconds).
DEFAULT_DRIVER_TIMEOUTS = {"connect_timeout": 10, "read_timeout": 60, "write_timeout": 60}

#: Driver arguments that set TLS: only the URL's ssl_mode/ssl_* may, so that one mode holds for
#: the pool, initdb, pool-status, dbshell and every host (see poolkit.tls).
TLS_CONNECT_ARGS = frozenset({"ssl", "ssl_ca", "ssl_cert", "ssl_key", "ssl_disabled",
                              "ssl_verify_cert", "ssl_verify_identity", "ssl_mode"})


def masked_args(args: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """*args* with the value of every key that names a password replaced by ``***``."""
    return {k: MASK if "pass" in str(k).lower() and v else v for k, v in args.items()}


#: Every POOLKIT_* key with its default. ``None`` for DATABASE_URL means "required".
KEYS: dict[str, t.Any] = {
    "DATABASE_URL": None,
    "MAX_CONNECTIONS": 10,
    "MIN_CACHED": 0,
    "MAX_CACHED": None,
    "MAX_USAGE": 0,
    "SESSION": (),
    "CONNECT_ARGS": {},
    "BLOCKING": True,
    "TIMEOUT": 30.0,
    "MAX_LIFETIME": 1800.0,
    "IDLE_TIMEOUT": 600.0,
    "PING_INTERVAL": 0.5,
    "RESET": "auto",
    "LEAK_THRESHOLD": None,
    "BINDS": {},
    "SQL_DIR": None,
    "COMMANDS_DIRS": None,
    "METRICS": None,
    # Scale-out (issue 14): multi-host URLs, replicas, failover; see docs/scale.md.
    "MAX_REPLICA_LAG": None,
    "FAILOVER_TIMEOUT": 5.0,
    "GALERA_ALLOWED_STATES": ("Synced",),
    "READ_YOUR_WRITES": True,
}

#: The Galera node states (``wsrep_local_state_comment`` up to its "/") that
#: POOLKIT_GALERA_ALLOWED_STATES may name: the states in which a node can have
#: ``wsrep_ready=ON`` (Joining, Waiting on SST and Initialized nodes refuse queries).
GALERA_STATES = ("Synced", "Donor", "Joined")

#: Keys that may be set per bind in POOLKIT_BINDS (the rest are app-wide).
POOL_KEYS = frozenset(KEYS) - {"BINDS", "SQL_DIR", "COMMANDS_DIRS", "METRICS",
                                   "READ_YOUR_WRITES"}

#: The values of POOLKIT_METRICS besides None (off), with the module each needs and how to
#: install it (see poolkit.metrics).
METRICS_BACKENDS = {
    "prometheus": ("prometheus_client", "pip install 'poolkit[metrics]'"),
    "opentelemetry": ("opentelemetry.metrics", "pip install opentelemetry-api opentelemetry-sdk"),
}


@dataclass(frozen=True)
class PoolSettings:
    """The settings of one pool, validated."""

    url: DatabaseURL
    name: str = DEFAULT_BIND
    max_connections: int = 10
    min_cached: int = 0
    max_cached: int = 10
    max_usage: int = 0
    session: tuple[str, ...] = ()
    connect_args: dict[str, t.Any] = field(default_factory=dict)
    blocking: bool = True
    timeout: float = 30.0
    max_lifetime: float = 1800.0
    idle_timeout: float = 600.0
    ping_interval: float = 0.5
    reset: str = "auto"
    leak_threshold: float | None = None
    max_replica_lag: float | None = None  # scale-out (issue 14)
    failover_timeout: float = 5.0
    galera_allowed_states: tuple[str, ...] = ("Synced",)

    def driver_kwargs(self) -> dict[str, t.Any]:
        """Arguments for the driver's connect(): defaults < URL options < CONNECT_ARGS."""
        kwargs: dict[str, t.Any] = dict(DEFAULT_DRIVER_TIMEOUTS)
        kwargs.update(self.url.connect_kwargs())
        guards = kwargs.get("auth_plugin_map", {})
        kwargs.update(self.connect_args)
        if guards and "auth_plugin_map" in self.connect_args:  # the app's own handlers win
            kwargs["auth_plugin_map"] = {**guards, **self.connect_args["auth_plugin_map"]}
        for name in DEFAULT_DRIVER_TIMEOUTS:
            if kwargs.get(name) == 0:  # 0 means "no timeout", as in the mysql client
                kwargs[name] = None
        return kwargs

    def describe(self) -> dict[str, t.Any]:
        """The settings as plain values, password masked, for `flask pool-status` and logs."""
        return {
            "name": self.name, "url": self.url.masked(), "driver": self.url.driver,
            "max_connections": self.max_connections, "min_cached": self.min_cached,
            "max_cached": self.max_cached, "max_usage": self.max_usage,
            "timeout": self.timeout, "max_lifetime": self.max_lifetime,
            "idle_timeout": self.idle_timeout, "ping_interval": self.ping_interval,
            "reset": self.reset, "leak_threshold": self.leak_threshold,
            "target": self.url.target, "max_replica_lag": self.max_replica_lag,
            "failover_timeout": self.failover_timeout, "ssl_mode": self.url.ssl_mode,
            "galera_allowed_states": list(self.galera_allowed_states),
        }

    def __repr__(self) -> str:
        # The dataclass repr would show a password given in POOLKIT_CONNECT_ARGS.
        return (f"PoolSettings(name={self.name!r}, url={self.url!r}, "
                f"connect_args={masked_args(self.connect_args)!r}, "
                f"max_connections={self.max_connections}, reset={self.reset!r})")


@dataclass(frozen=True)
class PoolkitConfig:
    """All pools of one app plus the app-wide keys."""

    pools: dict[str, PoolSettings]
    sql_dir: str | None = None
    #: None: the default folder (see poolkit.discovery.default_folders); () disables discovery.
    commands_dirs: tuple[str, ...] | None = None
    metrics: str | None = None
    read_your_writes: bool = True


def _number(key: str, value: t.Any, *, minimum: float, integer: bool) -> t.Any:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "a whole number" if integer else "a number of seconds"
        raise ConfigError(f"{key} must be {what}, not {value!r}")
    if value < minimum:
        raise ConfigError(f"{key} must be at least {minimum:g}, not {value!r}")
    return value


def _galera_states(key: str, value: t.Any) -> tuple[str, ...]:
    """The Galera states a pool's connections may use, in GALERA_STATES' spelling."""
    valid = {state.lower(): state for state in GALERA_STATES}
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple, set, frozenset)):
        names = None
    if not names or not all(isinstance(v, str) and v.strip().lower() in valid for v in names):
        raise ConfigError(f"{key} must be a non-empty list of Galera states out of "
                          f"{', '.join(GALERA_STATES)} (e.g. [\"Synced\", \"Donor\"]), "
                          f"not {value!r}")
    return tuple(dict.fromkeys(valid[v.strip().lower()] for v in names))


def _pool_settings(name: str, values: dict[str, t.Any], where: str) -> PoolSettings:
    def key(suffix: str) -> str:
        return f"{where}{suffix}" if where.endswith("_") else f"{where}[{suffix!r}]"

    url_value = values.get("DATABASE_URL")
    if url_value is None:
        raise ConfigError(f"{key('DATABASE_URL')} is not set: set it in the app config or the "
                          "environment, e.g. mysql://user:password@127.0.0.1:3306/app")
    url = parse_url(url_value, key("DATABASE_URL"))
    max_connections = _number(key("MAX_CONNECTIONS"), values["MAX_CONNECTIONS"],
                              minimum=1, integer=True)
    min_cached = _number(key("MIN_CACHED"), values["MIN_CACHED"], minimum=0, integer=True)
    max_cached = values["MAX_CACHED"]
    max_cached = max_connections if max_cached is None else _number(
        key("MAX_CACHED"), max_cached, minimum=0, integer=True)
    if min_cached > max_connections:
        raise ConfigError(f"{key('MIN_CACHED')}={min_cached} is more than "
                          f"{key('MAX_CONNECTIONS')}={max_connections}")
    if max_cached > max_connections:
        raise ConfigError(f"{key('MAX_CACHED')}={max_cached} is more than "
                          f"{key('MAX_CONNECTIONS')}={max_connections}")
    if min_cached > max_cached:
        raise ConfigError(f"{key('MIN_CACHED')}={min_cached} is more than "
                          f"{key('MAX_CACHED')}={max_cached}")
    session = values["SESSION"]
    if isinstance(session, str):
        session = (session,)
    if not isinstance(session, (list, tuple)) or not all(isinstance(s, str) for s in session):
        raise ConfigError(f"{key('SESSION')} must be an SQL string or a list of them")
    connect_args = values["CONNECT_ARGS"]
    if not isinstance(connect_args, dict):
        raise ConfigError(f"{key('CONNECT_ARGS')} must be a dict of driver arguments")
    tls_args = sorted(TLS_CONNECT_ARGS & set(connect_args))
    if tls_args:
        raise ConfigError(f"{key('CONNECT_ARGS')}[{tls_args[0]!r}]: set TLS in the URL "
                          "(?ssl_mode=VERIFY_IDENTITY&ssl_ca=/path/ca.pem), where it holds for "
                          "every host and command; see docs/security.md")
    reset = values["RESET"]
    if reset not in ("auto", "always"):
        raise ConfigError(f"{key('RESET')} must be 'auto' or 'always', not {reset!r}")
    leak = values["LEAK_THRESHOLD"]
    if leak is not None:
        leak = _number(key("LEAK_THRESHOLD"), leak, minimum=0, integer=False)
    lag = values["MAX_REPLICA_LAG"]
    if lag is not None:
        lag = float(_number(key("MAX_REPLICA_LAG"), lag, minimum=0, integer=False))
    return PoolSettings(
        max_replica_lag=lag,
        galera_allowed_states=_galera_states(key("GALERA_ALLOWED_STATES"),
                                             values["GALERA_ALLOWED_STATES"]),
        failover_timeout=float(_number(key("FAILOVER_TIMEOUT"), values["FAILOVER_TIMEOUT"],
                                       minimum=0, integer=False)),
        url=url,
        name=name,
        max_connections=max_connections,
        min_cached=min_cached,
        max_cached=max_cached,
        max_usage=_number(key("MAX_USAGE"), values["MAX_USAGE"], minimum=0, integer=True),
        session=tuple(session),
        connect_args=dict(connect_args),
        blocking=bool(values["BLOCKING"]),
        timeout=float(_number(key("TIMEOUT"), values["TIMEOUT"], minimum=0, integer=False)),
        max_lifetime=float(_number(key("MAX_LIFETIME"), values["MAX_LIFETIME"],
                                   minimum=0, integer=False)),
        idle_timeout=float(_number(key("IDLE_TIMEOUT"), values["IDLE_TIMEOUT"],
                                   minimum=0, integer=False)),
        ping_interval=float(_number(key("PING_INTERVAL"), values["PING_INTERVAL"],
                                    minimum=0, integer=False)),
        reset=reset,
        leak_threshold=leak,
    )


def _check_metrics(backend: t.Any) -> None:
    if backend not in METRICS_BACKENDS:
        raise ConfigError(f"POOLKIT_METRICS must be one of {', '.join(map(repr, METRICS_BACKENDS))}"
                          f" or None (off), not {backend!r}")
    module, how = METRICS_BACKENDS[backend]
    try:
        found = importlib.util.find_spec(module) is not None  # finds, does not import
    except ModuleNotFoundError:  # its parent package is missing
        found = False
    if not found:
        raise ConfigError(f"POOLKIT_METRICS={backend!r} needs the {module.split('.')[0]} "
                          f"package: {how}")


def _folders(key: str, value: t.Any) -> tuple[str, ...] | None:
    """A list of folders (one string is a list of one); None stays None (the default)."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (str, os.PathLike)) for v in value):
        raise ConfigError(f"{key} must be a list of folders, e.g. [\"commands\", "
                          f"\"ops/commands\"], not {value!r}")
    return tuple(os.fspath(v) for v in value)


def _unknown_key(key: str, name: str, known: t.Iterable[str], prefix: str = "") -> ConfigError:
    # Compare bare names: with the shared POOLKIT_ prefix every key looks like every other.
    hint = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    tip = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
    return ConfigError(f"unknown config key {key}{tip}; see docs/config.md for the keys")


def load_config(config: t.Mapping[str, t.Any],
                environ: t.Mapping[str, str] | None = None) -> PoolkitConfig:
    """Build a validated :class:`PoolkitConfig` from a Flask config mapping.

    ``POOLKIT_DATABASE_URL`` falls back to the environment variable of the same name.
    """
    environ = os.environ if environ is None else environ
    for key in config:
        if isinstance(key, str) and key.startswith(PREFIX) and key[len(PREFIX):] not in KEYS:
            raise _unknown_key(key, key[len(PREFIX):], KEYS, PREFIX)
    values = {k: config.get(PREFIX + k, default) for k, default in KEYS.items()}
    if values["DATABASE_URL"] is None:
        values["DATABASE_URL"] = environ.get(PREFIX + "DATABASE_URL")
    default = _pool_settings(DEFAULT_BIND, values, PREFIX)
    pools = {DEFAULT_BIND: default}
    binds = values["BINDS"]
    if not isinstance(binds, dict):
        raise ConfigError("POOLKIT_BINDS must be a dict of name -> URL or name -> dict of keys")
    for name, bind in binds.items():
        where = f"POOLKIT_BINDS[{name!r}]"
        if name == DEFAULT_BIND:
            raise ConfigError(f"{where}: 'default' is the name of the main pool; pick another")
        if isinstance(bind, str):
            bind = {"DATABASE_URL": bind}
        if not isinstance(bind, dict):
            raise ConfigError(f"{where} must be a URL or a dict of pool keys")
        own: dict[str, t.Any] = {}
        for raw_key, value in bind.items():
            norm = str(raw_key).upper().removeprefix(PREFIX)
            norm = "DATABASE_URL" if norm == "URL" else norm
            if norm not in POOL_KEYS:
                raise _unknown_key(f"{where}[{raw_key!r}]", norm.lower(),
                                   [k.lower() for k in POOL_KEYS])
            own[norm] = value
        merged = {k: values[k] for k in POOL_KEYS} | {
            "DATABASE_URL": None, "MAX_CACHED": None, "MIN_CACHED": 0}
        merged.update(own)
        settings = _pool_settings(name, merged, where)
        pools[name] = settings
    if not isinstance(values["READ_YOUR_WRITES"], bool):
        raise ConfigError("POOLKIT_READ_YOUR_WRITES must be True or False, not "
                          f"{values['READ_YOUR_WRITES']!r}")
    metrics = values["METRICS"] or None
    if metrics is not None:
        _check_metrics(metrics)
    return PoolkitConfig(pools=pools, sql_dir=values["SQL_DIR"],
                         commands_dirs=_folders("POOLKIT_COMMANDS_DIRS", values["COMMANDS_DIRS"]),
                         metrics=metrics,
                         read_your_writes=values["READ_YOUR_WRITES"])
