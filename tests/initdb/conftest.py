"""The twin fixture: one file loaded by the ``mariadb`` client and by ``flask initdb``."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from click.testing import Result

from .twin import (
    Initdb,
    Outcome,
    client_load,
    differences,
    has_client,
    initdb_process,
    snapshot,
)


class Twin:
    """Two fresh databases: ``client`` loads files with ``mariadb``, ``initdb`` with poolkit."""

    def __init__(self, make_database: t.Callable[[], str], folder: Path) -> None:
        self.client_url = make_database()
        self.initdb_url = make_database()
        self.folder = folder
        self.loader = Initdb(self.initdb_url, folder / "sql")
        self.loaders = [self.loader]

    def write(self, sql: bytes, name: str = "1.sql") -> Path:
        path = self.loader.folder / name
        path.write_bytes(sql)
        return path

    def client(self, path: Path | None = None) -> Outcome:
        return client_load(self.client_url, path or self.loader.folder / "1.sql")

    def initdb(self, *args: str) -> Result:
        return self.loader.run(*args)

    def process(self, *args: str, timeout: float = 60.0) -> Outcome:
        """``flask initdb ARGS`` in a process of its own, stopped after *timeout* s."""
        return initdb_process(self.initdb_url, self.loader.folder, *args, timeout=timeout)

    def on_client_db(self, sql: str) -> None:
        """Run *sql* on both databases before the loads (a table that already exists …)."""
        from .twin import rows
        for url in (self.client_url, self.initdb_url):
            for part in sql.split(";\n"):
                if part.strip():
                    rows(url, part)

    def differences(self) -> list[str]:
        return differences(snapshot(self.client_url), snapshot(self.initdb_url))

    def close(self) -> None:
        for loader in self.loaders:
            loader.close()


@pytest.fixture
def twin(make_database: t.Callable[[], str], tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Twin]:
    if not has_client():
        pytest.fail("the mariadb client is not installed (apt-get install mariadb-client)")
    monkeypatch.chdir(tmp_path)
    made = Twin(make_database, tmp_path)
    yield made
    made.close()
