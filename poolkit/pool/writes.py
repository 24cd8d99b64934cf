"""Whether a statement sent through a row-returning helper may have written.

Read-your-writes needs to know whether a request wrote. For ``execute`` the answer is yes; for
``query``/``query_one``/``scalar`` the server's reply to a statement that returns rows carries
no such fact (its result ends with an EOF packet), so it is decided here from the text, in the
safe direction, and kept per statement text: a helper's SQL is a template, so a repeated one
costs one dict lookup.
"""

from __future__ import annotations

import re

# A statement through the row-returning helpers (query, query_one, scalar) is a read only when
# it begins with one of these words after whitespace and plain comments …
_READ_START = re.compile(r"(?:\s+|/\*(?![!M])[\s\S]*?\*/|(?:--\s|#)[^\n]*(?:\n|$))*"
                         r"(?:SELECT|SHOW|DESC|DESCRIBE|EXPLAIN|WITH|VALUES|TABLE)\b", re.I)
# … and has none of these anywhere (in a string literal too: a false "write" only sends the
# request's next replica read to the primary; a false "read" would break read-your-writes).
_WRITE_MARK = re.compile(r"\bRETURNING\b|\bNEXTVAL\b|\bNEXT\s+VALUE\b|\bSETVAL\b"
                         r"|\bFOR\s+UPDATE\b|\bLOCK\s+IN\b|\bINTO\b|\bGET_LOCK\b"
                         r"|/\*[!M]", re.I)


_MARK_TOKENS = ("RETURNING", "NEXT", "SETVAL", "UPDATE", "INTO", "LOCK", "/*!", "/*M")


_verdicts: dict[str | bytes, bool] = {}  # per statement text (the helpers' SQL is a template)
_VERDICTS_KEPT = 4096


def may_write(sql: str | bytes) -> bool:
    """:func:`statement_may_write`, kept per statement text: a repeated template costs a lookup."""
    verdict = _verdicts.get(sql)
    if verdict is None:
        verdict = statement_may_write(sql)
        if len(_verdicts) < _VERDICTS_KEPT:
            _verdicts[sql] = verdict
    return verdict


def statement_may_write(sql: str | bytes) -> bool:
    """False only for a statement that is certainly a read (``SELECT …`` without
    ``RETURNING``, ``NEXTVAL``, ``SETVAL``, ``FOR UPDATE``, ``INTO`` …): what the read helpers
    run counts as a write for read-your-writes otherwise.

    The server does not say whether a statement that returns rows wrote (its result ends
    with an EOF packet that carries no such fact), so this is decided from the text, in the
    safe direction. A stored function that writes, called from a plain ``SELECT``, is not
    seen: run such calls with ``execute``.
    """
    text = sql.decode(errors="replace") if isinstance(sql, bytes) else sql
    if _READ_START.match(text) is None:
        return True
    upper = text.upper()
    # Every mark contains one of these: the regex (slow: ~15 µs) runs only when one is there.
    if not any(token in upper for token in _MARK_TOKENS):
        return False
    return _WRITE_MARK.search(text) is not None
