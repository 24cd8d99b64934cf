"""Find the .sql files to apply, in natural order, and check them before anything runs.

``discover(folder)`` lists every ``*.sql`` regular file of *folder* ordered the way a person
reads the names (``2_x.sql`` before ``10_y.sql``). ``check_file`` rejects what cannot be SQL
text -- an empty file, a compressed or binary file, UTF-16 -- with one message naming the file
and saying what to do, so a bad file fails the run before the first statement is sent.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import typing as t
from dataclasses import dataclass
from pathlib import Path

from ..errors import SqlFileError

SNIFF_SIZE = 64 * 1024
_DIGITS = re.compile(r"(\d+)")
# String literals of the sniffed chunk, dropped before looking for binary bytes (a dump's
# BLOB literal may hold any byte); an unclosed literal runs to the end of the chunk.
_LITERAL = re.compile(rb"'[^'\\]*(?:\\[\s\S][^'\\]*)*(?:'|$)"
                      rb'|"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|$)')
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed: decompress it first (gunzip)"),
    (b"BZh", "bzip2-compressed: decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed: decompress it first (unxz)"),
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
        if entry.suffix.lower() != ".sql":
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


def sniff(head: bytes) -> str | None:
    """Why *head* (a file's first bytes) cannot be SQL text, or None if it may be."""
    for magic, why in _MAGIC:
        if head.startswith(magic):
            return f"is {why}"
    outside = _LITERAL.sub(b"''", head)
    bad = _CONTROL.search(outside)
    if bad is not None:
        # Where SQL text must be (outside literals), a NUL or control byte means binary data.
        return (f"is not SQL text: binary byte 0x{bad.group()[0]:02x} outside any string "
                "literal (a binary file, or the wrong file?)")
    try:  # literals may hold any bytes (BLOBs in dumps); the SQL around them must be UTF-8
        codecs.getincrementaldecoder("utf-8")().decode(outside, final=False)
    except UnicodeDecodeError as error:
        byte = outside[error.start]
        return (f"is not UTF-8 outside string literals (byte 0x{byte:02x}): save it as UTF-8 "
                "(e.g. iconv -f latin1 -t utf-8)")
    return None


def check_file(path: Path, name: str | None = None) -> SqlFile:
    """Check that *path* is a non-empty SQL text file and compute its checksum."""
    try:
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise SqlFileError(f"{path}: {what}: name .sql files to apply")
        size = path.stat().st_size
        if size == 0:
            raise SqlFileError(f"{path}: is empty (0 bytes): an export that failed? Put SQL in "
                               "it or delete it")
        with open(path, "rb") as stream:
            head = stream.read(SNIFF_SIZE)
    except OSError as error:
        raise SqlFileError(f"{path}: cannot read: {error.strerror or error}") from None
    problem = sniff(head)
    if problem:
        raise SqlFileError(f"{path}: {problem}")
    return SqlFile(path, name or path.name, size, sha256_file(path))


def check_files(paths: t.Iterable[Path]) -> list[SqlFile]:
    """:func:`check_file` for each path; two files with the same name are an error."""
    files: list[SqlFile] = []
    seen: dict[str, Path] = {}
    for path in paths:
        checked = check_file(path)
        if checked.name in seen:
            raise SqlFileError(f"{path}: another file of the same name ({seen[checked.name]}) "
                               "is in this run; history records files by name: rename one")
        seen[checked.name] = path
        files.append(checked)
    return files
