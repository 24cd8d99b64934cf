"""The parallel-load planner on small dump-shaped texts: which statement goes where."""

from __future__ import annotations

import pytest

from poolkit.errors import SqlFileError
from poolkit.sqlimport.plan import (
    BARRIER,
    ORDERED,
    ROWS,
    SESSION,
    SKIP,
    head_text,
    looks_like_dump,
    parse_set,
    plan,
    resolve_jobs,
)
from poolkit.sqlimport.split import split_bytes

PRELUDE = (b"-- MariaDB dump 10.19\n/*!40101 SET NAMES utf8mb4 */;\n"
           b"/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n")


def table(name: str, rows: int = 2, pk: bool = True) -> bytes:
    key = ", PRIMARY KEY (id)" if pk else ""
    inserts = b"".join(b"INSERT INTO `%s` VALUES (%d);\n" % (name.encode(), i)
                       for i in range(rows))
    return (b"DROP TABLE IF EXISTS `%s`;\n/*!40101 SET @saved_cs_client = @@character_set_client"
            b" */;\n/*!40101 SET character_set_client = utf8mb4 */;\nCREATE TABLE `%s` (id INT%s)"
            b" ENGINE=InnoDB;\n/*!40101 SET character_set_client = @saved_cs_client */;\n"
            b"LOCK TABLES `%s` WRITE;\n%sUNLOCK TABLES;\n"
            % (name.encode(), name.encode(), key.encode(), name.encode(), inserts))


def kinds(data: bytes) -> list[tuple[str, int, str]]:
    return [(step.kind, step.unit, step.stmt.sql.decode()[:24]) for step in
            plan(split_bytes(data))]


def test_head_text_opens_executable_comments_and_drops_plain_ones() -> None:
    assert head_text(b"/*!40101 SET NAMES utf8mb4 */") == "SET NAMES utf8mb4"
    assert head_text(b"/* x */ -- y\nDROP  TABLE\n IF EXISTS `t`") == "DROP TABLE IF EXISTS `t`"
    assert head_text(b"/*!50003 CREATE*/ /*!50017 DEFINER=`r`@`h`*/ /*!50003 TRIGGER a AFTER "
                     b"INSERT ON t FOR EACH ROW SET @x=1 */").startswith(
        "CREATE DEFINER=`r`@`h` TRIGGER a AFTER INSERT ON t")


def test_parse_set_accepts_only_replayable_assignments() -> None:
    assert parse_set("SET @OLD=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0") == [
        ("@old", "@@UNIQUE_CHECKS"), ("unique_checks", "0")]
    assert parse_set("SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO'") == [
        ("sql_mode", "'NO_AUTO_VALUE_ON_ZERO'")]
    assert parse_set("SET NAMES utf8mb4 COLLATE utf8mb4_bin") is not None
    assert parse_set("SET @n = (SELECT COUNT(*) FROM t)") is None
    assert parse_set("SET @t = NOW()") is None
    assert parse_set("SET GLOBAL max_connections = 5") is None


def test_a_dump_becomes_session_then_one_unit_per_table() -> None:
    steps = list(plan(split_bytes(PRELUDE + table("a") + table("b", pk=False))))
    assert [s.kind for s in steps[:2]] == [SESSION, SESSION]
    a = [s for s in steps if s.table == "a"]
    b = [s for s in steps if s.table == "b"]
    assert {s.unit for s in a} != {s.unit for s in b}
    assert len({s.unit for s in a}) == 1
    # a has a primary key: its rows go to any connection and its lock is not taken.
    assert [s.kind for s in a] == [ORDERED] * 5 + [SKIP, ROWS, ROWS, SKIP]
    # b has none: its rows stay in order on its connection, under its lock.
    assert [s.kind for s in b] == [ORDERED] * 9
    assert [s.index for s in steps] == list(range(len(steps)))


def test_triggers_stay_with_their_table_and_after_its_rows() -> None:
    trigger = (b"/*!50003 SET @saved_sql_mode = @@sql_mode */ ;\n"
               b"/*!50003 SET sql_mode = 'STRICT_TRANS_TABLES' */ ;\nDELIMITER ;;\n"
               b"/*!50003 CREATE*/ /*!50003 TRIGGER a_bi BEFORE INSERT ON a FOR EACH ROW "
               b"SET NEW.id = NEW.id */;;\nDELIMITER ;\n"
               b"/*!50003 SET sql_mode = @saved_sql_mode */ ;\n")
    steps = list(plan(split_bytes(PRELUDE + table("a") + trigger + table("b"))))
    unit = next(s.unit for s in steps if s.table == "a")
    tail = [s for s in steps if s.unit == unit][-4:]
    assert [s.kind for s in tail] == [ORDERED] * 4  # save, set, CREATE TRIGGER, restore
    assert b"TRIGGER a_bi" in tail[2].stmt.sql


def test_anything_else_is_a_barrier_and_views_routines_come_after_the_tables() -> None:
    data = (PRELUDE + table("a") + b"INSERT INTO s SELECT COUNT(*) FROM a;\n" + table("b")
            + b"/*!50001 CREATE VIEW v AS SELECT * FROM a */;\n")
    steps = list(plan(split_bytes(data)))
    barrier = next(s for s in steps if s.stmt.sql.startswith(b"INSERT INTO s"))
    assert barrier.kind == BARRIER and barrier.fence
    b_first = next(s for s in steps if s.table == "b")
    assert b_first.unit > barrier.unit
    assert steps[-1].kind == BARRIER


def test_without_foreign_key_checks_off_nothing_runs_in_parallel() -> None:
    steps = list(plan(split_bytes(b"SET NAMES utf8mb4;\n" + table("a") + table("b"))))
    assert {s.kind for s in steps} == {SESSION, BARRIER}


def test_a_session_change_the_log_cannot_replay_makes_the_rest_serial() -> None:
    data = PRELUDE + b"SET @n = (SELECT 1);\n" + table("a") + table("b")
    assert {s.kind for s in plan(split_bytes(data))} == {SESSION, BARRIER}


def test_data_only_dumps_get_data_units_and_commit_is_session() -> None:
    data = (PRELUDE + b"SET AUTOCOMMIT=0;\nINSERT INTO a VALUES (1);\nCOMMIT;\n"
            b"SET AUTOCOMMIT=0;\nINSERT INTO b VALUES (1);\nINSERT INTO b VALUES (2);\nCOMMIT;\n")
    steps = list(plan(split_bytes(data)))
    assert [(s.kind, s.table) for s in steps[2:]] == [
        (SESSION, None), (ORDERED, "a"), (SESSION, None), (SESSION, None), (ORDERED, "b"),
        (ORDERED, "b"), (SESSION, None)]
    assert all(s.data for s in steps if s.table)


def test_the_same_table_twice_waits_for_the_first() -> None:
    steps = list(plan(split_bytes(PRELUDE + table("a") + table("a"))))
    firsts = [s for s in steps if s.stmt.sql.startswith(b"DROP TABLE")]
    assert [s.fence for s in firsts] == [False, True]


def test_looks_like_dump() -> None:
    assert looks_like_dump(b"-- MySQL dump 10.13  Distrib 8.0.19\n")
    assert looks_like_dump(PRELUDE[22:] + table("a"))
    assert not looks_like_dump(b"CREATE TABLE t (id INT);\nINSERT INTO t VALUES (1);\n")
    # sakila's data file: a data-only dump without the dump header
    assert looks_like_dump(b"SET FOREIGN_KEY_CHECKS=0;\n--\n-- Dumping data for table actor\n"
                           b"--\nINSERT INTO actor VALUES (1);\n")


def test_resolve_jobs() -> None:
    assert resolve_jobs("auto", 10, cores=2) == 2
    assert resolve_jobs("auto", 3, cores=8) == 2  # the pool's other connection is initdb's
    assert resolve_jobs("auto", 10, cores=1) == 0  # one connection: serial
    assert resolve_jobs("3", 10) == 3
    with pytest.raises(SqlFileError, match=r"--jobs 12: .*MAX_CONNECTIONS=10.*--jobs 9"):
        resolve_jobs("12", 10)
    with pytest.raises(SqlFileError, match="expected a number of connections or 'auto'"):
        resolve_jobs("many", 10)
    with pytest.raises(SqlFileError, match="at least 1"):
        resolve_jobs("0", 10)
