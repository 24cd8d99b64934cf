"""``source`` reads only inside the folder of the files applied: ``..``, absolute paths, ``~``
and symlinks that leave it are refused with file:line, unless sources_anywhere() allows it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from poolkit.errors import SqlFileError
from poolkit.sqlimport.split import sources_anywhere, split_file

from .conftest import FLASK, Project
from .test_initdb_bounded import app_database, flask_env

__all__ = ["app_database"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """sql/ (the folder applied, with inc/ inside) next to a secret file outside it."""
    (tmp_path / "secret.sql").write_bytes(b"SELECT 'outside';\n")
    sql = tmp_path / "sql"
    (sql / "inc").mkdir(parents=True)
    (sql / "inc" / "part.sql").write_bytes(b"SELECT 'part';\nsource ../common.sql\n")
    (sql / "common.sql").write_bytes(b"SELECT 'common';\n")
    return sql


def _refused(main: Path, text: bytes) -> str:
    main.write_bytes(b"SELECT 1;\n\n" + text + b"\n")
    with pytest.raises(SqlFileError) as caught:
        list(split_file(main))
    return str(caught.value)


def test_dotdot_out_is_refused(tree: Path) -> None:
    message = _refused(tree / "main.sql", b"source ../secret.sql")
    assert message == (f"{tree}/main.sql:3: source ../secret.sql: '..' leaves the folder of "
                       f"the files applied ({tree}); move the file into it (or allow it with "
                       "--allow-source-outside)")


def test_absolute_path_out_is_refused(tree: Path) -> None:
    target = tree.parent / "secret.sql"
    message = _refused(tree / "main.sql", b"\\. " + str(target).encode())
    assert message.startswith(f"{tree}/main.sql:3: source {target}: an absolute path outside "
                              "the folder of the files applied")


def test_home_is_refused(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tree.parent))
    message = _refused(tree / "main.sql", b"source ~/secret.sql")
    assert message.startswith(f"{tree}/main.sql:3: source ~/secret.sql: '~' is outside")


def test_symlink_out_is_refused(tree: Path) -> None:
    (tree / "inc" / "link.sql").symlink_to(tree.parent / "secret.sql")
    message = _refused(tree / "main.sql", b"source inc/link.sql;")
    assert message.startswith(f"{tree}/main.sql:3: source inc/link.sql: a symlink to "
                              f"{tree.parent / 'secret.sql'}, outside the folder")


def test_inside_the_folder_is_read(tree: Path) -> None:
    (tree / "inc" / "link.sql").symlink_to(tree / "common.sql")
    main = tree / "main.sql"
    main.write_bytes(b"source inc/part.sql\nsource inc/link.sql\nsource "
                     + str(tree / "common.sql").encode() + b"\n")
    texts = [stmt.sql for stmt in split_file(main)]
    assert texts == [b"SELECT 'part'", b"SELECT 'common'", b"SELECT 'common'",
                     b"SELECT 'common'"]


def test_sources_anywhere_allows_it(tree: Path) -> None:
    main = tree / "main.sql"
    main.write_bytes(b"source ../secret.sql\n")
    with sources_anywhere():
        assert [stmt.sql for stmt in split_file(main)] == [b"SELECT 'outside'"]
    with pytest.raises(SqlFileError):
        list(split_file(main))


@pytest.mark.server
def test_flask_initdb_refuses_with_one_line(project: Project, app_database: str) -> None:
    (project.root / "secret.sql").write_text("CREATE TABLE leaked (v INT);\n")
    (project.root / "sql" / "002_inc.sql").write_text("SELECT 1;\nsource ../secret.sql\n")
    result = subprocess.run([FLASK, "initdb", "-q"], cwd=project.root,
                            env=flask_env(app_database), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and \
        "002_inc.sql:2: source ../secret.sql: '..' leaves the folder" in lines[0], lines
