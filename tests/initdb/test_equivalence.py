"""Files that trip a shortcut: each one gives the same database, exit code and history as
``mariadb < file`` (a clean load, for the fail -> fix -> resume cases)."""

from __future__ import annotations

import pytest
from click.testing import Result

from .conftest import Twin
from .twin import rows


def same(twin: Twin, *args: str, result: Result | None = None) -> None:
    """Load 1.sql with both (or take initdb's *result*); the exit codes agree and the
    databases are equal."""
    client = twin.client()
    loaded = result if result is not None else twin.initdb(*args)
    assert (loaded.exit_code == 0) == (client.code == 0), (client.output, loaded.output)
    found = twin.differences()
    assert found == [], "\n".join(found)


def one_row_inserts(table: str, values: list[str]) -> bytes:
    return b"".join(f"INSERT INTO {table} VALUES ({v});\n".encode() for v in values)


# -- coalescing and group commit ask the server which engine the table has ------------

ROWS5 = ["1, 'a'", "2, 'toolong'", "3, 'c'", "4, 'd'", "5, 'e'"]


def test_if_not_exists_over_an_existing_myisam_table(twin: Twin) -> None:
    twin.on_client_db("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(3)) ENGINE=MyISAM")
    twin.write(b"CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, v VARCHAR(3)) ENGINE=InnoDB;\n"
               + one_row_inserts("t", ROWS5))
    result = twin.initdb()
    assert result.exit_code == 1, result.output
    assert "1.sql:3: ERROR 1406" in result.output
    same(twin, "--force")
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM t") == [(1,)]


def test_a_table_named_in_another_case_than_the_myisam_one(twin: Twin) -> None:
    names = rows(twin.initdb_url, "SELECT @@lower_case_table_names")[0][0]
    if names:
        pytest.skip("the server folds table names: T and t are one table")
    twin.on_client_db("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(3)) ENGINE=MyISAM")
    twin.write(b"CREATE TABLE T (id INT PRIMARY KEY, v VARCHAR(3)) ENGINE=InnoDB;\n"
               + one_row_inserts("t", ROWS5))
    same(twin)
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM t") == [(1,)]


def test_set_statement_alter_to_myisam(twin: Twin) -> None:
    twin.write(b"CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(3)) ENGINE=InnoDB;\n"
               b"SET STATEMENT max_statement_time=100 FOR ALTER TABLE t ENGINE=MyISAM;\n"
               + one_row_inserts("t", ROWS5))
    same(twin)
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM t") == [(1,)]


TRIGGER = (b"CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB;\n"
           b"CREATE TABLE audit (id INT) ENGINE=MyISAM;\n"
           b"CREATE TRIGGER t_ai AFTER INSERT ON t FOR EACH ROW\n"
           b"  INSERT INTO audit VALUES (NEW.id);\n"
           + one_row_inserts("t", ["1", "2", "3", "3", "5", "6"]))


def test_a_trigger_into_a_myisam_table_then_resume(twin: Twin) -> None:
    twin.write(TRIGGER)
    first = twin.initdb()
    assert first.exit_code == 1
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM t") == [(3,)]
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM audit") == [(3,)]
    twin.write(TRIGGER.replace(b"VALUES (3);\nINSERT INTO t VALUES (5)",
                               b"VALUES (4);\nINSERT INTO t VALUES (5)"))
    again = twin.initdb()
    assert again.exit_code == 0, again.output
    same(twin, result=again)


def test_a_failed_batch_leaves_no_burned_ids(twin: Twin) -> None:
    body = (b"CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(3)) ENGINE=InnoDB;\n"
            + b"".join(f"INSERT INTO t (v) VALUES ('{v}');\n".encode()
                       for v in ["a", "b", "c", "toolong", "e"]))
    twin.write(body)
    assert twin.initdb().exit_code == 1
    twin.write(body.replace(b"toolong", b"d"))
    again = twin.initdb()
    assert again.exit_code == 0, again.output
    assert rows(twin.initdb_url, "SELECT id FROM t ORDER BY id") == [(i,) for i in range(1, 6)]
    same(twin, result=again)


def test_a_data_only_transaction_file_leaves_no_burned_ids(twin: Twin) -> None:
    twin.on_client_db("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(3)) "
                      "ENGINE=InnoDB")
    body = b"".join(f"INSERT INTO t (v) VALUES ('{v}');\n".encode()
                    for v in ["a", "b", "c", "toolong", "e"])
    twin.write(body)
    assert twin.initdb().exit_code == 1
    twin.write(body.replace(b"toolong", b"d"))
    again = twin.initdb()
    assert again.exit_code == 0, again.output
    assert rows(twin.initdb_url, "SELECT id FROM t ORDER BY id") == [(i,) for i in range(1, 6)]
    same(twin, result=again)


def test_a_failed_batch_with_nextval(twin: Twin) -> None:
    body = (b"CREATE SEQUENCE s;\n"
            b"CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(3)) ENGINE=InnoDB;\n"
            + b"".join(f"INSERT INTO t VALUES (NEXTVAL(s), '{v}');\n".encode()
                       for v in ["a", "b", "c", "toolong", "e"]))
    twin.write(body)
    assert twin.initdb().exit_code == 1
    twin.write(body.replace(b"toolong", b"d"))
    again = twin.initdb()
    assert again.exit_code == 0, again.output
    # Only the failing statement's own NEXTVAL is gone (statement by statement too: the
    # server draws it before the row fails); no batch burned the others.
    assert rows(twin.initdb_url, "SELECT id FROM t ORDER BY id") == [
        (i,) for i in (1, 2, 3, 5, 6)]


def test_strict_mode_from_set_statement_or_version_comment_is_not_the_sessions(
        twin: Twin) -> None:
    twin.write(b"SET sql_mode='';\n"
               b"SET STATEMENT sql_mode='STRICT_ALL_TABLES' FOR SELECT 1;\n"
               b"/*!110000 SET sql_mode='STRICT_ALL_TABLES' */;\n"
               b"CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(3) NOT NULL) ENGINE=InnoDB;\n"
               + one_row_inserts("t", ["1, 'a'", "2, NULL", "3, 'c'", "4, 'd'", "5, 'e'"]))
    result = twin.initdb("-q")
    assert result.exit_code == 1 and "1.sql:6: ERROR 1048" in result.output, result.output
    same(twin, result=result)


# -- the history is written on a connection of its own --------------------------------

LOCKED = (b"CREATE TABLE items (id INT PRIMARY KEY) ENGINE=InnoDB;\n"
          b"LOCK TABLES items WRITE;\n"
          b"INSERT INTO items VALUES (1);\nINSERT INTO items VALUES (1);\n"
          b"INSERT INTO items VALUES (2);\nUNLOCK TABLES;\n")


def test_a_failure_inside_lock_tables_is_recorded_and_resumes(twin: Twin) -> None:
    twin.write(LOCKED)
    first = twin.initdb()
    assert first.exit_code == 1
    assert "1.sql:4: ERROR 1062" in first.output
    assert "1100" not in first.output and "not locked" not in first.output
    assert "[!] failed" in twin.initdb("--status").output
    twin.write(LOCKED.replace(b"VALUES (1);\nINSERT INTO items VALUES (1)",
                              b"VALUES (1);\nINSERT INTO items VALUES (3)"))
    again = twin.initdb()
    assert again.exit_code == 0, again.output
    assert rows(twin.initdb_url, "SELECT id FROM items ORDER BY id") == [(1,), (2,), (3,)]


def test_a_failure_inside_the_files_own_transaction_is_recorded(twin: Twin) -> None:
    twin.write(b"CREATE TABLE a (id INT PRIMARY KEY) ENGINE=InnoDB;\n"
               b"START TRANSACTION;\nINSERT INTO a VALUES (1);\nINSERT INTO a VALUES (1);\n"
               b"COMMIT;\n")
    first = twin.initdb()
    assert first.exit_code == 1
    status = twin.initdb("--status").output
    assert "[!] failed" in status, status
    same(twin, result=first)


@pytest.mark.parametrize("opening", [b"START TRANSACTION;\n", b"SET autocommit=0;\n"])
def test_a_file_ending_in_an_open_transaction_is_rolled_back_and_recorded(
        twin: Twin, opening: bytes) -> None:
    twin.on_client_db("CREATE TABLE a (id INT PRIMARY KEY) ENGINE=InnoDB")
    twin.write(opening + b"INSERT INTO a VALUES (1);\nINSERT INTO a VALUES (2);\n")
    same(twin)
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM a") == [(0,)]
    assert "[X] applied" in twin.initdb("--status").output


# -- resume replays only what a new session can rebuild -------------------------------

def test_resume_after_last_insert_id_in_a_set_refuses(twin: Twin) -> None:
    body = (b"CREATE TABLE parent (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB;\n"
            b"CREATE TABLE child (parent_id INT, v VARCHAR(3)) ENGINE=InnoDB;\n"
            b"INSERT INTO parent (v) VALUES (1);\nINSERT INTO parent (v) VALUES (2);\n"
            b"SET @pid = LAST_INSERT_ID();\n"
            b"INSERT INTO child VALUES (@pid, 'toolongvalue');\n")
    twin.write(body)
    assert twin.initdb().exit_code == 1
    twin.write(body.replace(b"toolongvalue", b"ok"))
    again = twin.initdb()
    assert again.exit_code == 1, again.output
    assert "--force" in again.output and "session" in again.output
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM child") == [(0,)]


@pytest.mark.parametrize("builder", [
    b"CREATE TEMPORARY TABLE tmp (id INT);\nINSERT INTO tmp VALUES (1);\n",
    b"SELECT 7 INTO @v;\n",
    b"INSERT INTO log VALUES (@n := @n + 1);\n",
])
def test_resume_after_session_objects_refuses(twin: Twin, builder: bytes) -> None:
    body = (b"CREATE TABLE log (n INT);\nSET @n := 0;\n" + builder +
            b"CREATE TABLE t (v VARCHAR(3));\nINSERT INTO t VALUES ('toolong');\n")
    twin.write(body)
    assert twin.initdb().exit_code == 1
    twin.write(body.replace(b"toolong", b"ok"))
    again = twin.initdb()
    assert again.exit_code == 1, again.output
    assert "--force" in again.output


def test_resume_does_not_replay_set_statement_for(twin: Twin) -> None:
    body = (b"CREATE TABLE c (n INT) ENGINE=InnoDB;\nINSERT INTO c VALUES (0);\n"
            b"SET STATEMENT max_statement_time=5 FOR UPDATE c SET n = n + 1;\n"
            b"CREATE TABLE t (v VARCHAR(3));\nINSERT INTO t VALUES ('toolong');\n")
    twin.write(body)
    assert twin.initdb().exit_code == 1
    twin.write(body.replace(b"toolong", b"ok"))
    again = twin.initdb()
    assert again.exit_code == 0, again.output
    same(twin, result=again)
    assert rows(twin.initdb_url, "SELECT n FROM c") == [(1,)]


# -- client commands and the pre-flight check -----------------------------------------

def test_use_and_quit_without_a_delimiter(twin: Twin) -> None:
    twin.write(b"CREATE TABLE here (id INT);\nuse " + twin.initdb_url.rsplit("/", 1)[1].encode()
               + b"\nINSERT INTO here VALUES (1);\nquit\nINSERT INTO here VALUES (2);\n")
    result = twin.initdb()
    assert result.exit_code == 0, result.output
    assert rows(twin.initdb_url, "SELECT id FROM here") == [(1,)]


@pytest.mark.parametrize("words", ["exit", "go", "ego", "\\q", "QUIT;", "  exit", "go;", "status;",
                                   "quit # x", "help", "print", "Exit\r", "nowarning x"])
def test_client_commands_at_the_start_of_a_statement(twin: Twin, words: str) -> None:
    twin.write(b"CREATE TABLE t (id INT);\nINSERT INTO t VALUES (1);\n" + words.encode()
               + b"\nINSERT INTO t VALUES (2);\n")
    same(twin)


@pytest.mark.parametrize("before", [b"-- Don't edit: generated\n",
                                    b"CREATE TABLE `customer's files` (b BLOB);\n",
                                    b"/* it's */ SELECT 1;\n", b"# it's\n"])
def test_a_raw_binary_literal_after_a_quote_in_a_comment_or_name(twin: Twin,
                                                                  before: bytes) -> None:
    twin.write(before + b"CREATE TABLE b (v BLOB);\n"
               b"INSERT INTO b VALUES (_binary '\x01\x02\xff\x1ax');\n"
               b"INSERT INTO b VALUES ('caf\xe9');\n")
    same(twin, "-q")
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM b") == [(2,)]


@pytest.mark.parametrize("body", [
    b"CREATE TABLE t (id INT);\r\nINSERT INTO t VALUES (1);\r\n\x1a",
    b"CREATE TABLE t (id INT); -- a \x01 control byte\nINSERT INTO t VALUES (1);\n",
    b"/* \x02\x03 */ CREATE TABLE t (id INT);\nINSERT INTO t VALUES (1);\n",
])
def test_ctrl_z_and_control_bytes_in_comments_load(twin: Twin, body: bytes) -> None:
    twin.write(body)
    same(twin)
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM t") == [(1,)]


def test_explicit_ids_coalesced_under_lock_tables_keep_the_counter(twin: Twin) -> None:
    # Coalesced without group commit (LOCK TABLES): every id is written, so a failed
    # multi-row INSERT leaves the counter where row by row leaves it.
    body = (b"CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(3)) ENGINE=InnoDB;\n"
            b"LOCK TABLES t WRITE;\n"
            + b"".join(f"INSERT INTO t VALUES ({i}, '{v}');\n".encode()
                       for i, v in enumerate(["a", "b", "c", "toolong", "e", "f"], 1))
            + b"UNLOCK TABLES;\nINSERT INTO t (v) VALUES ('new');\n")
    twin.write(body)
    first = twin.initdb()
    assert first.exit_code == 1 and "1.sql:6: ERROR 1406" in first.output, first.output
    twin.write(body.replace(b"toolong", b"d"))
    again = twin.initdb()
    assert again.exit_code == 0, again.output
    assert rows(twin.initdb_url, "SELECT MAX(id) FROM t") == [(7,)]
    same(twin, result=again)


def test_rows_drawing_on_a_sequence_are_not_wrapped_with_a_failing_one(twin: Twin) -> None:
    # Found by the differential tester: a batch of rows with NEXTVAL() committed once was
    # rolled back at a failure and sent again: the sequence had moved on (row 2 got 3).
    twin.write(b"CREATE SEQUENCE s;\n"
               b"CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(3), n INT) ENGINE=InnoDB;\n"
               b"INSERT INTO t VALUES (0, 'z', 0);\n"  # literal: a batch of its own
               b"INSERT INTO t VALUES (1, 'a', LENGTH('x'));\n"
               b"INSERT INTO t VALUES (2, 'b', NEXTVAL(s));\n"
               b"INSERT INTO t VALUES (3, 'toolong', NEXTVAL(s));\n")
    same(twin)
    assert rows(twin.initdb_url, "SELECT n FROM t ORDER BY id") == [(0,), (1,), (1,)]
