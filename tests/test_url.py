"""URL parsing: schemes → drivers, options, errors that name the key, the password masked."""

from __future__ import annotations

import re
import typing as t

import pytest

from poolkit import ConfigError
from poolkit.url import MASK, SCHEMES, InsecureOptionWarning, mask_url, parse_url

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(("scheme", "driver"), [
    ("mysql", "pymysql"), ("mysql+pymysql", "pymysql"), ("mariadb", "pymysql"),
    ("mariadb+pymysql", "pymysql"), ("mysql+mysqldb", "mysqldb"),
    ("mysql+mysqlclient", "mysqldb"), ("mariadb+mysqldb", "mysqldb"),
])
def test_scheme_picks_the_driver(scheme: str, driver: str) -> None:
    url = parse_url(f"{scheme}://app:pw@db.local:3307/shop")
    assert (url.driver, url.scheme) == (driver, scheme)
    assert (url.host, url.port, url.user, url.password, url.database) == (
        "db.local", 3307, "app", "pw", "shop")


def test_every_scheme_is_covered() -> None:
    assert set(SCHEMES.values()) == {"pymysql", "mysqldb"}


def test_scheme_is_case_insensitive_and_port_defaults_to_3306() -> None:
    url = parse_url("MySQL://app@127.0.0.1/shop")
    assert (url.scheme, url.port, url.password) == ("mysql", 3306, "")


def test_url_encoded_password_and_user_are_decoded() -> None:
    url = parse_url("mysql://us%40er:p%40ss%3Aw%2Fo%23rd%3F@127.0.0.1/shop")
    assert url.user == "us@er"
    assert url.password == "p@ss:w/o#rd?"
    assert url.connect_kwargs()["password"] == "p@ss:w/o#rd?"


def test_unix_socket_needs_no_host() -> None:
    url = parse_url("mysql://app:pw@/shop?unix_socket=/run/mysqld/mysqld.sock")
    kwargs = url.connect_kwargs()
    assert kwargs["unix_socket"] == "/run/mysqld/mysqld.sock"
    assert kwargs["host"] == "localhost"
    assert kwargs["database"] == "shop"


def test_options_are_typed() -> None:
    url = parse_url("mysql://app:pw@h/shop?charset=utf8mb4&connect_timeout=5"
                    "&read_timeout=7&autocommit=true&local_infile=0&ssl_disabled=yes")
    assert url.options == {"charset": "utf8mb4", "connect_timeout": 5, "read_timeout": 7,
                           "autocommit": True, "local_infile": False}
    assert url.ssl_mode == "DISABLED"  # the older switch folds into ssl_mode
    kwargs = url.connect_kwargs()
    assert kwargs["connect_timeout"] == 5
    assert kwargs["ssl_disabled"] is True
    assert kwargs["autocommit"] is True


@pytest.mark.parametrize(("query", "message"), [
    ("connect_timeout=soon", "connect_timeout='soon' must be a whole number"),
    ("autocommit=maybe", "autocommit='maybe' must be true or false"),
])
def test_badly_typed_option(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_url(f"mysql://app:pw@h/shop?{query}")


def test_unknown_option_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as info:
        parse_url("mysql://app:pw@h/shop?conect_timeout=3")
    text = str(info.value)
    assert "unknown option 'conect_timeout'" in text
    assert "did you mean 'connect_timeout'?" in text
    assert text.startswith("POOLKIT_DATABASE_URL")


def test_error_names_the_key_it_was_given() -> None:
    with pytest.raises(ConfigError, match=r"^POOLKIT_BINDS\['replica'\] has no host"):
        parse_url("mysql://app:pw@/shop", "POOLKIT_BINDS['replica']")


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://app:pw@/shop", "has no host"),
    ("mysql://app:pw@h", "has no database name"),
    ("mysql://app:pw@h/", "has no database name"),
    ("mysql://app:pw@h/a/b", "has no database name"),
    ("postgres://app:pw@h/shop", "unknown scheme 'postgres'"),
    ("127.0.0.1/shop", r"unknown scheme '\(none\)'"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("mysql://app:pw@h:99999/shop", "not a valid URL"),
])
def test_invalid_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_url(url)


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_url("sqlite://app:pw@h/shop")
    assert "mysql://" in str(info.value)
    assert "mysql+mysqldb://" in str(info.value)


def test_not_a_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="is empty"):
        parse_url(None)  # type: ignore[arg-type]


# -- masking ------------------------------------------------------------------------------
def test_str_and_repr_mask_the_password() -> None:
    url = parse_url(f"mysql://app:{SECRET}@db.local:3306/shop?charset=utf8mb4")
    for text in (str(url), repr(url), url.masked(), f"{url!r}", f"{[url]}"):
        assert SECRET not in text
        assert MASK in text
    assert str(url) == "mysql://app:***@db.local:3306/shop?charset=utf8mb4"
    assert repr(url) == "DatabaseURL('mysql://app:***@db.local:3306/shop?charset=utf8mb4')"


def test_no_password_no_mask() -> None:
    assert str(parse_url("mysql://root@h/shop")) == "mysql://root@h:3306/shop"


def test_with_database_keeps_credentials_and_masking() -> None:
    url = parse_url(f"mysql://app:{SECRET}@h/shop").with_database("other")
    assert url.password == SECRET
    assert url.database == "other"
    assert SECRET not in repr(url)


@pytest.mark.parametrize("url", [
    f"mysql://app:{SECRET}@/shop",
    f"mysql://app:{SECRET}@h",
    f"mysql://app:{SECRET}@h:99999/shop",
    f"postgres://app:{SECRET}@h/shop",
    f"mysql://app:{SECRET}@h/shop?bogus=1",
    f"mysql://app:{SECRET}@h/shop?connect_timeout=x",
    f"mysql://app:{SECRET}@[::1/shop",
    # An unencoded '#', '/' or '?' in the password makes urllib read part of it as the port.
    "mysql://app:s3cr#et-Pa55@h/shop",
    "mysql://app:s3cr/et-Pa55@h/shop",
    "mysql://app:s3cr?et-Pa55@h/shop",
])
def test_errors_never_contain_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_url(url)
    text = str(info.value)
    assert "s3cr" not in text
    assert "Pa55" not in text


def test_mask_url_masks_what_does_not_parse() -> None:
    assert mask_url(f"mysql://app:{SECRET}@h/shop") == "mysql://app:***@h/shop"
    assert mask_url("mysql://app:s3cr#et@h/shop") == "mysql://app:***@h/shop"
    assert mask_url("mysql://app@h/shop") == "mysql://app@h/shop"
    assert mask_url("not a url") == "not a url"


# -- several hosts (issue 14) ---------------------------------------------------------------
def test_several_hosts_in_order_with_default_ports() -> None:
    url = parse_url(f"mysql://app:{SECRET}@DB1:3307,db2,[::1]:3309/shop?target=primary")
    assert url.hosts == (("db1", 3307), ("db2", 3306), ("::1", 3309))
    assert (url.host, url.port) == ("db1", 3307)  # the first host, for single-host callers
    assert (url.target, url.load_balance, url.routed) == ("primary", "sequential", True)
    assert url.connect_kwargs()["host"] == "db1"
    assert "target" not in url.connect_kwargs()  # routing options never reach the driver
    assert str(url) == "mysql://app:***@db1:3307,db2:3306,[::1]:3309/shop?target=primary"
    assert SECRET not in repr(url) and SECRET not in repr(url.with_database("x"))
    assert url.with_database("x").hosts == url.hosts


def test_one_host_is_not_routed_unless_a_role_is_wanted() -> None:
    assert not parse_url("mysql://app@h/shop").routed
    assert parse_url("mysql://app@h/shop?target=replica").routed
    assert parse_url("mysql://app@h/shop").hosts == (("h", 3306),)


def test_load_balance_random_is_kept_and_shown() -> None:
    url = parse_url("mysql://app@h1,h2/shop?load_balance=random&charset=utf8mb4")
    assert (url.load_balance, url.target) == ("random", "any")
    assert str(url) == "mysql://app@h1:3306,h2:3306/shop?charset=utf8mb4&load_balance=random"


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://app:pw@h1,h2/shop?target=master", "target='master' must be one of any, primary"),
    ("mysql://app:pw@h1/shop?target=replicas", "did you mean 'replica'"),
    ("mysql://app:pw@h1,h2/shop?load_balance=round", "load_balance='round' must be one of"),
    ("mysql://app:pw@h1,,h2/shop", "empty host"),
    ("mysql://app:pw@h1,h2:xx/shop", "host 'h2:xx' has an invalid port"),
    ("mysql://app:pw@h1,h2:70000/shop", "invalid port"),
    ("mysql://app:pw@h1,h2/shop?unix_socket=/s", "unix_socket cannot be combined"),
])
def test_invalid_host_lists(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_url(url)
    assert ":pw@" not in str(info.value)


def test_mask_url_masks_host_lists() -> None:
    assert mask_url(f"mysql://app:{SECRET}@h1:1,h2:2/shop") == "mysql://app:***@h1:1,h2:2/shop"


# -- TLS modes ------------------------------------------------------------------------------
@pytest.mark.parametrize(("query", "mode"), [
    ("", "PREFERRED"),
    ("ssl_ca=/ca.pem", "VERIFY_CA"),  # a CA given means: verify against it
    ("ssl_verify_cert=true&ssl_ca=/ca.pem", "VERIFY_CA"),
    ("ssl_verify_cert=false&ssl_ca=/ca.pem", "REQUIRED"),
    ("ssl_verify_identity=true", "VERIFY_IDENTITY"),
    ("ssl_disabled=true", "DISABLED"),
    ("ssl_cert=/c.pem&ssl_key=/k.pem", "REQUIRED"),
    ("ssl_mode=verify_identity", "VERIFY_IDENTITY"),
    ("ssl_mode=VERIFY-CA&ssl_ca=/ca.pem", "VERIFY_CA"),
    ("ssl_mode=REQUIRED&ssl_ca=/ca.pem", "REQUIRED"),  # an explicit mode wins
])
def test_ssl_mode_and_what_the_older_keys_mean(query: str, mode: str) -> None:
    url = parse_url(f"mysql://app:pw@h1,h2/shop?{query}")
    assert url.ssl_mode == mode and url.tls.mode == mode
    assert url.tls.verified is mode.startswith("VERIFY")
    assert not {"ssl_mode", "ssl_disabled", "ssl_verify_cert", "ssl_verify_identity"} & set(
        url.options)
    assert (f"ssl_mode={mode}" in url.masked()) is (mode != "PREFERRED")
    assert url.with_database("other").ssl_mode == mode


@pytest.mark.parametrize(("query", "message"), [
    ("ssl_mode=VERIFY", "ssl_mode='VERIFY' must be one of DISABLED, PREFERRED, REQUIRED"),
    ("ssl_mode=REQUIRE", "did you mean 'REQUIRED'"),
    ("ssl_mode=REQUIRED&ssl_verify_cert=true", "ssl_mode and ssl_verify_cert are both set"),
    ("ssl_mode=DISABLED&ssl_ca=/ca.pem", "TLS is disabled but ssl_ca is set"),
])
def test_bad_tls_options_are_one_clear_line(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_url(f"mysql://app:pw@h/shop?{query}")


def test_connect_kwargs_carry_the_mode_and_the_guard(tmp_path: t.Any) -> None:
    import ssl

    from poolkit.testing.fakemysql import make_certificates

    ca = make_certificates(tmp_path).ca
    preferred = parse_url("mysql://app:pw@h/shop").connect_kwargs()
    assert "ssl" not in preferred and "ssl_disabled" not in preferred
    assert set(preferred["auth_plugin_map"]) == {"mysql_clear_password", "dialog",
                                                  "caching_sha2_password", "sha256_password"}
    verified = parse_url(f"mysql://app:pw@h/shop?ssl_mode=VERIFY_IDENTITY&ssl_ca={ca}")
    kwargs = verified.connect_kwargs()
    assert "auth_plugin_map" not in kwargs  # the server proves itself: PyMySQL's own code
    assert kwargs["ssl"].verify_mode == ssl.CERT_REQUIRED and kwargs["ssl"].check_hostname
    assert "ssl_ca" not in kwargs
    verify_ca = parse_url(f"mysql://app:pw@h/shop?ssl_ca={ca}").connect_kwargs()["ssl"]
    assert verify_ca.verify_mode == ssl.CERT_REQUIRED and not verify_ca.check_hostname
    required = parse_url("mysql://app:pw@h/shop?ssl_mode=REQUIRED").connect_kwargs()
    assert required["ssl"].verify_mode == ssl.CERT_NONE and "auth_plugin_map" in required
    socket = parse_url("mysql://app:pw@/shop?unix_socket=/run/m.sock").connect_kwargs()
    assert "auth_plugin_map" not in socket  # only who writes its folder can serve it
    mysqldb = parse_url(f"mysql+mysqldb://app:pw@h/shop?ssl_ca={ca}").connect_kwargs()
    assert (mysqldb["ssl_mode"], mysqldb["ssl"]) == ("VERIFY_CA", {"ca": ca})
    with pytest.raises(ConfigError, match="cannot load the TLS files"):
        parse_url("mysql://app:pw@h/shop?ssl_ca=/no/such/ca.pem").connect_kwargs()


def test_local_infile_warns() -> None:
    with pytest.warns(InsecureOptionWarning, match="may read any file this process can read"):
        parse_url("mysql://app:pw@h/shop?local_infile=true")


# -- the password in error messages -----------------------------------------------------------
SPECIALS = "/?#@:%&=+;, \"'\\[]{}<>|^`~!$()"


def _assert_masked(password: str, message: str) -> None:
    for size in range(3, len(password) + 1):
        for start in range(len(password) - size + 1):
            assert password[start:start + size] not in message, (password, message)


def _assert_parse_masks(password: str, url: str) -> None:
    """Parsing *url* shows no piece of *password*: not in an error, not in str()/repr()."""
    try:
        parsed = parse_url(url)
    except ConfigError as error:
        _assert_masked(password, str(error))
    else:
        _assert_masked(password, str(parsed) + repr(parsed))


@pytest.mark.parametrize("password", [
    "Tr0ub?4dor3x", "Tr0ub/4dor3x", "Tr0ub#4dor3x", "Tr0ub@4dor3x", "Tr0ub:4dor3x",
    "p?w&ssl_mode=xx", "x/y/z@host:99", "Q#Z?Y/X@W",
])
def test_an_error_never_shows_a_piece_of_the_password(password: str) -> None:
    _assert_parse_masks(password, f"mysql://app:{password}@db.example/shop")


def test_an_error_never_shows_a_piece_of_any_password() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    strategies = hypothesis.strategies

    # Upper-case letters and digits only beside the specials: no piece can match the
    # lower-case words of the messages by chance.
    alphabet = strategies.sampled_from(SPECIALS + "QXZJKV0123456789")

    @hypothesis.settings(max_examples=400, deadline=None, derandomize=True)
    @hypothesis.given(password=strategies.text(alphabet, min_size=3, max_size=24),
                      query=strategies.sampled_from(["", "?ssl_mode=nope", "?bogus=1",
                                                     "?connect_timeout=x"]))
    def check(password: str, query: str) -> None:
        _assert_parse_masks(password, f"mysql://app:{password}@db.example:3306/shop{query}")

    check()
