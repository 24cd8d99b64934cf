"""Which files can run as one transaction, so that a failure undoes them entirely.

MySQL commits implicitly before and after DDL (the manual's list of "Statements That Cause an
Implicit Commit"), so only a file of plain DML can be undone: every statement is ``INSERT``,
``REPLACE``, ``UPDATE`` or ``DELETE`` on one table, or a ``SELECT``, and every table written
uses a transactional engine (InnoDB, …). ``SET``, ``USE``, ``LOCK TABLES``, ``CALL`` (a
procedure may do anything) and anything else make the file run statement by statement.
"""

from __future__ import annotations

import re
import typing as t

from .files import SqlFile
from .split import split_file
from .statement import first_word

#: Files up to this size are scanned to decide whether they can run as one transaction.
TRANSACTION_MAX_BYTES = 64 * 1024 * 1024

_NAME = rb"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
_TABLE = rb"(" + _NAME + rb")(?:\s*\.\s*(" + _NAME + rb"))?"
_TARGET = {
    b"INSERT": re.compile(rb"INSERT\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE)\s+)*"
                          rb"(?:INTO\s+)?" + _TABLE, re.I),
    b"REPLACE": re.compile(rb"REPLACE\s+(?:(?:LOW_PRIORITY|DELAYED)\s+)*(?:INTO\s+)?" + _TABLE,
                           re.I),
    b"UPDATE": re.compile(rb"UPDATE\s+(?:(?:LOW_PRIORITY|IGNORE)\s+)*" + _TABLE +
                          rb"\s+(?:(?:AS\s+)?" + _NAME + rb"\s+)?SET\b", re.I),
    b"DELETE": re.compile(rb"DELETE\s+(?:(?:LOW_PRIORITY|QUICK|IGNORE)\s+)*FROM\s+" + _TABLE +
                          rb"(?:\s+(?:WHERE|ORDER|LIMIT|RETURNING)\b|\s*$)", re.I),
}


def _unquote(name: bytes) -> str:
    text = name.decode("utf-8", "replace")
    return text[1:-1].replace("``", "`") if text.startswith("`") else text


def transactional(raw: t.Any, file: SqlFile, database: str, *, comments: bool = False) -> bool:
    """True when every statement of *file* is ``INSERT``/``REPLACE``/``UPDATE``/``DELETE``
    (one table each) or ``SELECT`` and every table written is transactional (InnoDB …).

    Nothing on the manual's list of statements that commit implicitly can pass; a file over
    :data:`TRANSACTION_MAX_BYTES`, or standard input, is not scanned (False).
    """
    if file.is_stdin or file.size > TRANSACTION_MAX_BYTES:
        return False
    tables: set[tuple[str, str]] = set()
    for stmt in split_file(file.path, comments=comments):
        if stmt.path != file.path:  # a sourced file: its content is not this file's checksum
            return False
        word = first_word(stmt.sql)
        if word == b"SELECT":
            if re.search(rb"\bINTO\s+(?:OUTFILE|DUMPFILE)\b", stmt.sql, re.I):
                return False
            continue
        pattern = _TARGET.get(word)
        found = pattern.match(stmt.sql.lstrip()) if pattern is not None else None
        if found is None:
            return False
        if found.group(2) is None:
            tables.add((database, _unquote(found.group(1))))
        else:
            tables.add((_unquote(found.group(1)), _unquote(found.group(2))))
    if not tables:
        return False
    cursor = raw.cursor()
    try:
        for schema, name in tables:
            cursor.execute("SELECT 1 FROM information_schema.TABLES T JOIN "
                           "information_schema.ENGINES E ON E.ENGINE = T.ENGINE "
                           "WHERE E.TRANSACTIONS = 'YES' AND T.TABLE_SCHEMA = %s "
                           "AND T.TABLE_NAME = %s", (schema, name))
            if not cursor.fetchall():
                return False
    finally:
        cursor.close()
    return True


