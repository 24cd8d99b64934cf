"""Fail -> fix -> rerun through a real ``flask initdb`` process: what the history records
after a rollback is what the server holds, a resumed file never rolls back statements it
skipped, and ``--dry-run`` refuses what the real run refuses. Compared with a clean
``mariadb < file`` load of the fixed files."""

from __future__ import annotations

from .conftest import Twin
from .twin import HISTORY, client_load, rows

SCHEMA = (b"CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;\n"
          b"CREATE TABLE u (v INT) ENGINE=InnoDB;\n")
DATA = (b"INSERT INTO u VALUES (1);\nINSERT INTO u VALUES (2);\n"
        b"INSERT INTO nosuch VALUES (3);\nINSERT INTO u VALUES (4);\n")


def _record(twin: Twin, name: str) -> tuple[int, bool]:
    """(statements, whether a prefix checksum is kept) of *name*'s history row."""
    (statements, prefix), = rows(twin.initdb_url, f"SELECT statements, prefix_checksum FROM "
                                 f"{HISTORY} WHERE file = %s", (name,))
    return statements, prefix is not None


def test_a_resumed_file_that_rolls_back_keeps_its_applied_prefix(twin: Twin) -> None:
    twin.write(SCHEMA, "10_schema.sql")
    twin.write(DATA, "20_d.sql")
    first = twin.process("--create-database")
    assert first.code == 1, first.output
    assert "2 of 4 statements of 20_d.sql were applied and not undone" in first.output

    # Still failing, now on a table that exists: the rest could run as one transaction.
    twin.write(DATA.replace(b"INTO nosuch VALUES (3)", b"INTO t VALUES (NULL,3)"), "20_d.sql")
    again = twin.process()
    assert again.code == 1, again.output
    assert "resuming sql/20_d.sql at statement 3" in again.output, again.output
    assert "20_d.sql:3: ERROR 1048" in again.output, again.output
    assert "none of its" not in again.output and "runs it whole" not in again.output
    assert ("2 of 4 statements of 20_d.sql were applied (by an earlier run) and not undone"
            in again.output), again.output
    assert rows(twin.initdb_url, "SELECT v FROM u ORDER BY v") == [(1,), (2,)]
    assert _record(twin, "20_d.sql") == (2, True)
    status = twin.process("--status")
    assert "(2 of 4 statements applied)" in status.output, status.output

    fixed = DATA.replace(b"INTO nosuch VALUES (3)", b"INTO u VALUES (3)")
    twin.write(fixed, "20_d.sql")
    last = twin.process()
    assert last.code == 0, last.output
    assert "resuming sql/20_d.sql at statement 3" in last.output, last.output
    for name in ("10_schema.sql", "20_d.sql"):
        assert client_load(twin.client_url, twin.loader.folder / name).code == 0
    assert rows(twin.initdb_url, "SELECT v FROM u ORDER BY v") == [(1,), (2,), (3,), (4,)]
    found = twin.differences()
    assert found == [], "\n".join(found)


def test_a_whole_file_rollback_records_nothing_applied(twin: Twin) -> None:
    """Without a resume, the one-transaction rollback keeps nothing, and says so."""
    twin.write(SCHEMA, "10_schema.sql")
    assert twin.process("--create-database").code == 0
    twin.write(DATA.replace(b"INTO nosuch VALUES (3)", b"INTO t VALUES (NULL,3)"), "20_d.sql")
    failed = twin.process()
    assert failed.code == 1, failed.output
    assert "none of its 4 statements were kept" in failed.output, failed.output
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM u") == [(0,)]
    assert _record(twin, "20_d.sql") == (0, False)
    twin.write(DATA.replace(b"INTO nosuch VALUES (3)", b"INTO u VALUES (3)"), "20_d.sql")
    assert twin.process().code == 0
    assert rows(twin.initdb_url, "SELECT v FROM u ORDER BY v") == [(1,), (2,), (3,), (4,)]


def test_dry_run_refuses_a_changed_file_like_the_run(twin: Twin) -> None:
    twin.write(SCHEMA, "10_schema.sql")
    assert twin.process("--create-database").code == 0
    twin.write(SCHEMA + b"CREATE TABLE w (v INT);\n", "10_schema.sql")
    real = twin.process()
    dry = twin.process("--dry-run")
    assert real.code == 1 and "changed since it was applied" in real.output, real.output
    assert dry.code == 1, dry.output
    line = [text for text in real.output.splitlines() if "changed since" in text]
    assert line and line[0] in dry.output.splitlines(), (real.output, dry.output)
    assert "to apply" not in dry.output
    assert rows(twin.initdb_url, "SHOW TABLES LIKE 'w'") == []


def test_dry_run_refuses_a_failed_file_that_cannot_resume_like_the_run(twin: Twin) -> None:
    twin.write(SCHEMA, "10_schema.sql")
    twin.write(DATA, "20_d.sql")
    assert twin.process("--create-database").code == 1
    twin.write(DATA.replace(b"VALUES (1)", b"VALUES (9)"), "20_d.sql")
    real = twin.process()
    dry = twin.process("--dry-run")
    assert real.code == 1 and "have changed since" in real.output, real.output
    assert dry.code == 1, dry.output
    line = [text for text in real.output.splitlines() if "have changed since" in text]
    assert line and line[0] in dry.output.splitlines(), (real.output, dry.output)
    assert rows(twin.initdb_url, "SELECT v FROM u ORDER BY v") == [(1,), (2,)]


def test_a_failure_inside_the_files_own_transaction_never_resumes_past_its_rollback(
        twin: Twin) -> None:
    """The client's exit rolls the file's open transaction back: the rows it counted since
    START TRANSACTION are gone, so a resume there would lose them (client: {1, 2})."""
    own = (b"CREATE TABLE a (id INT PRIMARY KEY) ENGINE=InnoDB;\nSTART TRANSACTION;\n"
           b"INSERT INTO a VALUES (1);\nINSERT INTO a VALUES (1);\nCOMMIT;\n")
    twin.write(own, "10_own.sql")
    first = twin.process("--create-database")
    assert first.code == 1, first.output
    assert "10_own.sql:4: ERROR 1062" in first.output, first.output
    assert "stopped inside its own transaction, which was rolled back" in first.output
    assert rows(twin.initdb_url, "SELECT id FROM a") == []
    assert _record(twin, "10_own.sql")[1] is False  # no resume point

    twin.write(own.replace(b"INSERT INTO a VALUES (1);\nCOMMIT", b"INSERT INTO a VALUES (2);\n"
                           b"COMMIT"), "10_own.sql")
    again = twin.process()
    assert again.code == 1, again.output
    assert "cannot resume" in again.output and "--force" in again.output, again.output
    assert rows(twin.initdb_url, "SELECT id FROM a") == []  # nothing resumed past the loss
