"""Fixtures for the security suite: test certificates and a project folder for `flask` runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from poolkit.testing.fakemysql import Certificates, make_certificates

FLASK = str(Path(sys.executable).with_name("flask"))
APP = """
    from flask import Flask
    from poolkit import Poolkit

    app = Flask(__name__)
    Poolkit(app)
"""


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate it signed for 127.0.0.1, and a self-signed one."""
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def wrong_host_certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a certificate it signed for another host (db.example), not 127.0.0.1."""
    return make_certificates(tmp_path_factory.mktemp("certs-other"), hosts=("db.example",))


class Project:
    """A folder with app.py (and sql/) where `flask <command>` runs with a URL."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "app.py").write_text(textwrap.dedent(APP))
        (root / "sql").mkdir(exist_ok=True)
        (root / "sql" / "001_schema.sql").write_text("CREATE TABLE t (id INT);\n")

    def run(self, url: str, *args: str, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("FLASK_", "POOLKIT_", "MYSQL"))}
        environ.update(POOLKIT_DATABASE_URL=url, FLASK_APP="app", **env)
        return subprocess.run([FLASK, *args], cwd=self.root, env=environ,
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "proj")
