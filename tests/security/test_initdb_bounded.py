"""A compressed statement bigger than the server's max_allowed_packet is refused with file:line
before it is held in memory: the 1 GiB-statement gzip bomb runs `flask initdb` in < 100 MB."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import typing as t
import uuid
from pathlib import Path

import pymysql
import pytest

from poolkit.errors import SqlFileError
from poolkit.sqlimport.split import limit_statements, split_bytes, split_file
from poolkit.url import parse_url

from .conftest import FLASK, Project

GIB = 1 << 30
# Runs a command and prints the peak RSS (KiB) of that one child: the wrapper has no other.
_PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
         "sys.exit(r.returncode)")


@pytest.fixture
def app_database() -> t.Iterator[str]:
    """The URL of a fresh database on the test server, dropped afterwards."""
    base = os.environ.get("POOLKIT_TEST_DATABASE_URL")
    if not base:
        pytest.skip("POOLKIT_TEST_DATABASE_URL is not set")
    url = parse_url(base)
    name = f"sec_bomb_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=url.host, port=url.port, user=url.user,
                            password=url.password or "", autocommit=True)
    try:
        admin.cursor().execute(f"CREATE DATABASE `{name}`")
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def flask_env(url: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("FLASK_", "POOLKIT_", "MYSQL"))}
    environ.update(POOLKIT_DATABASE_URL=url, FLASK_APP="app")
    return environ


def write_bomb(path: Path, size: int = GIB) -> None:
    """One INSERT whose string literal is *size* bytes, gzip-compressed, written streaming."""
    chunk = b"a" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b"CREATE TABLE bomb (v LONGTEXT);\n\nINSERT INTO bomb VALUES ('")
        for _ in range(size // len(chunk)):
            out.write(chunk)
        out.write(b"');\n")


@pytest.mark.server
def test_gzip_bomb_is_refused_with_file_line_in_bounded_memory(
        project: Project, app_database: str) -> None:
    bomb = project.root / "sql" / "002_bomb.sql.gz"
    write_bomb(bomb)
    assert bomb.stat().st_size < 2 << 20  # about 1 MB on disk
    result = subprocess.run([sys.executable, "-c", _PEAK, FLASK, "initdb", "-q"],
                            cwd=project.root, env=flask_env(app_database),
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    peak_kib = int(lines[-1])
    errors = [line for line in lines[:-1] if line]
    print(f"peak RSS of flask initdb on the 1 GiB-statement bomb: {peak_kib / 1024:.1f} MiB")
    assert result.returncode == 1, result.stderr
    assert len(errors) == 1, errors
    assert errors[0].startswith("Error: ") and "002_bomb.sql.gz:3: statement larger than the " \
        "server's max_allowed_packet" in errors[0], errors
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"


def test_limit_refuses_at_the_statement_line_and_passes_smaller_ones(tmp_path: Path) -> None:
    path = tmp_path / "big.sql"
    path.write_bytes(b"SELECT 1;\n-- note\nINSERT INTO t VALUES ('" + b"x" * 5000 + b"');\n")
    with limit_statements(10_000):
        assert len(list(split_file(path, chunk_size=64))) == 2
    with limit_statements(4096), pytest.raises(SqlFileError) as caught:
        list(split_file(path, chunk_size=64))
    assert str(caught.value).startswith(f"{path}:3: statement larger than the server's "
                                        "max_allowed_packet (4096 bytes)")
    # Outside the block the ceiling is the server's maximum again.
    assert len(split_bytes(path.read_bytes(), chunk_size=64)) == 2
