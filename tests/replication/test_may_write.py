"""Which statements of the read helpers count as writes: checked against what the server
wrote to its binlog (a differential test), and through read-your-writes."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask

from poolkit import db
from poolkit.pool.writes import may_write
from poolkit.testing.servers import APP_PASSWORD, APP_USER, DATABASE, ReplicationPair

pytestmark = pytest.mark.replication

STATEMENTS = [
    "SELECT COUNT(*) FROM items",
    "/* a comment */ SELECT label FROM items WHERE id = 1",
    "-- a comment\nSELECT 1",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "SHOW TABLES",
    "SELECT 1 FROM items FOR UPDATE",
    "INSERT INTO items (label) VALUES ('returning') RETURNING id",
    "REPLACE INTO items (id, label) VALUES (100000, 'returning') RETURNING id",
    "DELETE FROM items WHERE label = 'returning' RETURNING id",
    "SELECT NEXTVAL(poolkit_seq)",
    "select next value for poolkit_seq",
    "SELECT SETVAL(poolkit_seq, 1000)",
    "/*!100000 INSERT INTO items (label) VALUES ('hidden') */",
]


def test_every_statement_the_server_binlogged_counts_as_a_write(items: ReplicationPair) -> None:
    items.primary.execute(f"CREATE SEQUENCE IF NOT EXISTS {DATABASE}.poolkit_seq NOCACHE")
    con = items.primary.connect(APP_USER, APP_PASSWORD, DATABASE)
    wrote: dict[str, bool] = {}
    try:
        with con.cursor() as cursor:
            for sql in STATEMENTS:
                cursor.execute("SELECT @@GLOBAL.gtid_binlog_pos")
                (before,) = cursor.fetchone()
                cursor.execute(sql)
                cursor.fetchall()
                cursor.execute("SELECT @@GLOBAL.gtid_binlog_pos")
                (after,) = cursor.fetchone()
                wrote[sql] = after != before
    finally:
        con.close()
        items.primary.execute(f"DROP SEQUENCE IF EXISTS {DATABASE}.poolkit_seq")
    missed = [sql for sql, did in wrote.items() if did and not may_write(sql)]
    assert not missed, f"wrote but classified as reads: {missed}"
    assert sum(wrote.values()) >= 7  # the writes above did write
    reads = [sql for sql in STATEMENTS[:5] if not wrote[sql]]
    assert reads and not any(may_write(sql) for sql in reads)  # plain reads stay reads


def test_read_your_writes_after_insert_returning(
        items: ReplicationPair, make_app: t.Callable[..., Flask]) -> None:
    app = make_app(items)
    items.replica.execute("STOP SLAVE SQL_THREAD")
    try:
        with app.app_context():
            # No commit() (which counts as a write by itself): the default connection sees
            # its own row; the stopped replica would not.
            row = db.query_one("INSERT INTO items (label) VALUES ('mine') RETURNING id")
            assert row is not None
            seen = db.using("replica").scalar("SELECT COUNT(*) FROM items WHERE id = %s",
                                              (row["id"],))
            assert seen == 1
    finally:
        items.replica.execute("START SLAVE SQL_THREAD")
    items.wait_replicated()
