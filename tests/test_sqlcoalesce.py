"""One-row INSERTs coalesced into multi-row INSERTs: what is merged, and that a load still
equals the client's row by row, failures included (issue 12)."""

from __future__ import annotations

import shutil
import subprocess
import typing as t
from pathlib import Path

import pytest

from poolkit import Pool
from poolkit.sqlimport import coalesce
from poolkit.sqlimport.apply import apply_file, import_session
from poolkit.sqlimport.files import check_file
from poolkit.sqlimport.statement import Statement
from poolkit.url import parse_url

# -- what may be coalesced ---------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    b"INSERT INTO `city` VALUES (1,'City 1 d''Or','AFG','District',1780000)",
    b"INSERT INTO t (a, b) VALUES (-1.5e3, NULL)",
    b"insert ignore into db.t values (0x0aFF, _binary 'x\\'y', X'00', TRUE, DEFAULT)",
    b"REPLACE INTO t VALUES ('a;b', \"q\\\"\"),(2, 'c')",
    b"INSERT INTO t VALUES ('it''s', _utf8mb4'\xc3\xa9')",
])
def test_literal_rows_are_candidates(sql: bytes) -> None:
    found = coalesce.insert_prefix(sql)
    assert found is not None
    prefix, table = found
    assert sql.startswith(prefix) and prefix.upper().rstrip().endswith(b"VALUES")
    assert table[1] in ("city", "t")


@pytest.mark.parametrize("sql", [
    b"INSERT INTO t VALUES (NOW())",
    b"INSERT INTO t VALUES (LAST_INSERT_ID())",
    b"INSERT INTO t VALUES (@v)",
    b"INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = 2",
    b"INSERT INTO t SELECT * FROM u",
    b"INSERT INTO t VALUES (1 + 1)",
    b"INSERT INTO t VALUES ('unterminated)",
    b"INSERT INTO t VALUES (a)",
    b"UPDATE t SET a = 1",
    b"INSERT INTO t VALUES ('" + b"x" * coalesce.MERGE_MAX_BYTES + b"')",
])
def test_anything_but_literals_is_not(sql: bytes) -> None:
    assert coalesce.insert_prefix(sql) is None


def test_runs_are_merged_except_their_last_statement() -> None:
    p, q = b"INSERT INTO t VALUES ", b"INSERT INTO u VALUES "
    batch = [p + b"(1)", p + b"(2)", p + b"(3)", b"SET @a = 1", q + b"(1)", q + b"(2)",
             p + b"(4)"]
    parts = coalesce.pieces(batch, [p, p, p, None, q, q, p])
    assert [(x.sql, x.count) for x in parts] == [
        (p + b"(1),(2)", 2), (p + b"(3)", 1), (b"SET @a = 1", 1),  # LAST_INSERT_ID: 3 alone
        (q + b"(1)", 1), (q + b"(2)", 1), (p + b"(4)", 1)]  # a run of two gains nothing


def test_rows_with_null_are_marked() -> None:
    # whether they are coalesced depends on the server's sql_mode, read when sent (facts)
    finder = coalesce.Coalescer()
    null_row = finder.candidate(b"INSERT INTO t VALUES (1, NULL)")
    assert null_row is not None and null_row.null
    quoted = finder.candidate(b"INSERT INTO t VALUES (1, 'null')")
    assert quoted is not None and quoted.null  # 'null' in a string counts too: no harm
    plain = finder.candidate(b"INSERT INTO t VALUES (1, 'x')")
    assert plain is not None and not plain.null and plain.table == (None, "t")


def test_statements_before_a_run_are_settled_first() -> None:
    finder = coalesce.Coalescer()
    sqls = [b"CREATE TABLE t (id INT)", *(b"INSERT INTO t VALUES (%d)" % i for i in range(4)),
            b"SET @a = 1", b"INSERT INTO t VALUES (9)", b"INSERT INTO t VALUES (10)"]
    stmts = [Statement(sql, 1, 0, 0) for sql in sqls]
    merge = [finder.candidate(sql) for sql in sqls]
    assert coalesce.settle_point(stmts, merge) == 1  # the run of 4 after CREATE; 2 after SET
    assert coalesce.settle_point(stmts[1:], merge[1:]) == 0


# -- on the server -----------------------------------------------------------------------------

def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "1.sql"
    path.write_bytes(data)
    return path


def _com_insert(raw: t.Any) -> int:
    with raw.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Com_insert'")
        return int(cur.fetchone()[1])


def _rows(n: int, table: bytes = b"co", start: int = 1) -> bytes:
    return b"".join(b"INSERT INTO %s VALUES (%d,'r %d');\n" % (table, i, i)
                    for i in range(start, start + n))


@pytest.mark.parametrize("engine", [b"InnoDB", b"MyISAM"])
def test_one_row_inserts_reach_innodb_as_few_statements(
        make_pool: t.Callable[..., Pool], tmp_path: Path, engine: bytes) -> None:
    path = _write(tmp_path, b"DROP TABLE IF EXISTS co;\nCREATE TABLE co (id INT PRIMARY KEY, "
                  b"v VARCHAR(20)) ENGINE=" + engine + b";\nset autocommit=0;\n" +
                  _rows(300) + b"commit;\nset autocommit=1;\n")
    with import_session(make_pool().connection()) as raw:
        before = _com_insert(raw)
        result = apply_file(raw, check_file(path))
        inserts = _com_insert(raw) - before
        assert result.ok and result.statements == 305
        with raw.cursor() as cur:
            cur.execute("SELECT COUNT(*), SUM(id), MAX(v) FROM co")
            assert cur.fetchone() == (300, 300 * 301 // 2, "r 99")
            cur.execute("DROP TABLE co")
    # InnoDB: a few multi-row INSERTs (one per batch, plus each run's last row);
    # MyISAM cannot undo a failed statement: row by row, as the client sends them
    assert inserts == 300 if engine == b"MyISAM" else inserts <= 6


def test_a_null_in_a_not_null_column_fails_as_row_by_row_without_strict_mode(
        make_pool: t.Callable[..., Pool], tmp_path: Path) -> None:
    path = _write(tmp_path, b"SET sql_mode = '';\nDROP TABLE IF EXISTS nn;\n"
                  b"CREATE TABLE nn (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB;\n" +
                  b"".join(b"INSERT INTO nn VALUES (%d, %s);\n" % (i, b"NULL" if i == 5 else b"1")
                           for i in range(1, 9)))
    with import_session(make_pool().connection()) as raw:
        result = apply_file(raw, check_file(path))
        assert [(e.line, e.code) for e in result.errors] == [(8, 1048)]
        with raw.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM nn")  # 4 kept or rolled back with it, as reported
            assert cur.fetchone()[0] + result.rolled_back_with == 4
            cur.execute("SELECT COUNT(*) FROM nn WHERE v = 0")
            assert cur.fetchone() == (0,)
            cur.execute("DROP TABLE nn")


@pytest.mark.parametrize("region", [False, True])
def test_a_failing_row_in_a_coalesced_run_is_found_exactly(
        make_pool: t.Callable[..., Pool], tmp_path: Path, region: bool) -> None:
    # region: inside the file's own transaction (world.sql's shape); else autocommit, where
    # group commit wraps the batch in a transaction and a failure rolls that batch back
    begin, end = (b"set autocommit=0;\n", b"commit;\n") if region else (b"", b"")
    path = _write(tmp_path, b"DROP TABLE IF EXISTS co;\nCREATE TABLE co (id INT PRIMARY KEY, "
                  b"v VARCHAR(20)) ENGINE=InnoDB;\n" + begin + _rows(40) +
                  b"INSERT INTO co VALUES (7,'dup');\n" + _rows(5, start=41) + end)
    bad_line = 3 + len(begin.splitlines()) + 40
    with import_session(make_pool().connection()) as raw:
        result = apply_file(raw, check_file(path))
        [error] = result.errors
        assert (error.line, error.code) == (bad_line, 1062)
        assert error.message == "Duplicate entry '7' for key 'PRIMARY'"
        assert result.stopped_at is error.statement
        with raw.cursor() as cur:
            cur.execute("SELECT COUNT(*), MAX(id) FROM co")
            kept = cur.fetchone()
            if region:  # the rows before it are in the file's open transaction, as with the
                assert kept == (40, 40)  # client; the counts say so
                assert (result.statements, result.rolled_back_with) == (43, 0)
                cur.execute("ROLLBACK")
                cur.execute("SET autocommit=1")
            else:  # what is kept and what was rolled back with it add up to the 40 rows
                assert kept[0] + result.rolled_back_with == 40
                assert result.statements == 2 + kept[0]
            cur.execute("DROP TABLE co")


def test_last_insert_id_after_a_run_is_the_row_by_row_one(
        make_pool: t.Callable[..., Pool], tmp_path: Path) -> None:
    path = _write(tmp_path, b"DROP TABLE IF EXISTS ai;\nCREATE TABLE ai (id INT AUTO_INCREMENT "
                  b"PRIMARY KEY, v INT) ENGINE=InnoDB;\n" +
                  b"".join(b"INSERT INTO ai (v) VALUES (%d);\n" % i for i in range(10)) +
                  b"SET @last = LAST_INSERT_ID();\n")
    with import_session(make_pool().connection()) as raw:
        assert apply_file(raw, check_file(path)).ok
        with raw.cursor() as cur:
            cur.execute("SELECT @last, COUNT(*), MAX(id) FROM ai")
            assert cur.fetchone() == (10, 10, 10)
            cur.execute("DROP TABLE ai")


@pytest.mark.skipif(shutil.which("mariadb") is None, reason="the mariadb client is not installed")
def test_a_world_shaped_file_loads_what_the_client_loads(
        make_database: t.Callable[[], str], make_pool: t.Callable[..., Pool],
        tmp_path: Path) -> None:
    body = (b"CREATE TABLE w (id INT PRIMARY KEY, name CHAR(35), pop INT, area DECIMAL(10,2),"
            b" b VARBINARY(8)) ENGINE=InnoDB;\nset autocommit=0;\n" +
            b"".join(b"INSERT INTO w VALUES (%d,'N %d d''Or\\\\x',%d,%d.%02d,_binary '\\0;%d');\n"
                     % (i, i, i * 7 - 500, i, i % 100, i % 9) for i in range(1, 2001)) +
            b"commit;\n")
    ours, theirs = make_database(), make_database()
    path = _write(tmp_path, b"USE `" + parse_url(ours).database.encode() + b"`;\n" + body)
    with import_session(make_pool().connection()) as raw:
        assert apply_file(raw, check_file(path)).ok
    url = parse_url(theirs)
    (tmp_path / "2.sql").write_bytes(body)
    with open(tmp_path / "2.sql", "rb") as stdin:
        done = subprocess.run(["mariadb", f"--host={url.host}", f"--port={url.port}",
                               f"--user={url.user}", *([f"--password={url.password}"]
                                                       if url.password else []), url.database],
                              stdin=stdin, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with import_session(make_pool().connection()) as raw, raw.cursor() as cur:
        sums = []
        for name in (parse_url(ours).database, url.database):
            cur.execute(f"CHECKSUM TABLE `{name}`.w")
            sums.append(cur.fetchone()[1])
            cur.execute(f"SELECT COUNT(*) FROM `{name}`.w")
            assert cur.fetchone() == (2000,)
        assert sums[0] == sums[1] and sums[0]
