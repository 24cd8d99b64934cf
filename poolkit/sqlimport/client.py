"""The ``mariadb`` client's named commands (``use``, ``quit``, ``exit``, ``go``, ``status`` …).

The client recognises a command by name, without a delimiter, on a line that opens a
statement (only whitespace before it): the line's first word, compared case-insensitively with
its command table, and nothing after it unless the command takes an argument. A line holding
``\\g`` or the delimiter is not a command line (``quit;`` and ``go;`` reach the server as
statements), except ``delimiter``. At a delimiter, the statement's text is looked up again,
but the client then runs only its printing commands (``status;``, ``help;``, ``print;`` …);
``quit;``, ``exit;``, ``go;`` and ``ego;`` are sent and fail on the server, as here.
"""

from __future__ import annotations

from dataclasses import dataclass

_WS = b" \t"


@dataclass(frozen=True, slots=True)
class Command:
    """One entry of the client's command table."""

    name: bytes
    takes_params: bool
    #: What the splitter does: quit, use, ignore (prints or toggles output only), go (sends
    #: an empty buffer: nothing), refuse, or line (delimiter and source: the splitter's own).
    action: str


_TABLE = (
    Command(b"?", True, "ignore"), Command(b"help", True, "ignore"),
    Command(b"clear", False, "ignore"), Command(b"connect", True, "refuse"),
    Command(b"delimiter", True, "line"), Command(b"edit", False, "refuse"),
    Command(b"ego", False, "go"), Command(b"exit", False, "quit"),
    Command(b"go", False, "go"), Command(b"nopager", False, "ignore"),
    Command(b"notee", False, "ignore"), Command(b"pager", True, "refuse"),
    Command(b"print", False, "ignore"), Command(b"prompt", True, "refuse"),
    Command(b"quit", False, "quit"), Command(b"rehash", False, "ignore"),
    Command(b"source", True, "line"), Command(b"status", False, "ignore"),
    Command(b"system", True, "refuse"), Command(b"tee", True, "refuse"),
    Command(b"use", True, "use"), Command(b"charset", True, "refuse"),
    Command(b"warnings", False, "ignore"), Command(b"nowarning", False, "ignore"),
    Command(b"sandbox", False, "ignore"),
)
COMMANDS = {command.name: command for command in _TABLE}
#: Bytes a command line may start with (after whitespace), for a cheap first look.
FIRST_BYTES = frozenset(c for name in COMMANDS for c in (name[0], name.upper()[0]))
#: The longest name: a line's first word longer than this is no command.
LONGEST = max(len(name) for name in COMMANDS)
#: At a delimiter the client runs only these (the rest go to the server).
_AT_DELIMITER = frozenset({"ignore"})


def first_word(line: bytes) -> bytes:
    """The line's first word as the client's ``find_command`` cuts it (up to a space or
    tab), lower-cased."""
    text = line.lstrip(b" \t\n\r\f\v")
    cut = len(text)
    for i, c in enumerate(text):
        if c in _WS:
            cut = i
            break
    return text[:cut].lower()


def find_command(line: bytes) -> tuple[Command, bytes] | None:
    """The command that *line* (without its newline) runs, with its argument text, or None."""
    text = line.lstrip(b" \t\n\r\f\v").rstrip(b"\r")
    word = first_word(text)
    command = COMMANDS.get(word)
    if command is None:
        return None
    rest = text[len(word):].strip(b" \t\r")
    if rest and not command.takes_params:
        return None
    return command, rest


def line_command(line: bytes, delimiter: bytes) -> tuple[Command, bytes] | None:
    """The command of a line opening a statement, as the client reads it, or None."""
    if b"\\g" in line or (delimiter in line and first_word(line) != b"delimiter"):
        return None
    return find_command(line)


def statement_command(text: bytes) -> Command | None:
    """The printing command a statement's text is, at its delimiter (not sent), or None."""
    if len(text) > 64:
        return None
    found = find_command(text)
    if found is None or found[0].action not in _AT_DELIMITER:
        return None
    return found[0]
