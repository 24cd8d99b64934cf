"""``flask initdb`` end to end on the real server: history, errors at file:line, lock, options."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
from click.testing import Result
from conftest import InitdbEnv, query_rows
from flask import Flask

from poolkit import Poolkit
from poolkit.commands.initdb import initdb_command
from poolkit.sqlimport.history import run_lock_name
from poolkit.testing.plugin import admin_connect
from poolkit.url import parse_url

SCHEMA = b"CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20));\n"
SEED = b"INSERT INTO t VALUES (1, 'a;b'), (2, '100%');\nINSERT INTO t VALUES (3, 'c');\n"


Env = InitdbEnv




@pytest.fixture
def env(make_database: t.Callable[[], str], tmp_path: Path) -> t.Iterator[Env]:
    folder = tmp_path / "sql"
    folder.mkdir()
    made = Env(make_database(), folder)
    yield made
    made.extension.close()


def _out(result: Result) -> str:
    return result.output  # stdout and stderr, as a terminal shows them


def test_applies_in_natural_order_and_records_history(env: Env) -> None:
    env.write("10_seed.sql", SEED)
    env.write("2_schema.sql", SCHEMA)
    result = env.run()
    assert result.exit_code == 0, _out(result)
    assert "2 files applied, 3 statements" in result.output
    assert env.rows("SELECT id, name FROM t ORDER BY id") == [(1, "a;b"), (2, "100%"), (3, "c")]
    history = env.rows("SELECT file, statements, LENGTH(checksum) FROM poolkit_sql_history "
                       "ORDER BY applied_at")
    assert history == [("2_schema.sql", 1, 64), ("10_seed.sql", 2, 64)]
    again = env.run()
    assert again.exit_code == 0
    assert "nothing to apply: 2 files already applied" in again.output
    assert env.rows("SELECT COUNT(*) FROM t") == [(3,)]


def test_status_and_exit_code(env: Env) -> None:
    env.write("1_schema.sql", SCHEMA)
    assert env.run(str(env.folder / "1_schema.sql")).exit_code == 0
    env.write("2_seed.sql", SEED)
    result = env.run("--status")
    assert result.exit_code == 0
    assert result.output.splitlines() == ["[X] applied  1_schema.sql", "[ ] pending  2_seed.sql"]
    assert env.run("--status", "--exit-code").exit_code == 1
    env.write("1_schema.sql", SCHEMA + b"-- edited\n")
    assert "[!] changed  1_schema.sql" in env.run("--status").output
    env.write("1_schema.sql", SCHEMA)
    assert env.run().exit_code == 0
    assert env.run("--status", "--exit-code").exit_code == 0


def test_changed_file_is_an_error_unless_forced(env: Env) -> None:
    env.write("1_schema.sql", SCHEMA)
    assert env.run().exit_code == 0
    env.write("1_schema.sql", b"-- changed\nCREATE TABLE IF NOT EXISTS t (id INT);\n")
    result = env.run()
    assert result.exit_code == 1
    assert "1_schema.sql: changed since it was applied" in _out(result)
    assert "--force" in _out(result)
    forced = env.run("--force")
    assert forced.exit_code == 0, _out(forced)
    assert "[X] applied  1_schema.sql" in env.run("--status").output


def test_broken_file_reports_file_line_and_stops(env: Env) -> None:
    env.write("1_schema.sql", SCHEMA)
    env.write("2_data.sql", b"-- data\nINSERT INTO t VALUES (1, 'x');\n\nINSERT INTO t\n"
                            b"VALUES (2, 'y')\nWHERE oops;\nINSERT INTO t VALUES (3, 'z');\n")
    env.write("3_more.sql", b"INSERT INTO t VALUES (4, 'w');\n")
    result = env.run()
    assert result.exit_code == 1
    text = _out(result)
    # the statement starts on line 4, the server says "at line 3" of it: line 6
    assert "2_data.sql:6: ERROR 1064 (42000): You have an error in your SQL syntax" in text
    assert "WHERE oops" in text  # the excerpt
    # all DML on an InnoDB table: one transaction, undone entirely
    assert "2_data.sql ran as one transaction and was rolled back" in text
    assert "1 file applied before it stays recorded" in text
    assert env.rows("SELECT file, status, statements FROM poolkit_sql_history ORDER BY file") \
        == [("1_schema.sql", "applied", 1), ("2_data.sql", "failed", 0)]
    assert env.rows("SELECT id FROM t ORDER BY id") == []  # and 3_more.sql never ran


def test_error_without_line_uses_the_statement_line(env: Env) -> None:
    env.write("1.sql", b"SELECT 1;\n\n  SELECT * FROM no_such_table;\n")
    text = _out(env.run())
    assert "1.sql:3: ERROR 1146 (42S02): Table" in text


def test_continue_on_error_goes_on_and_exits_1_with_a_count(env: Env) -> None:
    env.write("1_schema.sql", SCHEMA)
    env.write("2_data.sql", b"INSERT INTO t VALUES (1, 'x');\nINSERT INTO t VALUES (1, 'dup');\n"
                            b"INSERT INTO t VALUES (2, 'y');\nBROKEN;\n")
    env.write("3_more.sql", b"INSERT INTO t VALUES (3, 'z');\n")
    result = env.run("--continue-on-error")
    assert result.exit_code == 1
    text = _out(result)
    assert "2_data.sql:2: ERROR 1062 (23000)" in text
    assert "2_data.sql:4: ERROR 1064 (42000)" in text
    assert "2 statements failed in 1 file (" in text
    assert env.rows("SELECT id FROM t ORDER BY id") == [(1,), (2,), (3,)]
    assert sorted(env.rows("SELECT file, status FROM poolkit_sql_history")) == [
        ("1_schema.sql", "applied"), ("2_data.sql", "failed"), ("3_more.sql", "applied")]


def test_dry_run_touches_nothing(env: Env) -> None:
    env.write("1_schema.sql", SCHEMA)
    env.write("2_seed.sql", SEED)
    result = env.run("--dry-run")
    assert result.exit_code == 0
    assert "1_schema.sql  1 statement  " in result.output
    assert "2_seed.sql  2 statements" in result.output
    assert "dry run: 2 files, 3 statements to apply; nothing was sent" in result.output
    assert env.rows("SHOW TABLES") == []


@pytest.mark.parametrize(("setup", "message"), [
    (lambda f: None, "no .sql files in this folder"),
    (lambda f: (f / "x.sql").mkdir(), "x.sql: is a folder"),
    (lambda f: (f / "1.sql").write_bytes(b""), "1.sql: is empty (0 bytes)"),
    (lambda f: (f / "1.sql").write_bytes(b"\x28\xb5\x2f\xfd\x00"), "zstd-compressed"),
    (lambda f: (f / "1.sql").write_bytes(b"SELECT 1;\x00\x01\x02"), "is not SQL text"),
    (lambda f: (f / "1.sql").write_bytes("SELECT 1;".encode("utf-16")), "UTF-16"),
])
def test_bad_folders_and_files_fail_before_anything_runs(
        env: Env, setup: t.Callable[[Path], object], message: str) -> None:
    if "no .sql" not in message:
        env.write("0_ok.sql", SCHEMA)
    setup(env.folder)
    result = env.run()
    assert result.exit_code == 1
    assert message in _out(result)
    assert len(_out(result).strip().splitlines()) == 1
    assert env.rows("SHOW TABLES") == []


def test_binary_bytes_inside_literals_are_fine(env: Env) -> None:
    env.write("1.sql", b"CREATE TABLE b (v BLOB);\n"
                       b"INSERT INTO b VALUES (_binary '\x00\xff\xfe\\'%s;');\n")
    assert env.run().exit_code == 0
    assert env.rows("SELECT HEX(v) FROM b") == [("00FFFE2725733B",)]


def test_missing_folder(env: Env, tmp_path: Path) -> None:
    result = env.run("--sql-dir", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "nope: no such folder" in _out(result)


def test_lock_held_elsewhere_fails_clearly(env: Env) -> None:
    env.write("1.sql", SCHEMA)
    url = parse_url(env.url)
    holder = admin_connect(url)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 1)", (run_lock_name(holder, url.database),))
        result = env.run("--lock-timeout", "0.5")
    finally:
        holder.close()
    assert result.exit_code == 1
    assert "another initdb run holds the lock" in _out(result)
    assert env.rows("SHOW TABLES LIKE 't'") == []
    assert env.run().exit_code == 0  # released with the holder's session


def test_two_concurrent_runs_do_not_interleave(env: Env, tmp_path: Path) -> None:
    env.write("1_slow.sql", b"CREATE TABLE log (n INT AUTO_INCREMENT PRIMARY KEY, who INT);\n"
                            b"INSERT INTO log (who) VALUES (CONNECTION_ID());\n"
                            b"DO SLEEP(1);\n"
                            b"INSERT INTO log (who) VALUES (CONNECTION_ID());\n")
    # Two processes, as two deploys would be (CliRunner swaps sys.stdout: not for threads).
    # The app reads POOLKIT_DATABASE_URL from the environment; sql/ lies beside it.
    (tmp_path / "initdb_app.py").write_text(
        "from flask import Flask\nfrom poolkit import Poolkit\n\n"
        "app = Flask(__name__)\nPoolkit(app)\n")
    environ = {**os.environ, "POOLKIT_DATABASE_URL": env.url,
               "PYTHONPATH": str(tmp_path)}
    flask = str(Path(sys.executable).with_name("flask"))
    runs = [subprocess.Popen([flask, "--app", "initdb_app", "initdb", "--lock-timeout", "30"],
                             env=environ, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = []
    for run in runs:
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0, out
        outputs.append(out)
    assert sum("1 file applied, 4 statements" in out for out in outputs) == 1, outputs
    assert sum("nothing to apply" in out for out in outputs) == 1, outputs
    who = [row[0] for row in env.rows("SELECT who FROM log ORDER BY n")]
    assert len(who) == 2 and who[0] == who[1]  # one run did the whole file
    assert env.rows("SELECT COUNT(*) FROM poolkit_sql_history") == [(1,)]


def test_create_database(make_database: t.Callable[[], str], tmp_path: Path) -> None:
    base = parse_url(make_database())
    name = base.database + "_new"
    url = f"mysql://{base.user}:{base.password}@{base.host}:{base.port}/{name}"
    (tmp_path / "1.sql").write_bytes(SCHEMA)
    made = Env(url, tmp_path)
    try:
        missing = made.run()
        assert missing.exit_code == 1
        assert "--create-database" in _out(missing)
        result = made.run("--create-database")
        assert result.exit_code == 0, _out(result)
        assert f"created database '{name}'" in result.output
        assert made.rows("SELECT file FROM poolkit_sql_history") == [("1.sql",)]
    finally:
        made.extension.close()
        admin = admin_connect(base)
        try:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()


def test_verbose_and_quiet(env: Env) -> None:
    env.write("1.sql", SCHEMA + SEED)
    verbose = env.run("-v")
    assert verbose.exit_code == 0
    assert "1.sql:1: CREATE TABLE t" in verbose.output
    assert " ms)" in verbose.output
    env.write("2.sql", b"SELECT 1;\n")
    assert env.run("-q").output == ""


def test_password_never_printed(make_database: t.Callable[[], str], tmp_path: Path) -> None:
    base = parse_url(make_database())
    url = f"mysql://nobody_here:s3cret-pw@{base.host}:{base.port}/{base.database}"
    (tmp_path / "1.sql").write_bytes(SCHEMA)
    made = Env(url, tmp_path)
    try:
        result = made.run()
    finally:
        made.extension.close()
    assert result.exit_code == 1
    assert "s3cret-pw" not in _out(result)
    assert "cannot connect to mysql://nobody_here:***@" in _out(result)


def test_wait_gives_up_after_the_deadline(tmp_path: Path) -> None:
    (tmp_path / "1.sql").write_bytes(SCHEMA)
    made = Env("mysql://root:@127.0.0.1:9/nothing_listens", tmp_path)  # port 9: refused
    try:
        started = time.monotonic()
        result = made.run("--wait", "1.2")
        waited = time.monotonic() - started
    finally:
        made.extension.close()
    assert result.exit_code == 1
    assert "cannot connect to mysql://root@127.0.0.1:9/nothing_listens" in result.output
    assert 0.9 <= waited < 10


def test_database_option_picks_a_named_pool(env: Env, make_database: t.Callable[[], str],
                                            tmp_path: Path) -> None:
    reports = make_database()
    app = Flask("poolkit_initdb_binds")
    app.config.update(POOLKIT_DATABASE_URL=env.url, POOLKIT_SQL_DIR=str(env.folder),
                      POOLKIT_BINDS={"reports": {"DATABASE_URL": reports}})
    extension = Poolkit(app)
    env.write("1.sql", SCHEMA)
    try:
        runner = app.test_cli_runner()
        unknown = runner.invoke(initdb_command, ["--database", "nope"])
        assert unknown.exit_code == 1
        assert "no pool named 'nope'" in unknown.output
        result = runner.invoke(initdb_command, ["--database", "reports"])
        assert result.exit_code == 0, result.output
    finally:
        extension.close()
    assert env.rows("SHOW TABLES") == []
    assert query_rows(reports, "SHOW TABLES") == [("poolkit_sql_history",), ("t",)]
