"""An app command's transaction under every way it can stop, run as ``flask --app app x``.

A real ``flask`` process on a real database: the row the command inserted is there exactly
when its exit status is 0, whether it returned, called ``ctx.exit`` or ``sys.exit``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

import pymysql
import pytest

from poolkit.url import parse_url

FLASK = str(Path(sys.executable).with_name("flask"))
APP = """
    from flask import Flask
    from poolkit import Poolkit

    app = Flask(__name__)
    Poolkit(app)
"""
COMMAND = """
    import sys

    import click

    from poolkit import db


    @click.command()
    @click.argument("how")
    @click.argument("code")
    @click.pass_context
    def add_item(ctx, how, code):
        db.execute("INSERT INTO item (how) VALUES (%s)", (f"{how} {code}",))
        value = None if code == "none" else code if code.startswith("msg") else int(code)
        if how == "sys":
            sys.exit(value)
        if how == "ctx":
            ctx.exit(value)
"""


def _count(url: str, how: str) -> int:
    parsed = parse_url(url)
    conn = pymysql.connect(host=parsed.host, port=parsed.port, user=parsed.user,
                           password=parsed.password or "", database=parsed.database)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM item WHERE how = %s", (how,))
            row = cursor.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, make_database: t.Any) -> tuple[Path, str]:
    url = make_database()
    parsed = parse_url(url)
    conn = pymysql.connect(host=parsed.host, port=parsed.port, user=parsed.user,
                           password=parsed.password or "", database=parsed.database)
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE item (id INT AUTO_INCREMENT PRIMARY KEY, how TEXT)")
    conn.close()
    root = tmp_path_factory.mktemp("app-commands")
    (root / "app.py").write_text(textwrap.dedent(APP))
    (root / "commands").mkdir()
    (root / "commands" / "add_item.py").write_text(textwrap.dedent(COMMAND))
    return root, url


@pytest.mark.parametrize(("how", "code", "status"), [
    ("return", "0", 0),
    ("ctx", "0", 0), ("ctx", "3", 3),
    ("sys", "0", 0), ("sys", "none", 0), ("sys", "1", 1), ("sys", "3", 3),
    ("sys", "msg-failed", 1),  # sys.exit("text") prints the text and exits 1
])
def test_the_row_is_committed_exactly_when_the_exit_status_is_0(
        project: tuple[Path, str], how: str, code: str, status: int) -> None:
    root, url = project
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "POOLKIT_"))}
    env["POOLKIT_DATABASE_URL"] = url
    done = subprocess.run([FLASK, "--app", "app", "add-item", how, code], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    assert _count(url, f"{how} {code}") == (1 if status == 0 else 0)
