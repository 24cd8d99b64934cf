"""Scenario 7 (and the sql/ cases of 8): ``flask initdb`` when the connection dies mid-file,
and bad files in ``sql/``.

Figures: the error line of the interrupted run, whether the file was recorded (assertion:
no), whether a re-run finishes the job (assertion: yes); one error line per bad file.
And a real ``flask initdb`` process interrupted with Ctrl-C (SIGINT): exit code, time to stop,
history (the interrupted file not recorded), the lock released.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
from flask import Flask

from poolkit.commands.initdb import initdb_command
from poolkit.sqlimport.history import run_lock_name
from poolkit.testing.faultproxy import FaultProxy
from poolkit.testing.plugin import admin_connect
from poolkit.url import parse_url

pytestmark = pytest.mark.faults


def query_count(url: str, sql: str) -> int:
    con = admin_connect(parse_url(url))
    try:
        with con.cursor() as cur:
            cur.execute(sql)
            return int(cur.fetchone()[0])
    finally:
        con.close()


def history_names(admin: t.Any) -> list[str]:
    with admin.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'poolkit_sql_history'")
        if not cur.fetchone():
            return []
        cur.execute("SELECT * FROM poolkit_sql_history")
        return [str(row) for row in cur.fetchall()]


def test_connection_cut_mid_file_is_not_recorded_and_a_rerun_finishes(
        fault_app: t.Callable[..., Flask], proxy: FaultProxy, proxied_url: str,
        admin: t.Any, tmp_path: Path) -> None:
    with admin.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS fault_initdb")
    lines = ["CREATE TABLE IF NOT EXISTS fault_initdb (id INT PRIMARY KEY);"]
    lines += [f"INSERT IGNORE INTO fault_initdb VALUES ({n});" for n in range(1, 6)]
    lines += ["DO SLEEP(0.5);"]  # line 7: the cut comes while this runs
    lines += [f"INSERT IGNORE INTO fault_initdb VALUES ({n});" for n in range(6, 11)]
    (tmp_path / "50_fault.sql").write_text("\n".join(lines) + "\n")
    app = fault_app(POOLKIT_DATABASE_URL=proxied_url, POOLKIT_SQL_DIR=str(tmp_path))
    runner = app.test_cli_runner()
    timer = threading.Timer(0.25, proxy.cut)
    timer.start()
    try:
        first = runner.invoke(initdb_command, [])
    finally:
        timer.join(5.0)
    print(f"\n[scenario 7] cut mid-file: exit {first.exit_code}: {first.output.strip()}")
    assert first.exit_code != 0
    assert "50_fault.sql" in first.output and ":7" in first.output, first.output
    assert not any("50_fault.sql" in row for row in history_names(admin))
    started = time.monotonic()
    second = runner.invoke(initdb_command, [])
    print(f"[scenario 7] re-run: exit {second.exit_code} in {time.monotonic() - started:.2f} s")
    assert second.exit_code == 0, second.output
    assert any("50_fault.sql" in row for row in history_names(admin))
    with admin.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM fault_initdb")
        assert cur.fetchone()[0] == 10
        cur.execute("DROP TABLE fault_initdb")


@pytest.mark.parametrize("kind", ["binary", "not-utf8", "empty", "directory"])
def test_bad_file_in_sql_dir_is_one_clear_line(fault_app: t.Callable[..., Flask],
                                               admin: t.Any, tmp_path: Path,
                                               kind: str) -> None:
    (tmp_path / "10_ok.sql").write_text(
        "CREATE TABLE IF NOT EXISTS fault_enc (name VARCHAR(20)) CHARACTER SET utf8mb4;\n")
    bad = tmp_path / "20_bad.sql"
    if kind == "binary":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    elif kind == "not-utf8":  # Latin-1 where SQL text must be: an identifier
        bad.write_bytes("CREATE TABLE fault_café (name VARCHAR(20));\n".encode("latin-1"))
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        bad.mkdir()
    before = history_names(admin)
    app = fault_app(POOLKIT_SQL_DIR=str(tmp_path))
    result = app.test_cli_runner().invoke(initdb_command, [])
    lines = [line for line in result.output.splitlines() if line.strip()]
    print(f"\n[scenario 8 sql {kind}] exit {result.exit_code}: {result.output.strip()}")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert len(lines) == 1 and "20_bad.sql" in lines[0], result.output
    assert history_names(admin) == before, "a file was recorded although the run stopped"


def test_latin1_bytes_inside_a_literal_reach_the_server(fault_app: t.Callable[..., Flask],
                                                         admin: t.Any, tmp_path: Path) -> None:
    # Literals may hold any bytes (BLOBs in dumps), so they are sent unchanged, as the mysql
    # client does; the server, not poolkit, judges them against the connection's charset.
    (tmp_path / "10_ok.sql").write_text(
        "CREATE TABLE IF NOT EXISTS fault_enc (name VARCHAR(20)) CHARACTER SET utf8mb4;\n")
    (tmp_path / "20_bad.sql").write_bytes(
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES';\n"
        "INSERT INTO fault_enc VALUES ('café');\n".encode("latin-1"))
    before = history_names(admin)
    app = fault_app(POOLKIT_SQL_DIR=str(tmp_path))
    result = app.test_cli_runner().invoke(initdb_command, [])
    print(f"\n[scenario 8 sql latin-1 literal] exit {result.exit_code}: {result.output.strip()}")
    assert result.exit_code == 1
    assert "20_bad.sql:2: ERROR 1366" in result.output
    assert "Traceback" not in result.output
    added = [row for row in history_names(admin) if row not in before]
    assert [row.split("'")[1] for row in added] == ["10_ok.sql", "20_bad.sql"], added
    with admin.cursor() as cur:  # 20_bad is recorded as failed, after its 1 statement (SET)
        cur.execute("SELECT status, statements, failed_line FROM poolkit_sql_history "
                    "WHERE file = '20_bad.sql'")
        assert cur.fetchall() == (("failed", 1, 2),)
    with admin.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM fault_enc")
        assert cur.fetchone()[0] == 0
        cur.execute("DROP TABLE fault_enc")


def test_ctrl_c_mid_file_leaves_history_consistent_and_releases_the_lock(
        make_database: t.Callable[[], str], tmp_path: Path) -> None:
    # Scenario 7b: a real `flask initdb` process gets SIGINT (Ctrl-C) while a file runs.
    url = make_database()
    database = parse_url(url).database
    (tmp_path / "10_first.sql").write_text("CREATE TABLE first_done (id INT);\n")
    (tmp_path / "20_slow.sql").write_text(
        "CREATE TABLE slow_rows (id INT);\n"
        + "".join(f"INSERT INTO slow_rows VALUES ({i});\nDO SLEEP(3);\n" for i in range(10)))
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, POOLKIT_DATABASE_URL=url, PYTHONWARNINGS="ignore")
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "examples.app", "initdb", "-v",
         "--sql-dir", str(tmp_path)], cwd=root,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    admin = admin_connect(parse_url(url))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until 20_slow.sql is under way
            with admin.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.TABLES "
                            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'slow_rows'", (database,))
                if cur.fetchone()[0]:
                    break
            time.sleep(0.05)
        time.sleep(0.5)
        interrupted_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
        stopped_after = time.monotonic() - interrupted_at
        with admin.cursor() as cur:
            cur.execute("SELECT file, status, statements, failed_line FROM poolkit_sql_history "
                        "ORDER BY file")
            recorded = [tuple(row) for row in cur.fetchall()]
            cur.execute("SELECT COUNT(*) FROM slow_rows")
            rows = cur.fetchone()[0]
        # initdb sends KILL QUERY on Ctrl-C (as the mysql client does), so the server ends the
        # running DO SLEEP(3) at once and frees the lock with the session: poll, bounded.
        lock_free = 0
        while not lock_free and time.monotonic() - interrupted_at < 5:
            with admin.cursor() as cur:
                cur.execute("SELECT IS_FREE_LOCK(%s)", (run_lock_name(admin, database),))
                lock_free = cur.fetchone()[0]
            if not lock_free:
                time.sleep(0.02)
        released_after = time.monotonic() - interrupted_at
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        admin.close()
    print(f"\n[scenario 7] Ctrl-C: exit {process.returncode} after {stopped_after:.2f} s, "
          f"recorded {recorded}, {rows} of 10 rows left (autocommit import), lock free "
          f"{lock_free} {released_after:.2f} s after SIGINT; "
          f"stderr: {err.strip().splitlines()[-1:]}")
    assert process.returncode != 0
    assert stopped_after < 5
    # The interrupted file is recorded as failed, with exactly what ran: the KILL QUERY ends
    # the running DO SLEEP(3), which then returns normally (SLEEP() answers 1 when killed).
    assert recorded == [("10_first.sql", "applied", 1, None),
                        ("20_slow.sql", "failed", 3, 4)], recorded
    assert rows == 1  # what ran stays: the import runs in autocommit, like the client
    assert lock_free == 1
    assert released_after < 1.5  # not after the 3 s statement: it was killed
    assert "Traceback" not in err

    flask = [sys.executable, "-m", "flask", "--app", "examples.app", "initdb",
             "--sql-dir", str(tmp_path)]
    shown = subprocess.run([*flask, "--status"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=60)
    assert "[X] applied  10_first.sql" in shown.stdout, shown.stdout
    assert f"[!] failed  {tmp_path / '20_slow.sql'}:4 (3 of 21 statements applied)" \
        in shown.stdout, shown.stdout
    # The part after the stop is edited (faster), the applied part is not: the rerun resumes.
    (tmp_path / "20_slow.sql").write_text(
        "CREATE TABLE slow_rows (id INT);\nINSERT INTO slow_rows VALUES (0);\nDO SLEEP(3);\n"
        + "".join(f"INSERT INTO slow_rows VALUES ({i});\n" for i in range(1, 10)))
    rerun = subprocess.run(flask, cwd=root, env=env, capture_output=True, text=True, timeout=60)
    print(f"[scenario 7] rerun: exit {rerun.returncode}: {rerun.stdout.strip()}")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming {tmp_path / '20_slow.sql'} at statement 4 (line 4): the 3 statements " \
           "applied before it are unchanged" in rerun.stdout
    assert query_count(url, "SELECT COUNT(*) FROM slow_rows") == 10
