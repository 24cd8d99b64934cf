"""Named pools (POOLKIT_BINDS): their own server URL, settings and stats."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask

from poolkit import ConfigError, db


@pytest.fixture
def replica_url(make_database: t.Callable[[], str]) -> str:
    return make_database()


@pytest.fixture
def two_pools(make_app: t.Callable[..., Flask], replica_url: str) -> Flask:
    return make_app(POOLKIT_MAX_CONNECTIONS=5, POOLKIT_BINDS={
        "replica": {"url": replica_url, "max_connections": 2, "timeout": 0.1}})


def test_db_using_reaches_the_named_pool(two_pools: Flask, replica_url: str) -> None:
    with two_pools.app_context():
        main_db = db.scalar("SELECT DATABASE()")
        replica_db = db.using("replica").scalar("SELECT DATABASE()")
        assert replica_db == replica_url.rsplit("/", 1)[1]
        assert main_db != replica_db
        # The same connection for the whole app context, per pool.
        assert (db.using("replica").scalar("SELECT CONNECTION_ID()")
                == db.using("replica").scalar("SELECT CONNECTION_ID()"))
    state = two_pools.extensions["poolkit"]
    assert state.pool("replica").stats()["in_use"] == 0


def test_extension_connection_by_name(two_pools: Flask, replica_url: str) -> None:
    extension = two_pools.extensions["poolkit"].extension
    with extension.connection("replica") as conn:
        assert conn.scalar("SELECT DATABASE()") == replica_url.rsplit("/", 1)[1]
    with extension.connection() as conn:
        assert conn.scalar("SELECT DATABASE()") != replica_url.rsplit("/", 1)[1]


def test_separate_settings_and_stats(two_pools: Flask) -> None:
    state = two_pools.extensions["poolkit"]
    default, replica = state.pool(), state.pool("replica")
    assert (default.settings.max_connections, replica.settings.max_connections) == (5, 2)
    assert replica.settings.timeout == 0.1
    extension = state.extension
    for _ in range(3):
        with extension.connection("replica") as conn:
            conn.scalar("SELECT 1")
    assert extension.stats("replica")["checkouts"] == 3
    assert extension.stats()["checkouts"] == 0
    assert extension.stats("replica")["max_connections"] == 2


def test_unknown_bind_name_is_a_clear_error(two_pools: Flask) -> None:
    with two_pools.app_context(), pytest.raises(ConfigError) as info:
        db.using("replcia").scalar("SELECT 1")
    text = str(info.value)
    assert "no pool named 'replcia'" in text
    assert "'default', 'replica'" in text
    assert "POOLKIT_BINDS" in text
    with pytest.raises(ConfigError, match="no pool named 'nope'"):
        two_pools.extensions["poolkit"].extension.get_pool("nope")


def test_using_outside_an_app_context_says_what_to_do(two_pools: Flask) -> None:
    pool = two_pools.extensions["poolkit"].pool()
    with pool.connection() as conn, pytest.raises(RuntimeError, match=r"pool\.connection"):
        conn.using("replica")
