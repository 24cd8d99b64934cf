"""Fixtures of the Galera suite: one private 3-node cluster for the whole session.

The nodes come from :func:`poolkit.testing.servers.start_galera_cluster` (free loopback ports,
rsync state transfer, about 20 s to form); the shared test server is never touched. Tests
that cut a node off or desync it must put it back and wait until every node is Synced again
(:func:`restored`), so the next test starts from a whole cluster.
"""

from __future__ import annotations

import contextlib
import os
import typing as t

import pytest

from poolkit import Pool, load_config
from poolkit.testing.servers import (
    DATABASE,
    GaleraCluster,
    GaleraNode,
    galera_available,
    start_galera_cluster,
)

pytestmark = pytest.mark.galera


@pytest.fixture(scope="session")
def cluster() -> t.Iterator[GaleraCluster]:
    """Three synced Galera nodes, the app user and an ``items`` table (InnoDB, a primary key)."""
    if not galera_available():
        reason = ("Galera is not installed (apt install galera-4 rsync; mariadbd and "
                  "mariadb-install-db on PATH)")
        if os.environ.get("POOLKIT_TEST_REQUIRE_DB") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    nodes = start_galera_cluster()
    try:
        nodes.nodes[0].server.execute(
            f"CREATE TABLE {DATABASE}.items (id INT PRIMARY KEY, label VARCHAR(40) NOT NULL, "
            "node INT NOT NULL DEFAULT 0) ENGINE=InnoDB",
            f"CREATE TABLE {DATABASE}.counters (id INT PRIMARY KEY, value INT NOT NULL) "
            "ENGINE=InnoDB")
        yield nodes
    finally:
        nodes.destroy()


@pytest.fixture
def galera(cluster: GaleraCluster) -> t.Iterator[GaleraCluster]:
    """The session cluster with empty tables, whole again after the test."""
    cluster.nodes[0].server.execute(f"DELETE FROM {DATABASE}.items",
                                    f"DELETE FROM {DATABASE}.counters")
    yield cluster
    restored(cluster)


def restored(cluster: GaleraCluster) -> None:
    """Let every node back in, end every desync, and wait until all are Synced."""
    for node in cluster.nodes:
        with contextlib.suppress(Exception):
            node.isolate(False)
        with contextlib.suppress(Exception):
            node.desync(False)
    cluster.wait_synced(timeout=60)


@pytest.fixture
def make_pool() -> t.Iterator[t.Callable[..., Pool]]:
    """Pools from config keys (``POOLKIT_DATABASE_URL`` first), closed after the test."""
    made: list[Pool] = []

    def factory(url: str, **config: t.Any) -> Pool:
        settings = load_config({"POOLKIT_DATABASE_URL": url,
                                "POOLKIT_CONNECT_ARGS": {"connect_timeout": 2,
                                                         "read_timeout": 15},
                                **config}).pools["default"]
        pool = Pool(settings)
        made.append(pool)
        return pool

    yield factory
    for pool in made:
        pool.close()


def node_of(cluster: GaleraCluster, port: int) -> GaleraNode:
    return cluster.node_on(port)
