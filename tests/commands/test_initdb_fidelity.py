"""``flask initdb`` against the ``mariadb`` client's behaviour, item by item (issue 11).

Each test writes its own small fixture files and runs them on the real server; where the
question is fidelity, the same file is also loaded with the ``mariadb`` client and compared.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import subprocess
import typing as t
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import Result
from conftest import InitdbEnv, query_rows

from poolkit.url import parse_url

needs_client = pytest.mark.skipif(shutil.which("mariadb") is None,
                                  reason="the mariadb client is not installed")


class Env(InitdbEnv):
    """:class:`InitdbEnv` plus the mariadb client on the same database, for comparisons."""

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder, "poolkit_initdb_fidelity")

    def client(self, path: Path, *args: str, database: str | None = None) -> bytes:
        """Load *path* with the mariadb client (batch mode); its stdout."""
        url = parse_url(self.url)
        command = ["mariadb", f"--host={url.host}", f"--port={url.port}", f"--user={url.user}",
                   *args, database or url.database]
        if url.password:
            command.insert(4, f"--password={url.password}")
        with open(path, "rb") as stdin:
            done = subprocess.run(command, stdin=stdin, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout


def _stdout(result: Result) -> str:
    return result.stdout


@pytest.fixture
def env(make_database: t.Callable[[], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Env]:
    folder = tmp_path / "sql"
    folder.mkdir()
    made = Env(make_database(), folder)
    monkeypatch.chdir(tmp_path)  # paths are shown relative to the working directory: sql/…
    yield made
    made.extension.close()


# -- 1. a file that drops and re-creates the app's own database ----

def test_a_file_that_drops_and_recreates_the_apps_database(env: Env) -> None:
    db = f"`{env.database}`"
    env.write("10_first.sql", b"CREATE TABLE early (id INT);\n")
    assert env.run().exit_code == 0
    env.write("20_world.sql", (f"DROP DATABASE IF EXISTS {db};\nCREATE DATABASE {db};\n"
                               f"USE {db};\nCREATE TABLE city (id INT PRIMARY KEY);\n"
                               "INSERT INTO city VALUES (1), (2);\n").encode())
    result = env.run()
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert ("note: the table poolkit_sql_history was dropped by a file: re-created it and "
            "restored its 1 record") in result.output
    assert env.rows("SELECT file, status FROM poolkit_sql_history ORDER BY file") == [
        ("10_first.sql", "applied"), ("20_world.sql", "applied")]
    assert env.rows("SELECT COUNT(*) FROM city") == [(2,)]
    again = env.run()
    assert again.exit_code == 0
    assert "nothing to apply: 2 files already applied" in again.output


def test_a_file_that_drops_the_database_for_good(env: Env) -> None:
    env.write("10_drop.sql", f"DROP DATABASE `{env.database}`;\n".encode())
    env.write("20_next.sql", b"CREATE TABLE after_drop (id INT);\n")
    result = env.run()
    assert result.exit_code == 0, result.output
    assert f"note: database '{env.database}' was dropped by a file: re-created it" in \
        result.output
    assert env.rows("SELECT file FROM poolkit_sql_history ORDER BY file") == [
        ("10_drop.sql",), ("20_next.sql",)]
    assert env.rows("SHOW TABLES LIKE 'after_drop'") == [("after_drop",)]


# -- 2. a DELIMITER block with two statements ----

def test_a_delimiter_block_with_two_statements_runs_like_the_client(env: Env) -> None:
    env.write("1.sql", b"CREATE TABLE events (id INT, day INT);\n"
                       b"CREATE TABLE counts (n INT);\nINSERT INTO counts VALUES (0);\n"
                       b"delimiter //\n"
                       b"DROP TRIGGER IF EXISTS events_ins;\n"
                       b"CREATE TRIGGER events_ins AFTER INSERT ON events FOR EACH ROW\n"
                       b"BEGIN\n  UPDATE counts SET n = n + 1;\nEND;\n//\n"
                       b"delimiter ;\nINSERT INTO events VALUES (1, 2), (3, 4);\n")
    result = env.run()
    assert result.exit_code == 0, result.output
    assert env.rows("SELECT n FROM counts") == [(2,)]
    env.write("1.sql", env.folder.joinpath("1.sql").read_bytes().replace(b"(1, 2)", b"(5, 6)"))
    assert env.run("--force").exit_code == 1  # events, counts exist: fails, not a 1064
    assert "ERROR 1050 (42S01)" in env.run("--force").output


# -- 3. comments ----

ROUTINE = (b"DELIMITER //\n"
           b"CREATE PROCEDURE commented(IN a INT) -- trailing\n"
           b"BEGIN\n  # a hash comment\n  SELECT a /* plain */ + 1, /*!50100 2 + */ 3;\n"
           b"  /* two\n     lines */ SELECT 'not -- a # comment /* here */' AS s, 2/*x*/+3;\n"
           b"  SELECT 1--1;\nEND//\nDELIMITER ;\n")


def _show_create(url: str, database: str) -> str:
    rows = query_rows(url.rsplit("/", 1)[0] + "/" + database, "SHOW CREATE PROCEDURE commented")
    return str(rows[0][2])


@needs_client
@pytest.mark.parametrize("flag", [None, "--comments"])
def test_comments_match_a_client_load(env: Env, make_database: t.Callable[[], str],
                                      flag: str | None) -> None:
    path = env.write("1.sql", ROUTINE)
    args = [flag] if flag else []
    result = env.run(*args)
    assert result.exit_code == 0, result.output
    other = parse_url(make_database()).database
    env.client(path, *args, database=other)
    ours, theirs = _show_create(env.url, env.database), _show_create(env.url, other)
    assert ours == theirs
    assert ("# a hash comment" in ours) is (flag is not None)
    assert "'not -- a # comment /* here */'" in ours


def test_optimizer_hints_are_kept(env: Env) -> None:
    # The MySQL client keeps /*+ … */ (MariaDB 10.11's client drops it; its server ignores it).
    env.write("1.sql", b"CREATE VIEW hinted AS SELECT /*+ NO_RANGE_OPTIMIZATION(t) */ 1 AS x;\n"
                       b"DELIMITER //\nCREATE PROCEDURE commented() SELECT /*+ BKA(t) */ 1 "
                       b"/* gone */;//\nDELIMITER ;\n")
    assert env.run().exit_code == 0
    body = _show_create(env.url, env.database)
    assert "/*+ BKA(t) */" in body and "gone" not in body


def test_a_syntax_error_after_a_stripped_multiline_comment_names_the_file_line(env: Env) -> None:
    env.write("1.sql", b"SELECT 1,\n  /* a\n  comment\n  of four lines */ 2,\n  3 FROM\n"
                       b"  WHERE;\n")
    result = env.run()
    assert result.exit_code == 1
    assert "1.sql:6: ERROR 1064 (42000)" in result.output


# -- 4. character set ----

def test_default_character_set(env: Env) -> None:
    sql = b"SELECT @@character_set_client, @@character_set_results;\n"
    assert "utf8mb4\tutf8mb4" in _stdout(env.run("-", input=sql))
    assert "latin1\tlatin1" in _stdout(env.run("--default-character-set", "latin1", "-",
                                              input=sql))
    unknown = env.run("--default-character-set", "klingon", "-", input=sql)
    assert unknown.exit_code == 1
    assert "klingon: the server does not know this character set" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1


# -- 5. result sets ----

VERIFY = (b"CREATE TABLE v (id INT, name VARCHAR(20), note TEXT);\n"
          b"INSERT INTO v VALUES (1, 'a', NULL), (2, 'tab\\there', 'line\\nbreak \\\\ slash');\n"
          b"SELECT 'CRC FAIL' AS verdict FROM DUAL WHERE 0;\n"
          b"SELECT IF(COUNT(*) = 2, 'OK', 'CRC FAIL') AS verdict FROM v;\n"
          b"SELECT id, name, note, 2.50 AS d, _binary 'x\\0y' AS b FROM v ORDER BY id;\n"
          b"SELECT 1; SELECT 2 AS two;\n")


@needs_client
def test_result_sets_print_like_the_client_in_batch_mode(env: Env,
                                                         make_database: t.Callable[[], str]
                                                         ) -> None:
    path = env.write("1.sql", VERIFY)
    result = env.run()
    assert result.exit_code == 0, result.output
    other = parse_url(make_database()).database
    expected = env.client(path, database=other)
    printed = _stdout(result).encode()
    assert printed.startswith(expected), (printed, expected)
    assert b"verdict\nOK\n" in printed
    env.write("2.sql", b"SELECT 'OK' AS verdict;\n")
    quiet = env.run("-q")
    assert quiet.exit_code == 0
    assert quiet.output == ""


# -- 6. the failed-file record, resume, refuse, --force ----

FIVE = (b"CREATE TABLE t1 (id INT);\n"
        b"CREATE TABLE t2 (id INT);\n"
        b"-- line 3 and 4\n\n"
        b"CREATE TABLE t3 (id INT) oops;\n"  # line 5: statement 3 of 5
        b"CREATE TABLE t4 (id INT);\n"
        b"INSERT INTO t1 VALUES (1);\n")


def test_a_failed_file_is_recorded_resumed_refused_or_forced(env: Env) -> None:
    env.write("20_data.sql", FIVE)
    first = env.run()
    assert first.exit_code == 1
    text = first.output
    assert "sql/20_data.sql:5: ERROR 1064 (42000)" in text
    assert ("Error: stopped at sql/20_data.sql:5: 2 of 5 statements of 20_data.sql were "
            "applied and not undone; it is recorded as failed; a rerun resumes at the "
            "statement that stopped it") in text
    assert env.rows("SHOW TABLES LIKE 't%'") == [("t1",), ("t2",)]
    status = env.run("--status")
    assert status.output.splitlines() == [
        "[!] failed  sql/20_data.sql:5 (2 of 5 statements applied)"]
    assert env.run("--status", "--exit-code").exit_code == 1
    row = env.rows("SELECT status, statements, total, failed_line, failed_statement, "
                   "LEFT(error, 30), LENGTH(prefix_checksum) FROM poolkit_sql_history")
    assert row == [("failed", 2, 5, 5, "CREATE TABLE t3 (id INT) oops",
                    "20_data.sql:5: ERROR 1064 (420", 64)]

    # Fixed after line 3 (statement 3 on): the applied prefix is unchanged, so it resumes.
    env.write("20_data.sql", FIVE.replace(b" oops", b""))
    resumed = env.run()
    assert resumed.exit_code == 0, resumed.output
    assert ("resuming sql/20_data.sql at statement 3 (line 5): the 2 statements applied "
            "before it are unchanged") in resumed.output
    assert "applied 20_data.sql: 5 statements" in resumed.output
    assert env.rows("SELECT COUNT(*) FROM t1") == [(1,)]
    assert env.run("--status").output == "[X] applied  20_data.sql\n"


def test_a_failed_file_whose_applied_part_changed_is_refused(env: Env) -> None:
    env.write("20_data.sql", FIVE)
    assert env.run().exit_code == 1
    env.write("20_data.sql", FIVE.replace(b"t2 (id INT)", b"t2 (id BIGINT)").replace(b" oops", b""))
    refused = env.run()
    assert refused.exit_code == 1
    lines = refused.output.strip().splitlines()
    assert lines == ["Error: sql/20_data.sql: failed at line 5 with 2 of 5 statements applied "
                     "and the statements it applied have changed since: restore them and "
                     "rerun to resume, or undo what it applied and re-run it whole with "
                     "--force"]
    query_rows(env.url, "DROP TABLE t1, t2")
    forced = env.run("--force")
    assert forced.exit_code == 0, forced.output
    assert "resuming" not in forced.output
    assert env.rows("SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                    f"'{env.database}' AND TABLE_NAME = 't2'") == [("bigint",)]


def test_an_all_dml_file_runs_as_one_transaction(env: Env) -> None:
    query_rows(env.url, "CREATE TABLE inno (id INT PRIMARY KEY) ENGINE=InnoDB")
    query_rows(env.url, "CREATE TABLE isam (id INT PRIMARY KEY) ENGINE=MyISAM")
    env.write("1.sql", b"INSERT INTO inno VALUES (1);\nUPDATE inno SET id = 2 WHERE id = 1;\n"
                       b"INSERT INTO inno VALUES (2);\nDELETE FROM inno;\n")
    result = env.run()
    assert result.exit_code == 1
    assert "1.sql:3: ERROR 1062 (23000)" in result.output
    assert "1.sql ran as one transaction and was rolled back: none of its 4 statements were " \
           "kept; it is recorded as failed; a rerun runs it whole" in result.output
    assert env.rows("SELECT COUNT(*) FROM inno") == [(0,)]
    assert "(0 of 4 statements applied)" in env.run("--status").output
    # A MyISAM table cannot roll back: statement by statement, the first two stay.
    env.write("1.sql", b"INSERT INTO isam VALUES (1);\nUPDATE isam SET id = 2 WHERE id = 1;\n"
                       b"INSERT INTO isam VALUES (2);\nDELETE FROM isam;\n")
    again = env.run("--force")
    assert "2 of 4 statements of 1.sql were applied and not undone" in again.output
    assert env.rows("SELECT id FROM isam") == [(2,)]


# -- 7. standard input and compressed files ----

def test_stdin(env: Env) -> None:
    result = env.run("-", input=b"CREATE TABLE piped (id INT);\nINSERT INTO piped VALUES (7);\n"
                                 b"SELECT id FROM piped;\n")
    assert result.exit_code == 0, result.output
    assert "id\n7\n" in _stdout(result)
    assert env.rows("SELECT file FROM poolkit_sql_history") == []  # stdin is never recorded
    packed = env.run("-", input=gzip.compress(b"INSERT INTO piped VALUES (8);\n"))
    assert packed.exit_code == 0, packed.output
    assert env.rows("SELECT id FROM piped ORDER BY id") == [(7,), (8,)]
    broken = env.run("-", input=b"INSERT INTO piped VALUES (9);\nBROKEN;\n")
    assert broken.exit_code == 1
    assert "<stdin>:2: ERROR 1064" in broken.output
    assert "standard input is not recorded" in broken.output


@pytest.mark.parametrize(("suffix", "pack"), [(".sql.gz", gzip.compress),
                                              (".sql.bz2", bz2.compress),
                                              (".sql.xz", lzma.compress)])
def test_compressed_files_in_the_sql_dir(env: Env, suffix: str,
                                         pack: t.Callable[[bytes], bytes]) -> None:
    rows = b"".join(b"INSERT INTO z VALUES (%d, '%s');\n" % (i, b"x" * 50) for i in range(2000))
    env.write("1_schema.sql", b"CREATE TABLE z (id INT, v TEXT) ENGINE=MyISAM;\n")
    env.write(f"2_data{suffix}", pack(rows + b"SELECT COUNT(*) AS n FROM z;\n"))
    result = env.run()
    assert result.exit_code == 0, result.output
    assert "n\n2000\n" in _stdout(result)
    assert env.rows("SELECT file, statements FROM poolkit_sql_history ORDER BY file") == [
        ("1_schema.sql", 1), (f"2_data{suffix}", 2001)]
    assert env.run("--status").output.splitlines()[1] == f"[X] applied  2_data{suffix}"


# -- 8. smaller things ----

def test_a_sourced_file_failing_names_that_file_and_where_it_was_sourced(env: Env) -> None:
    (env.folder / "inc").mkdir()
    (env.folder / "inc" / "triggers.sql").write_bytes(b"CREATE TABLE ok1 (id INT);\n\n"
                                                      b"CREATE TABLE broken (id INT) oops;\n")
    env.write("10_main.sql", b"CREATE TABLE first (id INT);\nsource inc/triggers.sql\n"
                             b"CREATE TABLE never (id INT);\n")
    result = env.run()
    assert result.exit_code == 1
    assert ("sql/inc/triggers.sql:3: ERROR 1064 (42000): You have an error in your SQL syntax"
            in result.output)
    assert "(sourced from " in result.output and "10_main.sql:2)" in result.output
    assert "stopped at sql/inc/triggers.sql:3 (sourced from" in result.output
    assert env.run("--status").output.splitlines() == [
        "[!] failed  sql/10_main.sql (at triggers.sql:3) (2 of 4 statements applied)"]


def test_status_and_dry_run_before_the_database_exists(env: Env, tmp_path: Path) -> None:
    base = parse_url(env.url)
    url = f"mysql://{base.user}:{base.password}@{base.host}:{base.port}/{base.database}_absent"
    env.write("1.sql", b"SELECT 1;\n")
    env.write("2.sql", b"SELECT 2;\nSELECT 3;\n")
    made = Env(url, env.folder)
    try:
        status = made.run("--status")
        assert status.exit_code == 0, status.output
        assert status.output.splitlines() == ["[ ] pending  1.sql", "[ ] pending  2.sql"]
        dry = made.run("--dry-run")
        assert dry.exit_code == 0
        assert f"dry run: 2 files, 3 statements to apply; nothing was sent (database " \
               f"'{base.database}_absent' does not exist yet)" in dry.output
    finally:
        made.extension.close()


def test_dry_run_counts_what_a_run_would_apply(env: Env) -> None:
    env.write("1.sql", b"CREATE TABLE one (id INT);\n")
    assert env.run().exit_code == 0
    env.write("2.sql", b"CREATE TABLE two (id INT);\nCREATE TABLE three (id INT);\n")
    dry = env.run("--dry-run")
    assert dry.output.splitlines() == [
        "2.sql  2 statements  56 bytes",
        "dry run: 1 file, 2 statements to apply, 1 already applied; nothing was sent"]


def test_the_create_database_hint_only_for_an_unknown_database(env: Env) -> None:
    base = parse_url(env.url)
    env.write("1.sql", b"SELECT 1;\n")
    login = f"{base.user}:{quote(base.password or '', safe='')}"  # the session's own account
    for url, hinted in ((f"mysql://{login}@{base.host}:{base.port}/{base.database}_nope", True),
                        (f"mysql://nobody:wrong@{base.host}:{base.port}/{base.database}", False),
                        ("mysql://root:@127.0.0.1:9/refused", False)):
        made = Env(url, env.folder)
        try:
            result = made.run()
        finally:
            made.extension.close()
        assert result.exit_code == 1
        assert ("--create-database" in result.output) is hinted, result.output


def test_plurals(env: Env) -> None:
    env.write("1.sql", b"CREATE TABLE p (id INT);\n")
    result = env.run()
    assert "applied 1.sql: 1 statement in" in result.output
    assert "1 file applied, 1 statement in" in result.output
    assert "nothing to apply: 1 file already applied" in env.run().output


def test_a_non_utf8_byte_is_refused_with_its_line(env: Env) -> None:
    env.write("1.sql", b"SELECT 1;\n\nCREATE TABLE caf\xe9 (id INT);\n")
    result = env.run()
    assert result.exit_code == 1
    assert "sql/1.sql:3: is not UTF-8 outside string literals (byte 0xe9)" in result.output


def _random_routines(seed: int, count: int) -> bytes:
    """Procedures whose bodies mix comments, literals that look like comments, and code."""
    import random

    rnd = random.Random(seed)
    gaps = [b"", b" ", b"  ", b"\n", b" \t"]
    comments = [b"-- dash\n", b"--\n", b"# hash\n", b"#\n", b"/* plain */", b"/**/",
                b"/* two\n lines */", b"/* a -- b # c */"]
    code = [*comments, b"/*! 0 + */", b"/*M!100100 0 + */", b"/*!50100 0 + */"]
    values = [b"1", b"'a -- b'", b"'x # y /* z */'", b"\"q\"\"-- r\"", b"1--1", b"2/**/", b"0x1F",
              b"'it\\'s # not'"]
    out = [b"DELIMITER //\n"]
    for n in range(count):
        body = [b"SELECT 1"]
        for _ in range(rnd.randint(1, 8)):
            body += [rnd.choice(gaps), rnd.choice(comments) if rnd.random() < 0.6 else b"",
                     rnd.choice(gaps), b"+", rnd.choice(gaps),
                     rnd.choice(code) if rnd.random() < 0.5 else b"", rnd.choice(gaps),
                     rnd.choice(values)]
        body += [rnd.choice(gaps), b"AS `c -- # ", str(n).encode(), b"`", rnd.choice(gaps)]
        out.append(b"CREATE PROCEDURE r%d()%sBEGIN%s%s;%s%sEND//\n" % (
            n, rnd.choice(gaps) or b" ", rnd.choice(comments), b"".join(body),
            rnd.choice(comments), rnd.choice(gaps)))
    return b"".join(out) + b"DELIMITER ;\n"


@needs_client
@pytest.mark.parametrize("flag", [None, "--comments"])
def test_random_routine_bodies_match_the_client(env: Env, make_database: t.Callable[[], str],
                                                flag: str | None) -> None:
    # A differential check of comment handling: 60 generated routines, each body compared
    # with the body the mariadb client stores for the same file.
    path = env.write("1.sql", _random_routines(11 if flag else 7, 60))
    args = [flag] if flag else []
    result = env.run(*args)
    assert result.exit_code == 0, result.output
    other = parse_url(make_database()).database
    env.client(path, *args, database=other)
    sql = ("SELECT ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
           "WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY 1")
    ours = env.rows(sql)
    assert len(ours) == 60
    assert ours == query_rows(env.url.rsplit("/", 1)[0] + "/" + other, sql)


def test_a_batch_committed_once_fails_keeps_what_the_client_keeps_and_resumes(env: Env) -> None:
    # The INSERTs go in one round trip and one transaction (group commit): the duplicate on
    # line 4 rolls it back, and it is sent again statement by statement, so the two rows
    # before it stay, as with the client; the record and the resume say so.
    data = (b"CREATE TABLE g (id INT PRIMARY KEY) ENGINE=InnoDB;\nINSERT INTO g VALUES (1);\n"
            b"INSERT INTO g VALUES (2);\nINSERT INTO g VALUES (1);\nINSERT INTO g VALUES (3);\n")
    env.write("1.sql", data)
    first = env.run()
    assert first.exit_code == 1
    assert "sql/1.sql:4: ERROR 1062 (23000): Duplicate entry '1'" in first.output
    assert "3 of 5 statements of 1.sql were applied and not undone;" in first.output
    assert env.rows("SELECT COUNT(*) FROM g") == [(2,)]
    assert env.run("--status").output == "[!] failed  sql/1.sql:4 (3 of 5 statements applied)\n"
    env.write("1.sql", data.replace(b"VALUES (1);\nINSERT INTO g VALUES (3)",
                                    b"VALUES (4);\nINSERT INTO g VALUES (3)"))
    again = env.run()
    assert again.exit_code == 0, again.output
    assert ("resuming sql/1.sql at statement 4 (line 4): the 3 statements applied before it are "
            "unchanged") in again.output
    assert env.rows("SELECT id FROM g ORDER BY id") == [(1,), (2,), (3,), (4,)]
