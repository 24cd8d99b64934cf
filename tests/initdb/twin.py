"""Load one SQL file with the ``mariadb`` client and with ``flask initdb`` into fresh
databases, and describe each database so that two of them compare equal exactly when they
hold the same tables, rows, counters, sequences and routines."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import typing as t
from dataclasses import dataclass
from pathlib import Path

from click.testing import Result
from flask import Flask

from poolkit import Poolkit
from poolkit.commands.initdb import initdb_command
from poolkit.testing.plugin import admin_connect
from poolkit.url import parse_url

HISTORY = "poolkit_sql_history"
#: A load that takes longer than this is a difference (a hang).
LOAD_TIMEOUT = 60.0


@dataclass
class Outcome:
    """How a load ended: its exit code and what it printed."""

    code: int
    output: str


def client_load(url: str, path: Path, timeout: float = LOAD_TIMEOUT) -> Outcome:
    """``mariadb db < path`` (batch mode); a run over *timeout* is exit code -9."""
    parsed = parse_url(url)
    command = ["mariadb", f"--host={parsed.host}", f"--port={parsed.port}",
               f"--user={parsed.user}", parsed.database]
    if parsed.password:
        command.insert(4, f"--password={parsed.password}")
    with open(path, "rb") as stdin:
        try:
            done = subprocess.run(command, stdin=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Outcome(-9, "timed out")
    return Outcome(done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace"))


def has_client() -> bool:
    return shutil.which("mariadb") is not None


class Initdb:
    """``flask initdb`` of one app on the database of *url*, reading the files of *folder*."""

    def __init__(self, url: str, folder: Path, **config: t.Any) -> None:
        self.url = url
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.app = Flask("poolkit_twin")
        self.app.config.update(POOLKIT_DATABASE_URL=url, POOLKIT_SQL_DIR=str(folder), **config)
        self.extension = Poolkit(self.app)

    def run(self, *args: str) -> Result:
        return self.app.test_cli_runner().invoke(initdb_command, list(args))

    def close(self) -> None:
        self.extension.close()


def rows(url: str, sql: str, args: t.Sequence[t.Any] | None = None) -> list[tuple[t.Any, ...]]:
    con = admin_connect(parse_url(url))
    try:
        with con.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        con.close()


def snapshot(url: str) -> dict[str, t.Any]:
    """Every table (SHOW CREATE with its AUTO_INCREMENT, a digest of its rows in key order),
    sequence (its state) and routine or trigger of the database, history left out."""
    database = parse_url(url).database
    con = admin_connect(parse_url(url))
    out: dict[str, t.Any] = {}
    try:
        with con.cursor() as cur:
            cur.execute("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME", (database,))
            for name, kind in cur.fetchall():
                if name == HISTORY:
                    continue
                quoted = "`" + name.replace("`", "``") + "`"
                cur.execute(f"SHOW CREATE TABLE {quoted}")
                create = cur.fetchone()[1]
                if kind == "VIEW":
                    out[f"view {name}"] = create
                    continue
                if kind == "SEQUENCE":
                    cur.execute(f"SELECT * FROM {quoted}")
                    out[f"sequence {name}"] = (create, cur.fetchall())
                    continue
                cur.execute(f"SELECT * FROM {quoted}")
                count = len(cur.description or ())
                order = ", ".join(str(i) for i in range(1, count + 1))
                cur.execute(f"SELECT * FROM {quoted} ORDER BY {order}")
                digest = hashlib.sha256(repr(cur.fetchall()).encode()).hexdigest()
                cur.execute(f"SELECT COUNT(*) FROM {quoted}")
                out[f"table {name}"] = (create, cur.fetchone()[0], digest)
            cur.execute("SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION FROM "
                        "information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s", (database,))
            for kind, name, body in cur.fetchall():
                out[f"{kind.lower()} {name}"] = body
            cur.execute("SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT FROM "
                        "information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s", (database,))
            for name, table, body in cur.fetchall():
                out[f"trigger {name}"] = (table, body)
    finally:
        con.close()
    return out


def differences(left: dict[str, t.Any], right: dict[str, t.Any]) -> list[str]:
    """What differs between two snapshots, one line per object."""
    lines = []
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            lines.append(f"{key}: client {left.get(key)!r} / initdb {right.get(key)!r}")
    return lines


_APP = ("from flask import Flask\nfrom poolkit import Poolkit\n\n"
        "app = Flask(__name__)\napp.config.from_prefixed_env('POOLKIT', loads=str)\n"
        "app.config.update({'POOLKIT_' + k: v for k, v in list(app.config.items())\n"
        "                   if k in ('DATABASE_URL', 'SQL_DIR')})\nPoolkit(app)\n")


def initdb_process(url: str, folder: Path, *args: str,
                   timeout: float = LOAD_TIMEOUT) -> Outcome:
    """A real ``flask initdb ARGS`` process on *url* reading *folder*; a run over *timeout*
    is stopped and reported as exit code -9 (a hang is a difference)."""
    import os
    import sys
    app = folder.parent / "twin_app.py"
    app.write_text(_APP)
    env = {**os.environ, "POOLKIT_DATABASE_URL": url, "POOLKIT_SQL_DIR": str(folder),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(folder.parent),
                                                       os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "flask", "--app", "twin_app", "initdb", *args]
    try:
        done = subprocess.run(command, env=env, cwd=folder.parent, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome(-9, "timed out")
    return Outcome(done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace"))
