"""Find the .sql files to apply, in natural order, and check them before anything runs.

``discover(folder)`` lists every ``*.sql`` (and ``*.sql.gz``, ``*.sql.bz2``, ``*.sql.xz``)
regular file of *folder* ordered the way a person reads the names (``2_x.sql`` before
``10_y.sql``). ``check_file`` rejects what cannot be SQL text -- an empty file, a zstd, zip or
binary file, UTF-16, a byte that is not UTF-8 outside string literals (naming its line) --
with one message naming the file and saying what to do, so a bad file fails the run before
the first statement is sent. :func:`open_sql` opens a file for the splitter: gzip, bzip2 and
xz (recognised by their magic bytes) are decompressed while streaming (standard library), and
``-`` is standard input. History records a compressed file by its name and the SHA-256 of its
compressed bytes; standard input is never recorded.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import io
import lzma
import os
import re
import sys
import typing as t
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import SqlFileError
from .scan import code_spans

SNIFF_SIZE = 64 * 1024
_DIGITS = re.compile(r"(\d+)")
_FINAL_CTRL_Z = re.compile(rb"\x1a[\s\x1a]*\Z")
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")

STDIN = Path("-")
#: What ``discover`` picks up (lower-cased name endings).
SQL_SUFFIXES = (".sql", ".sql.gz", ".sql.bz2", ".sql.xz")
#: Compressed formats the standard library streams: magic bytes -> name.
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x28\xb5\x2f\xfd", "zstd-compressed: decompress it first (unzstd)"),
    (b"PK\x03\x04", "a zip archive: extract the .sql file from it first"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8 (PowerShell's '>' writes UTF-16; use "
                  "'Out-File -Encoding utf8')"),
    (b"\xfe\xff", "UTF-16 text: save it as UTF-8"),
)


@dataclass(frozen=True)
class SqlFile:
    """A .sql file to apply: its path, the name history records, its size and checksum."""

    path: Path
    name: str
    size: int
    checksum: str
    #: "gzip", "bzip2" or "xz" when the file is decompressed while it is read.
    compression: str | None = None

    @property
    def is_stdin(self) -> bool:
        """True for ``-`` (standard input): applied every time, never recorded."""
        return self.path == STDIN


def natural_key(name: str) -> list[t.Any]:
    """Sort key that orders embedded numbers by value: ``2_x`` < ``10_y``."""
    return [(0, int(part), part) if part.isdigit() else (1, part.lower(), part)
            for part in _DIGITS.split(name) if part]


def discover(folder: str | os.PathLike[str]) -> list[Path]:
    """Every ``*.sql`` of *folder* in natural order; errors name the folder or the file."""
    directory = Path(folder)
    if not directory.exists():
        raise SqlFileError(f"{directory}: no such folder: create it and put .sql files in it, "
                           "set POOLKIT_SQL_DIR or pass --sql-dir")
    if not directory.is_dir():
        raise SqlFileError(f"{directory}: not a folder: point POOLKIT_SQL_DIR or --sql-dir at "
                           "the folder that holds the .sql files")
    found: list[Path] = []
    for entry in directory.iterdir():
        if not entry.name.lower().endswith(SQL_SUFFIXES):
            continue
        if not entry.is_file():
            kind = "a folder" if entry.is_dir() else "not a regular file"
            raise SqlFileError(f"{entry}: is {kind}, not a .sql file: rename or move it")
        found.append(entry)
    if not found:
        raise SqlFileError(f"{directory}: no .sql files in this folder: add e.g. "
                           "10_schema.sql, or point --sql-dir elsewhere")
    return sorted(found, key=lambda p: natural_key(p.name))


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """The hex SHA-256 of the file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def compression_of(head: bytes) -> str | None:
    """"gzip", "bzip2" or "xz" when *head* starts with that format's magic bytes."""
    for magic, name in COMPRESSED.items():
        if head.startswith(magic):
            return name
    return None


class _Reader(io.BufferedIOBase):
    """A file (or stdin), decompressed if it is compressed; read errors become SqlFileError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw: t.Any = sys.stdin.buffer if path == STDIN else open(path, "rb")  # noqa: SIM115
        if not hasattr(raw, "peek"):  # a BytesIO standing in for stdin (tests, pipelines)
            raw = io.BufferedReader(raw)
        self.raw = raw
        self.owned = path != STDIN
        head = raw.peek(8)[:8]
        kind = compression_of(head)
        self.stream: t.BinaryIO
        if kind == "gzip":
            self.stream = t.cast(t.BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
        elif kind == "bzip2":
            self.stream = t.cast(t.BinaryIO, bz2.BZ2File(raw))
        elif kind == "xz":
            self.stream = t.cast(t.BinaryIO, lzma.LZMAFile(raw))  # noqa: SIM115
        else:
            self.stream = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self.stream.read(-1 if size is None else size)
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as error:
            raise SqlFileError(f"{self.path}: cannot read: {error}") from None

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        if self.owned:
            self.raw.close()
        super().close()


def open_sql(path: Path) -> _Reader:
    """Open *path* (``-``: standard input) for reading SQL, decompressing gzip/bzip2/xz."""
    return _Reader(path)


def sniff(head: bytes, whole: bool = False) -> str | None:
    """Why *head* (a file's first bytes; *whole*: all of them) cannot be SQL text, or None
    if it may be. Only what the splitter sends as SQL text is checked: literals, backtick
    names and comments may hold any byte (a dump's BLOBs, a latin1 comment), as in the
    client; a final DOS end-of-file byte (Ctrl-Z) is accepted too."""
    for magic, why in _MAGIC:
        if head.startswith(magic):
            return f"is {why}"
    if whole:
        head = _FINAL_CTRL_Z.sub(b"", head)
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start, stop in code_spans(head):
        gap = head[start:stop]
        bad = _CONTROL.search(gap)
        if bad is not None:
            line = head.count(b"\n", 0, start + bad.start()) + 1
            return (f"line {line}: is not SQL text: binary byte 0x{bad.group()[0]:02x} outside "
                    "any string literal (a binary file, or the wrong file?)")
        try:
            decoder.decode(gap, final=False)
        except UnicodeDecodeError as error:
            line = head.count(b"\n", 0, start + error.start) + 1
            return (f"line {line}: is not UTF-8 outside string literals (byte "
                    f"0x{gap[error.start]:02x}): save it as UTF-8 (e.g. iconv -f latin1 -t "
                    "utf-8)")
        decoder.reset()
    return None


def check_file(path: Path, name: str | None = None) -> SqlFile:
    """Check that *path* is a non-empty SQL text file and compute its checksum.

    ``-`` (standard input) is checked on what can be peeked without consuming it.
    """
    if path == STDIN:
        return _check_stdin()
    try:
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise SqlFileError(f"{path}: {what}: name .sql files to apply")
        size = path.stat().st_size
        if size == 0:
            raise SqlFileError(f"{path}: is empty (0 bytes): an export that failed? Put SQL in "
                               "it or delete it")
        with open(path, "rb") as stream:
            kind = compression_of(stream.read(8))
        with open_sql(path) as reader:
            head = reader.read(SNIFF_SIZE)
    except OSError as error:
        raise SqlFileError(f"{path}: cannot read: {error.strerror or error}") from None
    if kind is not None and not head:
        raise SqlFileError(f"{path}: is empty once decompressed ({kind}): put SQL in it or "
                           "delete it")
    problem = sniff(head, whole=len(head) < SNIFF_SIZE)
    if problem:
        where = problem.split(": ", 1)
        if where[0].startswith("line "):  # path:line: …
            raise SqlFileError(f"{path}:{where[0][5:]}: {where[1]}")
        raise SqlFileError(f"{path}: {problem}")
    return SqlFile(path, name or path.name, size, sha256_file(path), kind)


def _check_stdin() -> SqlFile:
    stream = sys.stdin.buffer
    peek = getattr(stream, "peek", None)
    head = peek(SNIFF_SIZE)[:SNIFF_SIZE] if peek is not None else b""
    kind = compression_of(head)
    if kind == "gzip":  # sniff what the peeked bytes decompress to
        head = zlib.decompressobj(wbits=47).decompress(head, SNIFF_SIZE)
    elif kind is not None:
        head = b""
    problem = sniff(head)
    if problem:
        raise SqlFileError(f"standard input: {problem}")
    return SqlFile(STDIN, "-", 0, "", kind)


def check_files(paths: t.Iterable[Path]) -> list[SqlFile]:
    """:func:`check_file` for each path; two files with the same name are an error."""
    files: list[SqlFile] = []
    seen: dict[str, Path] = {}
    for path in paths:
        checked = check_file(path)
        if checked.is_stdin:
            if any(f.is_stdin for f in files):
                raise SqlFileError("'-' (standard input) is given twice: it can be read once")
            files.append(checked)
            continue
        if checked.name in seen:
            raise SqlFileError(f"{path}: another file of the same name ({seen[checked.name]}) "
                               "is in this run; history records files by name: rename one")
        seen[checked.name] = path
        files.append(checked)
    return files
