"""Metrics of a pool with several hosts name the host each connection is on."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask

from poolkit import db
from poolkit.testing.servers import ReplicationPair

pytestmark = pytest.mark.replication


def _value(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def test_prometheus_counts_connections_per_host_and_role(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    pytest.importorskip("prometheus_client")
    from poolkit.metrics.prometheus import pool_label

    app = make_app(items, POOLKIT_METRICS="prometheus")
    pool = app.extensions["poolkit"].pool()
    label = pool_label(pool)
    # The whole host list, not the URL's first host (the replica here).
    assert label == f"default@{items.replica.address},{items.primary.address}"
    with app.app_context():
        assert db.scalar("SELECT @@port") == items.primary.port
        held = pool.connection().acquire()  # a second connection, still on the primary
        try:
            assert _value("poolkit_host_connections", pool_name=label,
                          host=items.primary.address, role="primary") == 2
        finally:
            held.close()
    assert _value("poolkit_host_connections", pool_name=label, host=items.replica.address,
                  role="replica") == 0  # asked its role, closed: no connection there
    replica_label = pool_label(app.extensions["poolkit"].pool("replica"))
    with app.app_context():
        assert db.using("replica").scalar("SELECT @@port") == items.replica.port
        assert _value("poolkit_host_connections", pool_name=replica_label,
                      host=items.replica.address, role="replica") == 1
