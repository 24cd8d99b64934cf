"""POOLKIT_* config: defaults, class-style config, one clear error per mistake, naming the key."""

from __future__ import annotations

import sys
import typing as t

import pytest
from flask import Flask

from poolkit import ConfigError, DriverNotInstalledError, Poolkit
from poolkit.config import DEFAULT_DRIVER_TIMEOUTS, KEYS, PoolSettings, load_config
from poolkit.pool.hosts import HostSelector

URL = "mysql://app:s3cr3t@127.0.0.1:3306/shop"


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POOLKIT_DATABASE_URL", raising=False)


def settings(**config: t.Any) -> PoolSettings:
    config.setdefault("POOLKIT_DATABASE_URL", URL)
    return load_config(config).pools["default"]


def config_error(**config: t.Any) -> str:
    config.setdefault("POOLKIT_DATABASE_URL", URL)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    text = str(info.value)
    assert "s3cr3t" not in text
    return text


def test_every_key_has_its_documented_default() -> None:
    s = settings()
    assert s.name == "default"
    assert s.max_connections == KEYS["MAX_CONNECTIONS"] == 10
    assert s.min_cached == KEYS["MIN_CACHED"] == 0
    assert s.max_cached == s.max_connections  # MAX_CACHED None → MAX_CONNECTIONS
    assert s.max_usage == KEYS["MAX_USAGE"] == 0
    assert s.session == ()
    assert s.connect_args == {}
    assert s.blocking is True
    assert s.timeout == 30.0
    assert s.max_lifetime == 1800.0
    assert s.idle_timeout == 600.0
    assert s.ping_interval == 0.5
    assert s.reset == "auto"
    assert s.leak_threshold is None
    assert s.galera_allowed_states == ("Synced",)
    config = load_config({"POOLKIT_DATABASE_URL": URL})
    assert list(config.pools) == ["default"]
    assert config.sql_dir is None
    assert config.commands_dirs is None


def test_the_keys_table_lists_exactly_these_keys() -> None:
    assert set(KEYS) == {
        "DATABASE_URL", "MAX_CONNECTIONS", "MIN_CACHED", "MAX_CACHED", "MAX_USAGE", "SESSION",
        "CONNECT_ARGS", "BLOCKING", "TIMEOUT", "MAX_LIFETIME", "IDLE_TIMEOUT",
        "PING_INTERVAL", "RESET", "LEAK_THRESHOLD", "BINDS", "SQL_DIR", "COMMANDS_DIRS",
        "METRICS",
        # scale-out (issue 14)
        "MAX_REPLICA_LAG", "FAILOVER_TIMEOUT", "GALERA_ALLOWED_STATES", "READ_YOUR_WRITES"}


def test_class_style_config_through_from_object() -> None:
    class Config:
        POOLKIT_DATABASE_URL = URL + "?charset=utf8mb4"
        POOLKIT_MAX_CONNECTIONS = 4
        POOLKIT_MIN_CACHED = 1
        POOLKIT_MAX_CACHED = 3
        POOLKIT_SESSION = "SET time_zone = '+00:00'"
        POOLKIT_TIMEOUT = 2
        POOLKIT_BLOCKING = False
        POOLKIT_RESET = "always"
        POOLKIT_LEAK_THRESHOLD = 5
        lower_case_is_ignored = 1

    app = Flask(__name__)
    app.config.from_object(Config)
    s = load_config(app.config).pools["default"]
    assert (s.max_connections, s.min_cached, s.max_cached) == (4, 1, 3)
    assert s.session == ("SET time_zone = '+00:00'",)
    assert s.timeout == 2.0 and isinstance(s.timeout, float)
    assert s.blocking is False
    assert s.reset == "always"
    assert s.leak_threshold == 5
    assert s.url.options == {"charset": "utf8mb4"}


def test_session_accepts_a_list() -> None:
    assert settings(POOLKIT_SESSION=["SET a=1", "SET b=2"]).session == ("SET a=1", "SET b=2")


def test_driver_timeouts_are_set_by_default_and_overridable() -> None:
    assert settings().driver_kwargs()["read_timeout"] == DEFAULT_DRIVER_TIMEOUTS["read_timeout"]
    s = settings(POOLKIT_DATABASE_URL=URL + "?connect_timeout=3&read_timeout=0",
                 POOLKIT_CONNECT_ARGS={"write_timeout": 9})
    kwargs = s.driver_kwargs()
    assert kwargs["connect_timeout"] == 3
    assert kwargs["read_timeout"] is None  # 0 means no timeout
    assert kwargs["write_timeout"] == 9
    assert kwargs["password"] == "s3cr3t"


def test_unknown_key_suggests_the_right_one() -> None:
    text = config_error(POOLKIT_MAX_CONECTIONS=5)
    assert "unknown config key POOLKIT_MAX_CONECTIONS" in text
    assert "did you mean POOLKIT_MAX_CONNECTIONS?" in text


def test_unknown_key_without_a_close_match() -> None:
    text = config_error(POOLKIT_ZZZ=1)
    assert "unknown config key POOLKIT_ZZZ" in text
    assert "did you mean" not in text


def test_other_prefixes_are_not_ours() -> None:
    assert settings(SQLALCHEMY_DATABASE_URI="sqlite://", POOL_SIZE=3).max_connections == 10


@pytest.mark.parametrize(("config", "message"), [
    ({"POOLKIT_MAX_CONNECTIONS": 0}, "POOLKIT_MAX_CONNECTIONS must be at least 1, not 0"),
    ({"POOLKIT_MAX_CONNECTIONS": -3}, "POOLKIT_MAX_CONNECTIONS must be at least 1, not -3"),
    ({"POOLKIT_MAX_CONNECTIONS": "10"}, "POOLKIT_MAX_CONNECTIONS must be a whole number"),
    ({"POOLKIT_MAX_CONNECTIONS": 2.5}, "POOLKIT_MAX_CONNECTIONS must be a whole number"),
    ({"POOLKIT_MAX_CONNECTIONS": True}, "POOLKIT_MAX_CONNECTIONS must be a whole number"),
    ({"POOLKIT_MIN_CACHED": -1}, "POOLKIT_MIN_CACHED must be at least 0"),
    ({"POOLKIT_MAX_CACHED": -1}, "POOLKIT_MAX_CACHED must be at least 0"),
    ({"POOLKIT_MAX_USAGE": -1}, "POOLKIT_MAX_USAGE must be at least 0"),
    ({"POOLKIT_TIMEOUT": -0.5}, "POOLKIT_TIMEOUT must be at least 0"),
    ({"POOLKIT_TIMEOUT": "30s"}, "POOLKIT_TIMEOUT must be a number of seconds"),
    ({"POOLKIT_MAX_LIFETIME": -1}, "POOLKIT_MAX_LIFETIME must be at least 0"),
    ({"POOLKIT_IDLE_TIMEOUT": -1}, "POOLKIT_IDLE_TIMEOUT must be at least 0"),
    ({"POOLKIT_PING_INTERVAL": -1}, "POOLKIT_PING_INTERVAL must be at least 0"),
    ({"POOLKIT_LEAK_THRESHOLD": -1}, "POOLKIT_LEAK_THRESHOLD must be at least 0"),
    ({"POOLKIT_MIN_CACHED": 5, "POOLKIT_MAX_CONNECTIONS": 2},
     "POOLKIT_MIN_CACHED=5 is more than POOLKIT_MAX_CONNECTIONS=2"),
    ({"POOLKIT_MAX_CACHED": 5, "POOLKIT_MAX_CONNECTIONS": 2},
     "POOLKIT_MAX_CACHED=5 is more than POOLKIT_MAX_CONNECTIONS=2"),
    ({"POOLKIT_MIN_CACHED": 3, "POOLKIT_MAX_CACHED": 2},
     "POOLKIT_MIN_CACHED=3 is more than POOLKIT_MAX_CACHED=2"),
    ({"POOLKIT_SESSION": 42}, "POOLKIT_SESSION must be an SQL string or a list of them"),
    ({"POOLKIT_SESSION": ["SET a=1", 2]}, "POOLKIT_SESSION must be an SQL string"),
    ({"POOLKIT_CONNECT_ARGS": "ssl=1"}, "POOLKIT_CONNECT_ARGS must be a dict"),
    ({"POOLKIT_RESET": "never"}, "POOLKIT_RESET must be 'auto' or 'always', not 'never'"),
    ({"POOLKIT_BINDS": ["replica"]}, "POOLKIT_BINDS must be a dict"),
    ({"POOLKIT_DATABASE_URL": "mysql://app:s3cr3t@h"}, "POOLKIT_DATABASE_URL has no database"),
])
def test_bad_values_name_the_key(config: dict[str, t.Any], message: str) -> None:
    assert message in config_error(**config)


def test_missing_url_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({})
    assert "POOLKIT_DATABASE_URL is not set" in str(info.value)
    assert "environment" in str(info.value)


def test_url_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLKIT_DATABASE_URL", "mysql://env:pw@10.0.0.9:3310/from_env")
    s = load_config({}).pools["default"]
    assert (s.url.host, s.url.port, s.url.database) == ("10.0.0.9", 3310, "from_env")


def test_app_config_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLKIT_DATABASE_URL", "mysql://env:pw@10.0.0.9/from_env")
    assert settings().url.database == "shop"


def test_environment_fallback_through_init_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLKIT_DATABASE_URL", "mysql://env:pw@127.0.0.1/from_env")
    app = Flask(__name__)
    extension = Poolkit(app)
    try:
        assert app.extensions["poolkit"].pool().settings.url.database == "from_env"
    finally:
        extension.close()


# -- binds ----------------------------------------------------------------------------------
def test_binds_as_url_or_dict() -> None:
    config = load_config({
        "POOLKIT_DATABASE_URL": URL,
        "POOLKIT_MAX_CONNECTIONS": 6,
        "POOLKIT_TIMEOUT": 3,
        "POOLKIT_BINDS": {
            "replica": "mysql://ro:pw@replica.local/shop",
            "reports": {"url": "mysql+mysqldb://rep:pw@reports.local/dw",
                        "max_connections": 2, "POOLKIT_TIMEOUT": 9},
            "archive": {"DATABASE_URL": "mysql://a:pw@archive.local/old", "MIN_CACHED": 1},
        },
    })
    assert list(config.pools) == ["default", "replica", "reports", "archive"]
    replica, reports, archive = (config.pools[n] for n in ("replica", "reports", "archive"))
    assert (replica.name, replica.url.host, replica.url.user) == ("replica", "replica.local", "ro")
    # App-wide pool keys are inherited by binds that do not set them...
    assert (replica.max_connections, replica.max_cached, replica.timeout) == (6, 6, 3.0)
    # ...and a bind's own keys win, with or without the POOLKIT_ prefix, in any case.
    assert (reports.url.driver, reports.max_connections, reports.max_cached) == ("mysqldb", 2, 2)
    assert reports.timeout == 9.0
    assert archive.min_cached == 1


@pytest.mark.parametrize(("binds", "message"), [
    ({"replica": {"max_conections": 2, "url": URL}},
     "unknown config key POOLKIT_BINDS['replica']['max_conections'] "
     "(did you mean max_connections?)"),
    ({"replica": {"max_connections": 2}}, "POOLKIT_BINDS['replica']['DATABASE_URL'] is not set"),
    ({"replica": {"url": URL, "min_cached": 3, "max_connections": 2}},
     "POOLKIT_BINDS['replica']['MIN_CACHED']=3 is more than "
     "POOLKIT_BINDS['replica']['MAX_CONNECTIONS']=2"),
    ({"replica": "mysql://ro:s3cr3t@/shop"},
     "POOLKIT_BINDS['replica']['DATABASE_URL'] has no host"),
    ({"replica": 42}, "POOLKIT_BINDS['replica'] must be a URL or a dict"),
    ({"default": URL}, "'default' is the name of the main pool"),
    ({"replica": {"url": URL, "binds": {}}}, "unknown config key POOLKIT_BINDS['replica']"),
])
def test_bind_errors_name_the_bind_and_key(binds: dict[str, t.Any], message: str) -> None:
    assert message in config_error(POOLKIT_BINDS=binds)


# -- drivers --------------------------------------------------------------------------------
def test_driver_not_installed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "MySQLdb", None)  # import MySQLdb → ImportError
    app = Flask(__name__)
    app.config["POOLKIT_DATABASE_URL"] = "mysql+mysqldb://app:s3cr3t@127.0.0.1/shop"
    with pytest.raises(DriverNotInstalledError) as info:
        Poolkit(app)
    text = str(info.value)
    assert "mysqlclient" in text
    assert "pip install 'poolkit[mysqlclient]'" in text
    assert "s3cr3t" not in text
    assert isinstance(info.value, ConfigError)
    assert "poolkit" not in app.extensions


def test_pymysql_not_installed_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymysql", None)
    app = Flask(__name__)
    app.config["POOLKIT_DATABASE_URL"] = URL
    with pytest.raises(DriverNotInstalledError, match="pip install pymysql"):
        Poolkit(app)


def test_init_app_rejects_bad_config_before_registering() -> None:
    app = Flask(__name__)
    app.config.update(POOLKIT_DATABASE_URL=URL, POOLKIT_MIN_CACHED=11)
    with pytest.raises(ConfigError, match="POOLKIT_MIN_CACHED=11"):
        Poolkit(app)
    assert "poolkit" not in app.extensions


def test_describe_masks_the_password() -> None:
    described = settings().describe()
    assert described["url"] == "mysql://app:***@127.0.0.1:3306/shop"
    assert "s3cr3t" not in repr(described)
    assert "s3cr3t" not in repr(settings())


# -- scale-out keys (issue 14) ----------------------------------------------------------------
def test_scale_out_keys_defaults_and_per_bind_values() -> None:
    config = load_config({"POOLKIT_DATABASE_URL": URL, "POOLKIT_BINDS": {
        "replica": {"url": URL + "?target=replica", "max_replica_lag": 2, "failover_timeout": 0}}})
    default, replica = config.pools["default"], config.pools["replica"]
    assert (default.max_replica_lag, default.failover_timeout) == (None, 5.0)
    assert (replica.max_replica_lag, replica.failover_timeout) == (2.0, 0.0)
    assert replica.url.target == "replica"
    assert config.read_your_writes is True
    assert load_config({"POOLKIT_DATABASE_URL": URL,
                        "POOLKIT_READ_YOUR_WRITES": False}).read_your_writes is False


@pytest.mark.parametrize(("key", "value", "message"), [
    ("POOLKIT_MAX_REPLICA_LAG", -1, "POOLKIT_MAX_REPLICA_LAG must be at least 0"),
    ("POOLKIT_MAX_REPLICA_LAG", "5", "POOLKIT_MAX_REPLICA_LAG must be a number of seconds"),
    ("POOLKIT_FAILOVER_TIMEOUT", None, "POOLKIT_FAILOVER_TIMEOUT must be a number"),
    ("POOLKIT_READ_YOUR_WRITES", "no", "POOLKIT_READ_YOUR_WRITES must be True or False"),
])
def test_scale_out_keys_are_validated(key: str, value: t.Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({"POOLKIT_DATABASE_URL": URL, key: value})


def test_galera_allowed_states_default_spelling_and_per_bind() -> None:
    config = load_config({"POOLKIT_DATABASE_URL": URL,
                          "POOLKIT_GALERA_ALLOWED_STATES": ["synced", " Donor", "Synced"],
                          "POOLKIT_BINDS": {"reports": {"url": URL,
                                                        "galera_allowed_states": "joined"}}})
    assert config.pools["default"].galera_allowed_states == ("Synced", "Donor")
    assert config.pools["reports"].galera_allowed_states == ("Joined",)
    assert config.pools["default"].describe()["galera_allowed_states"] == ["Synced", "Donor"]
    inherited = load_config({"POOLKIT_DATABASE_URL": URL,
                             "POOLKIT_GALERA_ALLOWED_STATES": ("Synced", "Donor"),
                             "POOLKIT_BINDS": {"other": URL}})
    assert inherited.pools["other"].galera_allowed_states == ("Synced", "Donor")


def test_the_selector_gets_the_allowed_states_it_is_given() -> None:
    settings = load_config({"POOLKIT_DATABASE_URL": URL,
                            "POOLKIT_GALERA_ALLOWED_STATES": ["Synced", "Donor"]}).pools["default"]
    selector = HostSelector(settings.url, None, {},
                            allowed_states=settings.galera_allowed_states)
    assert selector.allowed_states == {"Synced", "Donor"}
    assert HostSelector(settings.url, None, {}).allowed_states == {"Synced"}
    assert HostSelector(settings.url, None, {}, allowed_states="Donor").allowed_states == {"Donor"}


@pytest.mark.parametrize("value", [[], "Desynced", ["Synced", "Donor/Desynced"], ["Synced", 4],
                                   None, {"Synced": True}])
def test_galera_allowed_states_are_validated(value: t.Any) -> None:
    text = config_error(POOLKIT_GALERA_ALLOWED_STATES=value)
    assert text == ("POOLKIT_GALERA_ALLOWED_STATES must be a non-empty list of Galera states "
                    f"out of Synced, Donor, Joined (e.g. [\"Synced\", \"Donor\"]), not {value!r}")
    assert "\n" not in text


def test_a_bad_galera_state_in_a_bind_names_the_bind() -> None:
    text = config_error(POOLKIT_BINDS={"r": {"url": URL, "galera_allowed_states": ["Donr"]}})
    assert text.startswith("POOLKIT_BINDS['r']['GALERA_ALLOWED_STATES'] must be a non-empty list")


def test_init_app_rejects_a_bad_galera_state() -> None:
    app = Flask(__name__)
    app.config.update(POOLKIT_DATABASE_URL=URL, POOLKIT_GALERA_ALLOWED_STATES=["Desynced"])
    with pytest.raises(ConfigError, match=r"POOLKIT_GALERA_ALLOWED_STATES must be .* Synced, "
                                          r"Donor, Joined"):
        Poolkit(app)
    assert "poolkit" not in app.extensions


# -- secrets and TLS in POOLKIT_CONNECT_ARGS --------------------------------------------------
def test_repr_masks_a_password_in_connect_args() -> None:
    config = load_config({"POOLKIT_DATABASE_URL": URL,
                          "POOLKIT_CONNECT_ARGS": {"password": "hunter2-args",
                                                   "ssl_key_password": "keypass-9"}})
    shown = repr(config) + repr(config.pools["default"]) + str(config.pools)
    assert "hunter2-args" not in shown and "keypass-9" not in shown
    assert "'password': '***'" in shown
    # The driver still gets it.
    assert config.pools["default"].driver_kwargs()["password"] == "hunter2-args"


@pytest.mark.parametrize("name", ["ssl", "ssl_ca", "ssl_disabled", "ssl_verify_cert", "ssl_mode"])
def test_tls_comes_only_from_the_url(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"POOLKIT_CONNECT_ARGS\['{name}'\]: set TLS in the URL"):
        load_config({"POOLKIT_DATABASE_URL": URL, "POOLKIT_CONNECT_ARGS": {name: True}})


def test_the_apps_auth_handlers_join_the_guard() -> None:
    class Handler:
        pass

    kwargs = load_config({"POOLKIT_DATABASE_URL": URL, "POOLKIT_CONNECT_ARGS": {
        "auth_plugin_map": {"my_plugin": Handler}}}).pools["default"].driver_kwargs()
    assert set(kwargs["auth_plugin_map"]) == {"my_plugin", "mysql_clear_password", "dialog",
                                              "caching_sha2_password", "sha256_password"}
