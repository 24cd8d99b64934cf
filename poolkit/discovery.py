"""Django-style command discovery: every ``commands/*.py`` of the app becomes ``flask <name>``.

The folder (``commands/`` beside the app, or ``POOLKIT_COMMANDS_DIRS``) is imported as a package
named after it, whether or not it has an ``__init__.py``, so its modules import the helpers beside
them either way: ``from ._util import x`` or ``from commands._util import x``. Modules whose name
starts with ``_`` are helpers, not commands. One file is one command, named after the file
(``nightly_cleanup.py`` → ``flask nightly-cleanup``), as in Django's ``management/commands``.

A command runs in the app context, and its work on ``db`` is one transaction: committed when
the command returns (or exits with status 0), rolled back when it fails. A database or poolkit
error it does not handle is one line, ``Error: commands/cleanup.py: 1146 Table 'shop.session'
doesn't exist``, exit status 1; ``--traceback`` (added to every app command, as in Django)
prints the stack first. Other exceptions are bugs and keep their traceback.

:func:`register_commands` puts poolkit's built-ins on ``app.cli`` too (where Flask's test
runner looks), under the same rule as the ``flask`` entry points: one command per name, and
the app's own command of a name wins over the built-in.

Nothing is imported at ``init_app``: each file becomes a :class:`LazyCommand` that imports its
module when the command is listed or run, so web workers do not pay for the CLI and a module that
fails to import is reported, by file name, only by its own command; the others keep working.
"""

from __future__ import annotations

import filecmp
import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import keyword
import logging
import re
import site
import sys
import sysconfig
import traceback
import typing as t
import weakref
from functools import cached_property, lru_cache
from pathlib import Path

import click
from flask import Flask, current_app

from .app_commands import run_as_app_command
from .errors import ConfigError

logger = logging.getLogger("poolkit")

#: Flask's own commands: FlaskGroup resolves them before any app command, so a file of that
#: name can never run through ``flask`` (only through ``app.cli``).
FLASK_COMMANDS = frozenset({"run", "shell", "routes"})

#: Set on the packages this module creates: the folder they stand for.
_MARK = "__poolkit_commands_folder__"


class LazyCommand(click.Command):
    """A command whose real :class:`click.Command` is made on first use (listing counts).

    Every method click calls on a subcommand is forwarded; ``make_context`` returns the real
    command's context, so click invokes the real command from there on.
    """

    def __init__(self, name: str, load: t.Callable[[], click.Command],
                 app: Flask | None = None) -> None:
        super().__init__(name)
        self._load = load
        self._app = weakref.ref(app) if app is not None else None

    @cached_property
    def command(self) -> click.Command:
        """The real command (imported now if it was not yet)."""
        return self._load()

    @property
    def hidden(self) -> bool:
        return self.target(click.get_current_context(silent=True)).hidden

    @hidden.setter
    def hidden(self, value: bool) -> None:  # click.Command.__init__ assigns it
        pass

    def target(self, parent: click.Context | None) -> click.Command:
        """The command that runs when this one is invoked below *parent*."""
        return self.command

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: t.Any) -> click.Context:
        command = self.target(parent)
        app = self._app() if self._app is not None else None
        if parent is not None and app is not None and not _is_current(app):
            # Like FlaskGroup does for app commands: the command runs inside an app context.
            parent.with_resource(app.app_context())
        return command.make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> t.Any:
        return self.target(ctx).invoke(ctx)

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.target(click.get_current_context(silent=True)).get_short_help_str(limit)

    def get_usage(self, ctx: click.Context) -> str:
        return self.target(ctx).get_usage(ctx)

    def get_help(self, ctx: click.Context) -> str:
        return self.target(ctx).get_help(ctx)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return self.target(ctx).get_params(ctx)

    def to_info_dict(self, ctx: click.Context) -> dict[str, t.Any]:
        return self.target(ctx).to_info_dict(ctx)


def _is_current(app: Flask) -> bool:
    return bool(current_app) and current_app._get_current_object() is app  # type: ignore[attr-defined]


def shown_path(path: Path) -> str:
    """*path* relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class CommandsFolder:
    """One folder of command modules, imported as the package :attr:`package`."""

    def __init__(self, path: Path, package: str) -> None:
        self.path = path
        self.package = package

    def files(self) -> list[Path]:
        """The command modules (``_``-prefixed helpers excluded), sorted by name."""
        return sorted(p for p in self.path.glob("*.py") if not p.name.startswith("_"))

    def ensure_package(self) -> None:
        """Make ``sys.modules[package]`` the package of this folder (it may be already)."""
        existing = sys.modules.get(self.package)
        if existing is not None and _serves(existing, self.path):
            return
        if existing is not None and getattr(existing, _MARK, None) is None:
            # A foreign module took the name since init_app: keep it, use a private name.
            self.package = _private_name(self.path)
            existing = sys.modules.get(self.package)
            if existing is not None and _serves(existing, self.path):
                return
        # Another app's folder of the same name (tests build many apps in one process):
        # the folder being used now takes the name, with a fresh set of submodules.
        for name in [n for n in sys.modules
                     if n == self.package or n.startswith(self.package + ".")]:
            del sys.modules[name]
        init = self.path / "__init__.py"
        if init.is_file():
            spec = importlib.util.spec_from_file_location(
                self.package, init, submodule_search_locations=[str(self.path)])
        else:  # a plain folder works like a namespace package of one folder
            spec = importlib.machinery.ModuleSpec(self.package, None, is_package=True)
            spec.submodule_search_locations = [str(self.path)]
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        setattr(module, _MARK, str(self.path))
        importlib.invalidate_caches()  # files written a moment ago must be found
        sys.modules[self.package] = module
        try:
            if spec.loader is not None:
                spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[self.package]
            raise

    def load(self, path: Path, name: str, note: str) -> click.Command:
        """The command *path* defines, or one that reports why it cannot be loaded."""
        try:
            self.ensure_package()
            module = importlib.import_module(f"{self.package}.{path.stem}")
        except Exception as error:
            return _broken_command(name, path, error)
        try:
            command = _module_command(module, path)
        except LookupError as error:
            return _broken_command(name, path, error)
        if getattr(command, "_poolkit_source", None) is None:
            source = f"Defined in {shown_path(path)}{note}."
            command.epilog = f"{command.epilog}\n\n{source}" if command.epilog else source
            command._poolkit_source = str(path)  # type: ignore[attr-defined]
            run_as_app_command(command, shown_path(path))
        return command


def _serves(module: t.Any, folder: Path) -> bool:
    paths = getattr(module, "__path__", None) or ()
    return any(Path(p).resolve() == folder for p in paths)


def _private_name(folder: Path) -> str:
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    return f"_poolkit_commands_{digest}"


def _module_command(module: t.Any, path: Path) -> click.Command:
    """The module's one top-level click command (subcommands of its groups do not count)."""
    own = [obj for obj in vars(module).values() if isinstance(obj, click.Command)
           and getattr(obj.callback, "__module__", module.__name__) == module.__name__]
    nested = {id(sub) for obj in own if isinstance(obj, click.Group)
              for sub in obj.commands.values()}
    top = [obj for obj in own if id(obj) not in nested]
    if len(top) > 1:
        named = [c for c in top if c.name in (path.stem, path.stem.replace("_", "-"))]
        if len(named) == 1:
            return named[0]
        names = ", ".join(sorted(c.name or "?" for c in top))
        raise LookupError(f"defines several commands ({names}): keep one per file, or name "
                          f"one {path.stem!r}")
    if not top:
        raise LookupError("defines no click command (helper modules start with '_')")
    return top[0]


def _broken_command(name: str, path: Path, error: BaseException) -> click.Command:
    """A command that says why *path* could not be loaded, whatever arguments it is given."""
    where = shown_path(path)
    reason = (str(error) if isinstance(error, LookupError)
              else f"{type(error).__name__}: {error}")
    summary = f"{where}: {reason}"

    def explain(args: tuple[str, ...]) -> None:
        if not isinstance(error, LookupError):
            click.echo(_user_traceback(error), err=True, nl=False)
        raise click.ClickException(summary)

    kind = (type(error).__name__ if not isinstance(error, LookupError)
            else "several commands" if str(error).startswith("defines several")
            else "no command")
    return click.Command(
        name, callback=explain, help=f"(broken) {summary}",
        short_help=f"(broken: {kind} in {path.name})",
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True})


def _user_traceback(error: BaseException) -> str:
    """The traceback without the import machinery's and poolkit's frames."""
    machinery = str(Path(importlib.__file__).parent)
    exc = traceback.TracebackException.from_exception(error)
    exc.stack = traceback.StackSummary.from_list(
        [f for f in exc.stack if not f.filename.startswith(("<frozen importlib", machinery))
         and f.filename != __file__])
    return "".join(exc.format())


@lru_cache(maxsize=1)
def _plugin_commands() -> dict[str, str]:
    """``flask.commands`` entry-point names → the module that provides each."""
    return {ep.name: ep.value.partition(":")[0]
            for ep in importlib.metadata.entry_points(group="flask.commands")}


def _is_poolkit_commands(folder: Path) -> bool:
    """Whether *folder* holds poolkit's own commands (the repository's top-level commands/)."""
    spec = importlib.util.find_spec("poolkit.commands")  # finds it without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        installed = Path(location).resolve()
        if installed == folder:
            return True
        init, ours = folder / "__init__.py", installed / "__init__.py"
        if init.is_file() and ours.is_file() and filecmp.cmp(init, ours, shallow=False):
            return True  # a checkout of poolkit beside an installed poolkit
    return False


def default_folders(app: Flask) -> list[Path]:
    """``commands/`` beside the app; for an app inside a package without one, beside the package.

    For ``flask --app shop.app`` that is ``shop/commands/``, else ``commands/`` in the folder
    that holds ``shop/`` (the project root) — unless that folder is where installed packages
    live (``site-packages``: any distribution may own a ``commands`` package there). The
    working directory is never looked at. Only the first folder that exists is used.
    """
    candidates = [Path(app.root_path) / "commands"]
    top = sys.modules.get(app.import_name.partition(".")[0])
    package_file = getattr(top, "__file__", None)
    if package_file and hasattr(top, "__path__"):
        root = Path(package_file).resolve().parent.parent
        if not is_install_location(root):
            candidates.append(root / "commands")
    for folder in candidates:
        folder = folder.resolve()
        if folder.is_dir() and not _is_poolkit_commands(folder):
            return [folder]
    return []


def is_install_location(folder: Path) -> bool:
    """Whether *folder* is where installed distributions live (site-packages, dist-packages).

    Such a folder holds ``*.dist-info`` metadata or is one of the interpreter's site folders;
    a project root is neither.
    """
    folder = folder.resolve()
    sites = {*site.getsitepackages(), site.getusersitepackages(),
             *(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))}
    if any(Path(p).resolve() == folder for p in sites if p):
        return True
    if folder.name in ("site-packages", "dist-packages"):
        return True
    return next(folder.glob("*.dist-info"), None) is not None


def _configured_folders(app: Flask, folders: t.Sequence[str]) -> list[Path]:
    found = []
    for entry in folders:
        folder = (Path(app.root_path) / entry).resolve()
        if not folder.is_dir():
            logger.warning("poolkit: POOLKIT_COMMANDS_DIRS lists %s, which is not a folder", folder)
        elif _is_poolkit_commands(folder):
            logger.debug("poolkit: %s holds poolkit's own commands; not loaded twice", folder)
        else:
            found.append(folder)
    return found


def _claim_package(folder: Path, taken: set[str]) -> str:
    """The package name *folder* is imported as: its own name unless something else has it."""
    name = folder.name
    if not name.isidentifier() or keyword.iskeyword(name) or name in taken:
        return _private_name(folder)
    existing = sys.modules.get(name)
    if existing is not None and (getattr(existing, _MARK, None) is not None
                                 or _serves(existing, folder)):
        return name
    if existing is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec else []
        if spec is None or any(Path(p).resolve() == folder for p in locations):
            return name
        where = spec.origin or locations
    else:
        where = getattr(existing, "__file__", None) or list(getattr(existing, "__path__", []))
    # Never shadow another importable module (a stdlib 'email', a package's 'commands'); say
    # so only where it matters: a module of the folder imports by the folder's name.
    if _imports_by_name(folder, name):
        logger.warning("poolkit: the name %r is taken by %s, so the modules of %s cannot use "
                       "'from %s.… import'; use 'from .… import' in them (or rename the folder)",
                       name, where, folder, name)
    return _private_name(folder)


def _imports_by_name(folder: Path, name: str) -> bool:
    """True when a module of *folder* imports ``name.…`` (absolute, by the folder's name)."""
    pattern = re.compile(rb"^[ \t]*(?:from|import)[ \t]+" + re.escape(name.encode()) + rb"\.",
                         re.MULTILINE)
    for path in folder.glob("*.py"):
        try:
            if pattern.search(path.read_bytes()):
                return True
        except OSError:
            continue
    return False


def register_app_commands(app: Flask, folders: t.Sequence[str] | None = None) -> list[str]:
    """Add the commands of *folders* (default: :func:`default_folders`) to ``app.cli``.

    A name already on ``app.cli`` (``@app.cli.command``) is kept; across several folders the
    first one listed wins. Returns the names added.
    """
    paths = default_folders(app) if folders is None else _configured_folders(app, folders)
    taken: set[str] = set()
    added: list[str] = []
    for path in paths:
        folder = CommandsFolder(path, _claim_package(path, taken))
        taken.add(folder.package)
        for file in folder.files():
            name = file.stem.replace("_", "-")
            if name in app.cli.commands:
                continue
            note = ""
            provider = _plugin_commands().get(name) if name not in FLASK_COMMANDS else "flask"
            if provider is not None and provider.startswith("poolkit.commands"):
                note = f" (it overrides poolkit's built-in 'flask {name}')"
            elif provider is not None:
                logger.warning("poolkit: 'flask %s' runs %s's command, not %s (Flask resolves "
                               "it first): rename the file", name, provider, shown_path(file))

            def load(folder: CommandsFolder = folder, file: Path = file, name: str = name,
                     note: str = note) -> click.Command:
                return folder.load(file, name, note)

            app.cli.add_command(LazyCommand(name, load, app), name)
            added.append(name)
    return added


class AppCommandConfigError(ConfigError, click.ClickException):
    """A POOLKIT_* config error met while ``flask`` loads the app to find a command by name.

    The app's own commands are on ``app.cli`` only once ``init_app`` succeeded, so Flask,
    which reports a ``NoAppException`` there and goes on, would then say ``No such command``
    (exit 2) for a command the app does have. Raised instead, this one propagates: one
    ``Error:`` line and exit 1, as a built-in command gives for the same mistake.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)


def resolving_command(ctx: click.Context) -> bool:
    """Whether *ctx* is a group looking up the subcommand it was given (``flask NAME …``),
    rather than listing its commands (``flask``, ``flask --help``, shell completion).

    A group resolves its subcommand only after all its own parameters were parsed; an eager
    ``--help`` (or no arguments at all) lists the commands before the others are. click records
    each parameter's source before processing it.
    """
    if not isinstance(ctx.command, click.Group) or ctx.resilient_parsing:
        return False
    return all(ctx.get_parameter_source(param.name) is not None
               for param in ctx.command.get_params(ctx) if param.name)


@lru_cache(maxsize=1)
def builtin_commands() -> dict[str, click.Command]:
    """poolkit's own commands, as its ``flask.commands`` entry points name them (read once)."""
    return {ep.name: ep.load()
            for ep in importlib.metadata.entry_points(group="flask.commands")
            if ep.value.startswith("poolkit.commands")}


def register_commands(app: Flask, folders: t.Sequence[str] | None = None) -> list[str]:
    """Put the app's commands (:func:`register_app_commands`) and poolkit's on ``app.cli``.

    ``app.cli`` is what Flask's test runner (``app.test_cli_runner().invoke(args=[...])``)
    and ``flask`` both see. One command per name: a command already on ``app.cli`` or in the
    app's folders wins over the built-in of the same name. Returns the names added.
    """
    added = register_app_commands(app, folders)
    for name, command in builtin_commands().items():
        if name not in app.cli.commands:
            app.cli.add_command(command, name)
            added.append(name)
    return added
