"""Applying files through a pooled connection: bytes unchanged, errors at file:line, interrupts."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest

from poolkit import Pool
from poolkit.sqlimport.apply import apply_file, count_statements, import_session, locate
from poolkit.sqlimport.files import check_file
from poolkit.sqlimport.statement import Statement


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bytes_reach_the_server_unchanged(make_pool: t.Callable[..., Pool],
                                          tmp_path: Path) -> None:
    pool = make_pool()
    blob = bytes(range(256))
    escaped = blob.replace(b"\\", b"\\\\").replace(b"'", b"\\'").replace(b"\x00", b"\\0")
    path = _write(tmp_path, "1.sql", b"CREATE TABLE blobs (v LONGBLOB);\n"
                  b"INSERT INTO blobs VALUES (_binary '" + escaped + b"');\n"
                  b"INSERT INTO blobs VALUES ('%s %d 100%');\n")
    with import_session(pool.connection()) as raw:
        result = apply_file(raw, check_file(path))
        assert result.ok and result.statements == 3
        with raw.cursor() as cur:
            cur.execute("SELECT v FROM blobs")
            assert [r[0] for r in cur.fetchall()] == [blob, b"%s %d 100%"]
            cur.execute("DROP TABLE blobs")


def test_call_with_several_result_sets(make_pool: t.Callable[..., Pool], tmp_path: Path) -> None:
    pool = make_pool()
    path = _write(tmp_path, "1.sql", b"DELIMITER //\nCREATE PROCEDURE two() BEGIN SELECT 1; "
                  b"SELECT 2; END//\nDELIMITER ;\nCALL two();\nCALL two();\nSELECT 3;\n"
                  b"DROP PROCEDURE two;\n")
    with import_session(pool.connection()) as raw:
        result = apply_file(raw, check_file(path))
    assert result.ok, result.errors
    assert result.statements == 5
    assert count_statements(path) == 5


def test_the_session_is_discarded_afterwards(make_pool: t.Callable[..., Pool],
                                             tmp_path: Path) -> None:
    pool = make_pool()
    path = _write(tmp_path, "1.sql", b"SET @leak = 1;\nSET SESSION sql_mode = 'ANSI_QUOTES';\n")
    with import_session(pool.connection()) as raw:
        assert raw.get_autocommit()
        assert apply_file(raw, check_file(path)).ok
    with pool.connection() as conn:
        assert conn.scalar("SELECT @leak") is None
        assert "ANSI_QUOTES" not in conn.scalar("SELECT @@SESSION.sql_mode")


def test_error_line_from_the_servers_at_line() -> None:
    class Fake(Exception):
        sqlstate = "42000"

    stmt = Statement(b"SELECT\n1\nFROM WHERE", 40, 0, 10, Path("sql/20_data.sql"))
    error = locate(Fake(1064, "You have an error near 'WHERE' at line 3"), stmt, Path("x"))
    assert error.headline() == ("sql/20_data.sql:42: ERROR 1064 (42000): You have an error "
                                "near 'WHERE' at line 3")
    assert error.excerpt() == [(41, "1"), (42, "FROM WHERE")]


def test_keyboard_interrupt_leaves_nothing_recorded(make_pool: t.Callable[..., Pool],
                                                    tmp_path: Path) -> None:
    pool = make_pool()
    path = _write(tmp_path, "1.sql", b"SELECT 1;\nSELECT 2;\n")
    seen: list[int] = []

    def interrupt(stmt: Statement, seconds: float) -> None:
        seen.append(stmt.line)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), import_session(pool.connection()) as raw:
        apply_file(raw, check_file(path), on_statement=interrupt)
    assert seen == [1]
    assert pool.stats()["in_use"] == 0  # the connection went back (and was discarded)
    with pool.connection() as conn:
        assert conn.scalar("SELECT 1") == 1


def test_read_ahead_gives_the_same_statements_and_forwards_errors(tmp_path: Path) -> None:
    from poolkit.errors import SqlFileError
    from poolkit.sqlimport.apply import read_ahead
    from poolkit.sqlimport.split import split_file

    path = _write(tmp_path, "1.sql", b"".join(b"SELECT %d;\n" % i for i in range(5000)))
    assert list(read_ahead(split_file(path, chunk_size=64))) == list(split_file(path))
    bad = _write(tmp_path, "2.sql", b"SELECT 1;\nDELIMITER\n")
    got: list[int] = []
    with pytest.raises(SqlFileError, match="DELIMITER must be followed"):
        for stmt in read_ahead(split_file(bad)):
            got.append(stmt.line)
    assert got == [1]
    early = read_ahead(split_file(path))
    assert next(early).line == 1
    early.close()  # the producer thread stops


def test_big_file_goes_through_read_ahead(make_pool: t.Callable[..., Pool],
                                          tmp_path: Path) -> None:
    from poolkit.sqlimport.apply import READ_AHEAD_MIN_BYTES

    rows = b",".join(b"(%d,'row;%d -- not a comment')" % (i, i) for i in range(20000))
    statement = b"INSERT INTO big VALUES " + rows + b";\n"
    copies = READ_AHEAD_MIN_BYTES // len(statement) + 2
    data = b"CREATE TABLE big (id INT, v VARCHAR(40));\n" + statement * copies + b"BROKEN;\n"
    path = _write(tmp_path, "big.sql", data)
    pool = make_pool()
    with import_session(pool.connection()) as raw:
        result = apply_file(raw, check_file(path))
        assert result.statements == 1 + copies
        assert [e.line for e in result.errors] == [2 + copies]
        with raw.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM big")
            assert cur.fetchone() == (20000 * copies,)
            cur.execute("DROP TABLE big")


# -- batching (issue 12): several statements per round trip, attribution still exact ---------

def _trips(raw: t.Any, path: Path, **options: t.Any) -> tuple[t.Any, list[int]]:
    """Apply *path*, returning the result and the end offset reported after each round trip."""
    trips: list[int] = []
    result = apply_file(raw, check_file(path), on_progress=trips.append, **options)
    return result, trips


@pytest.mark.parametrize("group_commit", [False, True])
def test_a_batched_file_with_an_error_in_its_middle_statement(
        make_pool: t.Callable[..., Pool], tmp_path: Path, group_commit: bool) -> None:
    path = _write(tmp_path, "1.sql", b"CREATE TABLE b1 (id INT) ENGINE=InnoDB;\n"
                  b"INSERT INTO b1 VALUES (1);\n"
                  b"INSERT INTO b1\n  VALUES (2)\n  WHERE oops;\n"  # statement 3, line 5
                  b"CREATE TABLE b2 (id INT);\n"
                  b"INSERT INTO b1 VALUES (3);\n")
    pool = make_pool()
    with import_session(pool.connection()) as raw:
        result, trips = _trips(raw, path, group_commit=group_commit)
        # without group commit all five go in one round trip; with it, the run of DML goes
        # in a round trip of its own, inside one transaction (rolled back and sent again
        # statement by statement when it fails)
        assert len(trips) == (2 if group_commit else 1)
        assert result.total == 5
        [error] = result.errors
        assert (error.line, error.code) == (5, 1064)
        assert error.statement.line == 3
        # the server's "near" quotes this statement only, not the rest of the batch
        assert error.message.endswith("near 'WHERE oops' at line 3"), error.message
        assert result.stopped_at is error.statement
        # exactly what is in the database, as statement by statement: the INSERT before it
        # stays (a batch committed once is rolled back and sent again without the wrapping)
        assert (result.statements, result.rolled_back_with) == (2, 0)
        with raw.cursor() as cur:
            cur.execute("SELECT id FROM b1")
            assert cur.fetchall() == ((1,),)  # nothing after it ran
            cur.execute("SHOW TABLES LIKE 'b2'")
            assert cur.fetchall() == ()
            cur.execute("SELECT @@autocommit")
            assert cur.fetchone() == (1,)  # the session is back in autocommit
            cur.execute("DROP TABLE b1")


def test_group_commit_only_for_dml_on_transactional_tables(make_pool: t.Callable[..., Pool],
                                                           tmp_path: Path) -> None:
    inserts = b"".join(b"INSERT INTO %s VALUES (%d);\n" % (name, i)
                       for name in (b"gi", b"gm") for i in range(3))
    path = _write(tmp_path, "1.sql", b"CREATE TABLE gi (id INT PRIMARY KEY) ENGINE=InnoDB;\n"
                  b"CREATE TABLE gm (id INT PRIMARY KEY) ENGINE=MyISAM;\n" + inserts +
                  b"INSERT INTO gi VALUES (7);\nINSERT INTO gi VALUES (7);\n")
    pool = make_pool()
    with import_session(pool.connection()) as raw:
        result, _ = _trips(raw, path)
        # a MyISAM table in the run: no transaction, each statement stands on its own
        assert (result.statements, result.rolled_back_with) == (9, 0)
        assert [e.line for e in result.errors] == [10]
        path = _write(tmp_path, "2.sql", b"INSERT INTO gi VALUES (8);\n"
                                         b"INSERT INTO gi VALUES (8);\n")
        again, trips = _trips(raw, path)
        # InnoDB only: one transaction, rolled back at the failure and sent again statement
        # by statement: the first 8 stays, as with the client
        assert (again.statements, again.rolled_back_with, len(trips)) == (1, 0, 1)
        with raw.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM gi")
            assert cur.fetchone() == (5,)  # 0, 1, 2, 7 and 8
            cur.execute("SELECT COUNT(*) FROM gm")
            assert cur.fetchone() == (3,)
            cur.execute("DROP TABLE gi, gm")


@pytest.mark.parametrize("batch_bytes", [0, 1 << 20])
@pytest.mark.parametrize("filler", [0, 3000])
def test_a_file_managing_its_own_transaction_is_batched_whole_with_exact_attribution(
        make_pool: t.Callable[..., Pool], tmp_path: Path, batch_bytes: int, filler: int) -> None:
    # world.sql's shape: set autocommit=0, single-row INSERTs, commit. Group commit cannot wrap
    # them (the file runs its own transaction), so the region is not cut at every switch
    # between DML and the rest; with *filler* rows it spans batches (they start at 64 KB),
    # the failing one runs while nothing after it is sent.
    rows = b"".join(b"INSERT INTO ac VALUES (%d);\n" % (100 + i) for i in range(filler))
    path = _write(tmp_path, "1.sql", b"CREATE TABLE ac (id INT PRIMARY KEY) ENGINE=InnoDB;\n"
                  b"set autocommit=0;\n" + rows + b"INSERT INTO ac VALUES (1);\n"
                  b"INSERT INTO ac\n  VALUES (2) oops;\n"  # statement filler + 4
                  b"INSERT INTO ac VALUES (3);\ncommit;\n")
    bad_line = 4 + filler
    pool = make_pool()
    with import_session(pool.connection()) as raw:
        with raw.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS ac")
        result, trips = _trips(raw, path, batch_bytes=batch_bytes)
        if batch_bytes == 0:
            assert len(trips) == filler + 4  # one per statement, up to the failing one
        else:
            # with filler rows to coalesce, what comes before them is sent first (the server
            # is asked about the table once it exists)
            assert len(trips) == (1 if filler == 0 else 3)
        [error] = result.errors
        assert (error.line, error.code) == (bad_line + 1, 1064)  # the statement's 2nd line
        assert error.statement.line == bad_line
        assert error.message.endswith("near 'oops' at line 2"), error.message
        assert (result.statements, result.rolled_back_with) == (3 + filler, 0)
        assert result.total == 6 + filler
        with raw.cursor() as cur:
            cur.execute("SELECT @@autocommit")
            assert cur.fetchone() == (0,)  # the file's own setting, as the client leaves it
            cur.execute("SELECT COUNT(*), MIN(id), MAX(id) FROM ac")
            # its open transaction holds the rows before the failure, none after it
            assert cur.fetchone() == (filler + 1, 1, 99 + filler if filler else 1)
            cur.execute("ROLLBACK")
            cur.execute("SET autocommit=1")
            cur.execute("DROP TABLE ac")


@pytest.mark.parametrize("batch_bytes", [0, 80, 1 << 20])
def test_batches_are_bounded_and_give_the_same_result(make_pool: t.Callable[..., Pool],
                                                      tmp_path: Path, batch_bytes: int) -> None:
    lines = [b"CREATE TABLE bb (id INT PRIMARY KEY, v VARCHAR(10));"]
    lines += [b"INSERT INTO bb VALUES (%d, 'r;%d');" % (i, i) for i in range(1, 41)]
    lines += [b"INSERT INTO bb VALUES (7, 'dup');", b"INSERT INTO bb VALUES (99, 'never');"]
    path = _write(tmp_path, "1.sql", b"\n".join(lines) + b"\n")
    pool = make_pool()
    with import_session(pool.connection()) as raw:
        result, trips = _trips(raw, path, batch_bytes=batch_bytes, group_commit=False)
        assert result.statements == 41
        assert [(e.line, e.code) for e in result.errors] == [(42, 1062)]
        with raw.cursor() as cur:
            cur.execute("SELECT COUNT(*), MAX(id) FROM bb")
            assert cur.fetchone() == (40, 40)
            cur.execute("DROP TABLE bb")
    if batch_bytes == 0:
        assert len(trips) == 42  # one statement per round trip
    elif batch_bytes == 80:
        assert 20 < len(trips) < 42  # two short statements fit in 80 bytes, three do not
    else:
        assert len(trips) == 2  # the CREATE first: coalescing asks the server about bb


def test_results_of_a_batch_come_back_in_order(make_pool: t.Callable[..., Pool],
                                               tmp_path: Path) -> None:
    path = _write(tmp_path, "1.sql", b"SELECT 1 AS a;\nSELECT 'x' AS b, NULL AS c;\n"
                  b"DO 1;\nSELECT 2 AS a FROM DUAL WHERE 0;\n"
                  b"DELIMITER //\nCREATE PROCEDURE two_sets() BEGIN SELECT 3 AS p; SELECT 4 AS q;"
                  b" END//\nDELIMITER ;\nCALL two_sets();\nSELECT 5 AS z;\n"
                  b"DROP PROCEDURE two_sets;\n")
    printed: list[tuple[int, list[str], list[tuple[t.Any, ...]]]] = []
    pool = make_pool()
    with import_session(pool.connection()) as raw:
        from poolkit.sqlimport.apply import apply

        result = apply(raw, check_file(path),
                       on_rows=lambda stmt, names, rows: printed.append((stmt.line, names, rows)))
    assert result.ok, result.errors
    assert printed == [(1, ["a"], [(b"1",)]), (2, ["b", "c"], [(b"x", None)]),
                       (8, ["p"], [(b"3",)]), (8, ["q"], [(b"4",)]), (9, ["z"], [(b"5",)])]


def test_routine_bodies_are_the_same_batched_or_not(make_pool: t.Callable[..., Pool],
                                                    tmp_path: Path) -> None:
    # Under ';' a routine without BEGIN … END is one statement: batched with ";\n" after it,
    # its stored body must not change.
    data = (b"CREATE PROCEDURE lone() SELECT 1 + 1  ;\nCREATE FUNCTION f() RETURNS INT "
            b"RETURN 42;\nCREATE VIEW vv AS SELECT 1 AS one\n;\n")
    bodies = []
    pool = make_pool()
    for batch_bytes in (0, 1 << 20):
        path = _write(tmp_path, f"{batch_bytes}.sql", data)
        with import_session(pool.connection()) as raw:
            result, trips = _trips(raw, path, batch_bytes=batch_bytes)
            assert result.ok and len(trips) == (3 if batch_bytes == 0 else 1)
            with raw.cursor() as cur:
                cur.execute("SELECT ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema."
                            "ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_NAME IN "
                            "('f', 'lone') ORDER BY 1")
                rows = cur.fetchall()
                cur.execute("SHOW CREATE VIEW vv")
                bodies.append((rows, cur.fetchone()[1]))
                cur.execute("DROP PROCEDURE lone")
                cur.execute("DROP FUNCTION f")
                cur.execute("DROP VIEW vv")
    assert bodies[0] == bodies[1]
    assert bodies[0][0] == (("f", "RETURN 42"), ("lone", "SELECT 1 + 1"))


def test_stop_event_kills_the_running_batch_and_counts_exactly(
        make_pool: t.Callable[..., Pool], tmp_path: Path) -> None:
    import threading

    from poolkit.sqlimport.session import kill_running_statement

    path = _write(tmp_path, "1.sql", b"CREATE TABLE ks (id INT);\nINSERT INTO ks VALUES (1);\n"
                  b"SELECT SLEEP(0) FROM ks, (SELECT SLEEP(5)) AS s;\n"
                  b"INSERT INTO ks VALUES (2);\n")
    pool = make_pool()
    stop = threading.Event()
    with import_session(pool.connection()) as raw:
        def interrupt() -> None:
            stop.set()
            assert kill_running_statement(pool.settings, raw)

        timer = threading.Timer(0.5, interrupt)
        timer.start()
        try:
            result = apply_file(raw, check_file(path), stop=stop)
        finally:
            timer.join(10)
        assert result.interrupted and not result.errors
        assert result.statements == 2  # the SELECT was killed (1317), nothing after it ran
        assert result.stopped_at is not None and result.stopped_at.line == 3
        assert result.seconds < 4
        with raw.cursor() as cur:
            cur.execute("SELECT id FROM ks")
            assert cur.fetchall() == ((1,),)
            cur.execute("DROP TABLE ks")
