"""The wheel holds one top-level package, ``poolkit``, and installs as a user installs it.

The wheel is built from a copy of the checkout (an in-tree build would write build/ and
*.egg-info into it) and installed into a fresh virtualenv that borrows this environment's
packages, so the test needs no network and takes seconds.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import textwrap
import typing as t
import zipfile
from pathlib import Path

import pytest

from poolkit.testing import full_url

REPO = Path(__file__).resolve().parents[1]
BUILT_INS = ("initdb", "pool_stress", "pool_status", "dbshell")


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the checkout, built as ``pip wheel --no-deps .`` builds it."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "*.png"))
    isolation: list[str] = []
    setuptools = importlib.metadata.version("setuptools")
    if int(setuptools.split(".")[0]) >= 77:  # the dev extra's backend: build offline
        isolation = ["--no-build-isolation", "--no-index"]
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
         "-w", root / "dist", source)
    (built,) = (root / "dist").glob("poolkit-*.whl")
    return built


def test_the_wheel_holds_only_poolkit(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    version = wheel.name.split("-")[1]
    assert {n.split("/")[0] for n in names} == {"poolkit", f"poolkit-{version}.dist-info"}
    for module in ("__init__", "_cli", *BUILT_INS):
        assert f"poolkit/commands/{module}.py" in names
    for package in ("pool", "sqlimport", "stress", "testing"):
        assert f"poolkit/{package}/__init__.py" in names
    assert "poolkit/py.typed" in names
    assert not [n for n in names if "/tests/" in n or n.startswith(("commands/", "examples/"))]


def test_every_entry_point_names_a_module_in_the_wheel(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    version = wheel.name.split("-")[1]
    text = archive.read(f"poolkit-{version}.dist-info/entry_points.txt").decode()
    entries = {}
    group = ""
    for line in text.splitlines():
        if line.startswith("["):
            group = line.strip("[]")
        elif "=" in line:
            name, _, value = (part.strip() for part in line.partition("="))
            entries[(group, name)] = value
    flask_commands = {name for group, name in entries if group == "flask.commands"}
    assert flask_commands == {"initdb", "pool-stress", "pool-status", "dbshell"}
    for value in entries.values():
        path = value.partition(":")[0].replace(".", "/")
        assert f"{path}.py" in archive.namelist() or f"{path}/__init__.py" in archive.namelist()


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; flask & co. come from this environment."""
    target = tmp_path_factory.mktemp("venv") / "v"
    _run(sys.executable, "-m", "venv", "--without-pip", target)
    python = target / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    ours = {_run(sys.executable, "-c", f"import sysconfig; print(sysconfig.get_paths()[{k!r}])")
            .strip() for k in ("purelib", "platlib")}
    # Plain path lines: this environment's .pth files (the editable poolkit) are not run.
    Path(purelib.strip(), "_borrowed.pth").write_text("\n".join(sorted(ours)) + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index",
         "--no-deps", wheel)
    return target


def test_the_installed_wheel_imports_the_built_in_commands(venv: Path, tmp_path: Path) -> None:
    python = venv / "bin" / "python"
    shown = _run(python, "-c", "import poolkit.commands.initdb as m, poolkit.commands as c; "
                 "print(m.__file__); print(m.initdb_command.name); print(c.__file__)",
                 cwd=tmp_path)
    initdb_file, name, package_file = shown.split()
    assert initdb_file.startswith(str(venv)) and package_file.startswith(str(venv))
    assert name == "initdb"


@pytest.mark.parametrize("as_package", [True, False], ids=["package", "plain folder"])
def test_a_users_commands_folder_is_the_users(venv: Path, tmp_path: Path,
                                              as_package: bool) -> None:
    project = tmp_path / "proj"
    (project / "commands").mkdir(parents=True)
    if as_package:
        (project / "commands" / "__init__.py").write_text("")
    (project / "commands" / "_util.py").write_text("WHERE = 'the project'\n")
    (project / "commands" / "hello.py").write_text(textwrap.dedent("""
        import click
        from commands._util import WHERE

        @click.command()
        def hello():
            click.echo(f"hello from {WHERE}")
    """))
    (project / "app.py").write_text(
        "from flask import Flask\nfrom poolkit import Poolkit\n\napp = Flask(__name__)\n"
        "app.config['POOLKIT_DATABASE_URL'] = 'mysql://u@127.0.0.1/x'\nPoolkit(app)\n")
    python = venv / "bin" / "python"
    found = _run(python, "-c", "import commands; print(list(commands.__path__)[0])", cwd=project)
    assert Path(found.strip()) == project / "commands"
    assert _run(python, "-m", "flask", "hello", cwd=project) == "hello from the project\n"
    shown = _run(python, "-m", "flask", "initdb", "--help", cwd=project)
    assert "--sql-dir" in shown


FLASKR = REPO / "examples" / "flaskr"


def test_a_tutorial_app_passes_its_own_tests_on_the_installed_wheel(
        venv: Path, tmp_path: Path, poolkit_server: t.Any) -> None:
    """examples/flaskr, copied away from the checkout, tested with the wheel's poolkit only.

    Its init-db command runs through ``app.test_cli_runner()``, its schema through
    ``executefile``, its test data through ``executescript``, and it catches
    ``poolkit.IntegrityError``: all public names (checked below), no import of the checkout.
    """
    app = tmp_path / "flaskr"
    shutil.copytree(FLASKR, app, ignore=shutil.ignore_patterns("__pycache__", ".*_cache"))
    sources = "\n".join(p.read_text() for p in app.rglob("*.py"))
    assert "_get_current_object" not in sources
    assert not re.search(r"from poolkit(\.\w+)*\._|import poolkit\.\w*\._|poolkit\.\w+\._",
                         sources)
    assert re.search(r"from poolkit import .*IntegrityError", sources)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("POOLKIT_", "PYTEST_"))}
    environ.update(POOLKIT_TEST_DATABASE_URL=full_url(poolkit_server), POOLKIT_TEST_REQUIRE_DB="1")
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "-W", "error"], cwd=app, env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in [\d.]+s", summary), done.stdout  # nothing skipped
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import poolkit; print(poolkit.__file__)"],
        cwd=app, env=environ, capture_output=True, text=True, timeout=60, check=True)
    assert where.stdout.startswith(str(venv))
