"""``flask initdb --jobs``: parallel loads on the real server, compared with serial loads.

A fresh ``mariadb-dump --routines --triggers --events`` of a database the test builds (foreign
keys, triggers, views, a procedure, a function, an event, several INSERTs per table) is loaded
serially and with ``--jobs 3`` into two databases; every table's CHECKSUM TABLE and every
object's SHOW CREATE must be equal. Then a barrier, a failing unit, a lost worker connection
and Ctrl-C in a real ``flask initdb`` process.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
from click.testing import Result
from conftest import query_rows
from flask import Flask

from poolkit import Poolkit
from poolkit.commands.initdb import initdb_command
from poolkit.sqlimport.files import check_file
from poolkit.sqlimport.parallel import Loader
from poolkit.sqlimport.session import enable_multi_statements
from poolkit.testing.plugin import admin_connect
from poolkit.url import DatabaseURL, parse_url

needs_dump = pytest.mark.skipif(shutil.which("mariadb-dump") is None,
                                reason="mariadb-dump is not installed")
PRELUDE = ("/*!40101 SET NAMES utf8mb4 */;\n/*!40014 SET @OLD_FOREIGN_KEY_CHECKS="
           "@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n")

SOURCE = """
CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB;
CREATE TABLE child (id INT PRIMARY KEY AUTO_INCREMENT, pid INT, note TEXT,
  FOREIGN KEY (pid) REFERENCES parent(id)) ENGINE=InnoDB;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(100));
CREATE TABLE heap (a INT, b VARCHAR(30)) ENGINE=InnoDB;
CREATE TABLE blobs (id INT PRIMARY KEY, data BLOB);
CREATE TRIGGER child_ai AFTER INSERT ON child FOR EACH ROW
  INSERT INTO audit(msg) VALUES (CONCAT('child ', NEW.id));
CREATE TRIGGER parent_bu BEFORE UPDATE ON parent FOR EACH ROW SET NEW.name = UPPER(NEW.name);
CREATE VIEW v_child AS SELECT c.id, p.name FROM child c JOIN parent p ON p.id = c.pid;
CREATE VIEW v_count AS SELECT COUNT(*) AS n FROM v_child;
CREATE PROCEDURE p1(IN x INT) BEGIN SELECT x + 1; END;
CREATE FUNCTION f1(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
CREATE EVENT e1 ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit WHERE id < 0;
"""


class Env:
    """An app on a fresh database, and its CLI."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.server = parse_url(url)
        self.app = Flask("poolkit_parallel_test")
        self.app.config.update(POOLKIT_DATABASE_URL=url, POOLKIT_MAX_CONNECTIONS=6)
        self.extension = Poolkit(self.app)

    def run(self, *args: str) -> Result:
        return self.app.test_cli_runner().invoke(initdb_command, list(args))

    def rows(self, sql: str) -> list[tuple[t.Any, ...]]:
        return query_rows(self.url, sql)


@pytest.fixture
def make_env(make_database: t.Callable[[], str]) -> t.Iterator[t.Callable[[], Env]]:
    made: list[Env] = []

    def factory() -> Env:
        env = Env(make_database())
        made.append(env)
        return env

    yield factory
    for env in made:
        env.extension.close()


def _run_sql(url: DatabaseURL, script: str) -> None:
    con = admin_connect(url, client_flag=1 << 16)  # CLIENT.MULTI_STATEMENTS
    try:
        with con.cursor() as cur:
            cur.execute(script)
            while cur.nextset():
                pass
    finally:
        con.close()


def _client_args(url: DatabaseURL) -> list[str]:
    args = [f"--host={url.host}", f"--port={url.port}", f"--user={url.user}"]
    return [*args, f"--password={url.password}"] if url.password else args


def _fill(url: DatabaseURL) -> None:
    """The source database: schema, triggers, views, routines, an event, ~3,000 rows."""
    statements = [s for s in re.split(r";\n(?=CREATE|$)", SOURCE.strip()) if s.strip()]
    con = admin_connect(url)
    try:
        with con.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
            cur.executemany("INSERT INTO parent VALUES (%s, %s)",
                            [(i, f"parent {i} 'q' \\ ;") for i in range(1, 601)])
            cur.executemany("INSERT INTO child (pid, note) VALUES (%s, %s)",
                            [(i % 600 + 1, "note " * (i % 7)) for i in range(1500)])
            cur.executemany("INSERT INTO heap VALUES (%s, %s)",
                            [(i % 50, f"h{i}") for i in range(800)])
            cur.executemany("INSERT INTO blobs VALUES (%s, %s)",
                            [(i, bytes(range(256)) * (i % 5)) for i in range(100)])
            cur.execute("UPDATE parent SET name = name WHERE id <= 10")
    finally:
        con.close()


def _objects(env: Env) -> dict[str, t.Any]:
    """CHECKSUM TABLE of every table and SHOW CREATE of every other object, database names
    taken out."""
    name = env.server.database
    found: dict[str, t.Any] = {}
    for (table, kind) in env.rows(f"SELECT TABLE_NAME, TABLE_TYPE FROM information_schema."
                                  f"TABLES WHERE TABLE_SCHEMA = '{name}' ORDER BY 1"):
        if table == "poolkit_sql_history":
            continue
        if kind == "VIEW":
            found[f"view {table}"] = env.rows(f"SHOW CREATE VIEW `{table}`")[0][1]
        else:
            found[f"table {table}"] = env.rows(f"CHECKSUM TABLE `{table}`")[0][1]
            found[f"rows {table}"] = env.rows(f"SELECT COUNT(*) FROM `{table}`")[0][0]
    for (trigger,) in env.rows(f"SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                               f"WHERE TRIGGER_SCHEMA = '{name}' ORDER BY 1"):
        found[f"trigger {trigger}"] = env.rows(f"SHOW CREATE TRIGGER `{trigger}`")[0][2]
    for (routine, kind) in env.rows(f"SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema"
                                    f".ROUTINES WHERE ROUTINE_SCHEMA = '{name}' ORDER BY 1"):
        found[f"{kind} {routine}"] = env.rows(f"SHOW CREATE {kind} `{routine}`")[0][2]
    for (event,) in env.rows(f"SELECT EVENT_NAME FROM information_schema.EVENTS "
                             f"WHERE EVENT_SCHEMA = '{name}' ORDER BY 1"):
        found[f"event {event}"] = env.rows(f"SHOW CREATE EVENT `{event}`")[0][3]
    return {key: value.replace(name, "DB") if isinstance(value, str) else value
            for key, value in found.items()}


@needs_dump
def test_parallel_load_of_a_fresh_dump_equals_a_serial_load(
        make_env: t.Callable[[], Env], tmp_path: Path) -> None:
    source, serial, parallel = make_env(), make_env(), make_env()
    _fill(source.server)
    dump = tmp_path / "dump.sql"
    with open(dump, "wb") as out:  # small packets: several INSERTs per table
        subprocess.run(["mariadb-dump", *_client_args(source.server), "--routines",
                        "--triggers", "--events", "--net-buffer-length=4096",
                        source.server.database], stdout=out, check=True, timeout=120)
    text = dump.read_bytes()
    assert text.count(b"INSERT INTO `child`") > 3
    assert b"CREATE*/ /*!50017 DEFINER" in text and b"FUNCTION `f1`" in text

    result = serial.run(str(dump))
    assert result.exit_code == 0, result.output
    counted = re.findall(r"(\d+) statements", result.output)
    result = parallel.run("--jobs", "3", str(dump))
    assert result.exit_code == 0, result.output
    assert re.findall(r"(\d+) statements", result.output) == counted  # the same statements ran

    expected = _objects(source)
    assert _objects(serial) == expected
    got = _objects(parallel)
    assert got == expected
    assert got["rows child"] == 1500 and got["rows audit"] == 1500
    assert {"PROCEDURE p1", "FUNCTION f1", "event e1", "view v_count",
            "trigger child_ai", "trigger parent_bu"} <= set(got)


def _dump_like(*tables: tuple[str, int], between: str = "") -> str:
    """A dump-shaped file: prelude, then per table DROP/CREATE/LOCK/INSERTs/UNLOCK."""
    parts = [PRELUDE]
    for number, (name, rows) in enumerate(tables):
        if number == 1 and between:
            parts.append(between)
        parts.append(f"DROP TABLE IF EXISTS `{name}`;\nCREATE TABLE `{name}` (id INT PRIMARY "
                     f"KEY, v VARCHAR(20)) ENGINE=InnoDB;\nLOCK TABLES `{name}` WRITE;\n")
        parts.extend(f"INSERT INTO `{name}` VALUES ({i},'r{i}');\n" for i in range(rows))
        parts.append("UNLOCK TABLES;\n")
    return "".join(parts)


def _broken(text: str, line: str, replacement: str, path: Path) -> tuple[list[str], int, Path]:
    """*text* with *line* replaced, written to *path*: (its lines, the 0-based index, path)."""
    lines = text.splitlines()
    bad = lines.index(line)
    lines[bad] = replacement
    path.write_text("\n".join(lines) + "\n")
    return lines, bad, path


def test_a_statement_the_planner_does_not_know_waits_for_everything_before_it(
        make_env: t.Callable[[], Env], tmp_path: Path) -> None:
    env = make_env()
    barrier = ("CREATE TABLE summary AS SELECT COUNT(*) AS n, SUM(id) AS s FROM first;\n"
               "INSERT INTO summary SELECT COUNT(*), 0 FROM information_schema.TABLES WHERE "
               "TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('second', 'third');\n")
    path = tmp_path / "barrier.sql"
    path.write_text(_dump_like(("first", 1500), ("second", 400), ("third", 50),
                               between=barrier))
    result = env.run("--jobs", "3", str(path))
    assert result.exit_code == 0, result.output
    # Every row of `first` was in before the barrier ran, and the later tables not begun.
    assert env.rows("SELECT n, s FROM summary ORDER BY n DESC") == [
        (1500, sum(range(1500))), (0, 0)]
    assert env.rows("SELECT COUNT(*) FROM second")[0][0] == 400


def test_a_failing_unit_reports_its_line_and_how_many_statements_ran(
        make_env: t.Callable[[], Env], tmp_path: Path) -> None:
    env = make_env()
    text = _dump_like(("one", 30), ("two", 5), between="CREATE TABLE marker (id INT);\n")
    lines, bad, path = _broken(text, "INSERT INTO `two` VALUES (2,'r2');",
                               "INSERT INTO `two` VALUES (1,'duplicate');", tmp_path / "fails.sql")
    result = env.run("--jobs", "2", str(path))
    assert result.exit_code == 1
    # 2 prelude + 34 of `one` + the barrier + DROP, CREATE, LOCK and two INSERTs of `two`
    assert f"fails.sql:{bad + 1}: ERROR 1062 (23000): Duplicate entry '1'" in result.output
    assert "42 statements ran" in result.output
    first = lines.index("DROP TABLE IF EXISTS `two`;") + 1
    assert f"fails.sql:{first} (every statement before it ran)" in result.output
    assert env.rows("SELECT COUNT(*) FROM two")[0][0] == 2
    # Recorded as failed, applied up to the start of `two` (37 statements): a rerun of the
    # fixed file resumes there, and `two` is dropped and loaded again, whole.
    assert env.rows("SELECT status, statements, failed_line FROM poolkit_sql_history") == [
        ("failed", 37, bad + 1)]
    lines[bad] = "INSERT INTO `two` VALUES (2,'r2');"
    path.write_text("\n".join(lines) + "\n")
    result = env.run("--jobs", "2", str(path))
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "at statement 38" in result.output
    assert env.rows("SELECT COUNT(*), SUM(id) FROM two") == [(5, 10)]
    assert env.rows("SELECT COUNT(*) FROM one")[0][0] == 30
    assert env.rows("SELECT status FROM poolkit_sql_history") == [("applied",)]


def _sleeping_dump(seconds: int) -> str:
    """Two tables whose second INSERT sleeps (a trigger does: a row with a function would
    wait for everything before it): both connections are busy for *seconds*."""
    parts = [PRELUDE]
    for name in ("slow_a", "slow_b"):
        parts.append(f"DROP TABLE IF EXISTS `{name}`;\nCREATE TABLE `{name}` (id INT PRIMARY "
                     f"KEY, v INT) ENGINE=InnoDB;\n"
                     f"CREATE TRIGGER `{name}_bi` BEFORE INSERT ON `{name}` FOR EACH ROW "
                     f"SET NEW.v = NEW.v + SLEEP(IF(NEW.id = 2, NEW.v, 0));\n"
                     f"INSERT INTO `{name}` VALUES (1, 1);\n"
                     f"INSERT INTO `{name}` VALUES (2, {seconds});\n"
                     f"INSERT INTO `{name}` VALUES (3, 3);\n")
    return "".join(parts)


def _sleepers(admin: t.Any, marker: str) -> list[int]:
    with admin.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE %s "
                    "AND ID <> CONNECTION_ID()", (f"%{marker}%",))
        return [row[0] for row in cur.fetchall()]


def test_a_lost_worker_connection_fails_the_run_with_its_statement(
        make_env: t.Callable[[], Env], tmp_path: Path) -> None:
    env = make_env()
    path = tmp_path / "lost.sql"
    path.write_text(_sleeping_dump(30))
    raws = [admin_connect(env.server) for _ in range(2)]
    for raw in raws:
        enable_multi_statements(raw)
    admin = admin_connect(env.server)
    killer = admin_connect(env.server)
    outcome: dict[str, t.Any] = {}

    def kill(raw: t.Any) -> None:
        with killer.cursor() as cur:
            cur.execute(f"KILL QUERY {raw.thread_id()}")

    def load() -> None:
        outcome["result"] = Loader(raws, kill=kill).load(check_file(path))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(_sleepers(admin, "VALUES (2, 30)")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        victims = _sleepers(admin, "VALUES (2, 30)")
        assert len(victims) == 2
        with admin.cursor() as cur:
            cur.execute(f"KILL CONNECTION {victims[0]}")
        thread.join(25)
        assert not thread.is_alive()
    finally:
        with admin.cursor() as cur:
            for victim in _sleepers(admin, "VALUES (2, 30)"):
                cur.execute(f"KILL QUERY {victim}")
        admin.close()
        killer.close()
        for raw in raws:
            raw.close()
    result = outcome["result"]
    assert not result.ok
    error = result.errors[0]
    assert error.code in {2013, 2006} and b"VALUES (2, 30)" in error.statement.sql
    assert error.line in {7, 13}  # the second INSERT of either table
    assert result.resume is not None and result.resume.sql.startswith(b"DROP TABLE")


def test_ctrl_c_stops_every_worker_and_exits_130(
        make_database: t.Callable[[], str], tmp_path: Path) -> None:
    url = make_database()
    path = tmp_path / "slow.sql"
    path.write_text(_sleeping_dump(40))
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, POOLKIT_DATABASE_URL=url, PYTHONWARNINGS="ignore")
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "examples.app", "initdb", "--jobs", "2",
         str(path)], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    admin = admin_connect(parse_url(url))
    try:
        deadline = time.monotonic() + 30
        while len(_sleepers(admin, "VALUES (2, 40)")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_sleepers(admin, "VALUES (2, 40)")) == 2, process.stderr
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        stopped_after = time.monotonic() - interrupted
        left = _sleepers(admin, "VALUES (2, 40)")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        admin.close()
    assert process.returncode == 130, err
    assert stopped_after < 10
    assert left == []  # KILL QUERY reached both connections
    assert "slow.sql: parallel load: every connection stopped; 10 statements ran; a rerun " \
        "resumes at " in err
    # Progress is recorded: the 2 statements before the first unfinished table.
    assert query_rows(url, "SELECT status, statements FROM poolkit_sql_history") == [
        ("failed", 2)]


def test_a_dump_that_creates_its_database_loads_into_it(
        make_env: t.Callable[[], Env], make_database: t.Callable[[], str],
        tmp_path: Path) -> None:
    # mysqldump --databases: DROP DATABASE, CREATE DATABASE, USE, then the tables. The USE
    # must wait for the CREATE (a barrier) on every connection.
    other = parse_url(make_database()).database
    path = tmp_path / "databases.sql"
    path.write_text(PRELUDE + f"/*!40000 DROP DATABASE IF EXISTS `{other}`*/;\n"
                    f"CREATE DATABASE `{other}`;\nUSE `{other}`;\n"
                    + _dump_like(("a", 300), ("b", 300), ("c", 300))[len(PRELUDE):])
    for _ in range(3):  # the race it guards against does not show every time
        env = make_env()
        result = env.run("--jobs", "2", str(path))
        assert result.exit_code == 0, result.output
        assert env.rows(f"SELECT COUNT(*) FROM `{other}`.a UNION ALL SELECT COUNT(*) FROM "
                        f"`{other}`.c") == [(300,), (300,)]


def test_rows_that_would_wait_for_a_bulk_insert_lock_stay_on_one_connection(
        make_env: t.Callable[[], Env], tmp_path: Path) -> None:
    # world.sql's shape: unique and foreign key checks off, set autocommit=0, single-row
    # INSERTs, commit. MariaDB loads the empty table in bulk under a table lock held until the
    # COMMIT, so a second connection's INSERTs into it would only wait (lock wait timeout 1 s
    # here): the rows stay with the unit's connection (the worker threads that ran them say
    # which).
    from poolkit.sqlimport.parallel import bulk_insert_locks

    env = make_env()
    rows = "".join(f"INSERT INTO `bulk` VALUES ({i},0);\n" for i in range(600))
    ran_on: set[str] = set()

    def on_statement(stmt: t.Any, seconds: float) -> None:
        if stmt.sql.startswith(b"INSERT"):
            ran_on.add(threading.current_thread().name)
    path = tmp_path / "bulk.sql"
    path.write_text("/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n"
                    + PRELUDE + "SET innodb_lock_wait_timeout=1;\n"
                    "DROP TABLE IF EXISTS `bulk`;\nCREATE TABLE `bulk` (`id` int NOT NULL, "
                    "`conn` bigint, PRIMARY KEY (`id`)) ENGINE=InnoDB;\nset autocommit=0;\n"
                    + rows + "commit;\n")
    raws = [admin_connect(env.server) for _ in range(2)]
    try:
        for raw in raws:
            enable_multi_statements(raw)
        # rows jobs of ~100 bytes: several jobs, free for the taking by either connection
        result = Loader(raws, rows_job_bytes=100, on_statement=on_statement).load(
            check_file(path))
    finally:
        for raw in raws:
            raw.close()
    assert result.ok, result.errors
    assert result.jobs > 100
    assert env.rows("SELECT COUNT(*) FROM bulk") == [(600,)]
    assert len(ran_on) == 1, ran_on
    off = (("autocommit", "0"), ("foreign_key_checks", "0"), ("unique_checks", "0"))
    assert bulk_insert_locks(off)
    assert not bulk_insert_locks(off[1:])  # autocommit on: each INSERT commits
    assert not bulk_insert_locks((("autocommit", "0"), ("foreign_key_checks", "0")))


def test_a_failing_row_among_coalesced_rows_is_found_exactly_in_parallel(
        make_env: t.Callable[[], Env], tmp_path: Path) -> None:
    # One-row INSERTs travel as multi-row INSERTs; the one that fails is sent again row by
    # row, so the error names one row's own line and the count is exact. The rows are spread
    # over both connections in no order, so of the two rows with id 17 either may be the one
    # the server refuses.
    env = make_env()
    text = _dump_like(("wide", 3000))  # one table: every statement that ran is its
    lines, bad, path = _broken(text, "INSERT INTO `wide` VALUES (1700,'r1700');",
                               "INSERT INTO `wide` VALUES (17,'duplicate');", tmp_path / "rows.sql")
    first = lines.index("INSERT INTO `wide` VALUES (17,'r17');")
    result = env.run("--jobs", "2", str(path))
    assert result.exit_code == 1
    shown = re.search(r"rows\.sql:(\d+): ERROR 1062 \(23000\): Duplicate entry '17'",
                      result.output)
    assert shown is not None, result.output
    assert int(shown.group(1)) in (first + 1, bad + 1)
    ran = int(re.search(r"(\d+) statements ran", result.output).group(1))  # type: ignore
    # every row counted as run is in the table (2 prelude, DROP, CREATE, LOCK before them)
    assert env.rows("SELECT COUNT(*) FROM wide") == [(ran - 5,)]
    assert 0 < ran - 5 <= 3000 - 1
    assert env.rows("SELECT COUNT(*) FROM wide WHERE id = 17") == [(1,)]
