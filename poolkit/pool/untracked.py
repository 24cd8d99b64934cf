"""Which statements may change session state that the server does not report.

The server flags a statement that changed session state (``SERVER_SESSION_STATE_CHANGED``,
with ``session_track_state_change=ON``) for system and user variables set by a statement,
the current database, temporary tables and prepared statements. It does **not** flag, on
MariaDB 10.11: named locks (``GET_LOCK``), table locks, ``HANDLER``, ``FLUSH … FOR EXPORT``,
``BACKUP STAGE``, ``XA``, sequences' previous values (``NEXTVAL``/``LASTVAL``),
next-transaction characteristics (``SET TRANSACTION``), anything a stored procedure or stored
function does (``CALL p()``, ``SELECT f()``), and a statement that turns the tracking itself
off (``SET session_track_state_change=OFF``: from then on nothing is flagged).

So the decision fails safe: a statement counts as *tracked* -- its session effects all
reported by the server -- only when it starts with a keyword of :data:`TRACKED_VERBS`,
assigns no user variable inside a query, takes no sequence value, is no
``SET TRANSACTION``/``SET ROLE``/``SET session_track_…``, and calls only built-in functions
(:data:`BUILTINS`; any other name may be a stored function). Everything else forces the full
reset. A false alarm (a function name in a string literal) costs one reset; a statement over 64 KiB
counts as untracked unread (a bulk load: one reset is cheaper than scanning it).

Not visible in the statement at all, and so not covered: triggers and column defaults that
take a named lock or a sequence's next value (``DEFAULT NEXTVAL(s)``); set
``POOLKIT_RESET="always"`` for such schemas (docs/pool.md).
"""

from __future__ import annotations

import re

#: Statements whose session effects the server reports (or that have none).
TRACKED_VERBS = frozenset({
    "select", "insert", "update", "delete", "replace", "with", "values", "table", "begin",
    "commit", "rollback", "savepoint", "release", "start", "show", "describe", "desc",
    "explain", "set", "use", "do", "analyze", "check", "checksum",
})

_INTO_VAR = re.compile(r"\binto\s*@").search
_SEQUENCE = re.compile(r"\b(?:next|previous)\s+value\b").search


def _mentions_untracked(low: str, verb: str) -> bool:
    # Plain substring tests first (tens of ns each); a regex only confirms a hit. Functions
    # (GET_LOCK, NEXTVAL, a stored function) are judged by _calls_unknown_function.
    if "@" in low and (":=" in low or _INTO_VAR(low) is not None):
        return True  # a user variable assigned inside a query
    if ("next" in low or "previous" in low) and _SEQUENCE(low) is not None:
        return True  # NEXT VALUE FOR s: the session's LASTVAL
    # SET TRANSACTION (the next transaction only), SET ROLE, SET session_track_…=OFF (the
    # server stops reporting), SET STATEMENT … FOR: the server reports none of these.
    return verb == "set" and ("transaction" in low or "role" in low
                              or "session_track" in low or "statement" in low)


#: Native functions of MariaDB and MySQL that change no session state (a stored function
#: cannot take one of these names unqualified). GET_LOCK and friends are matched above.
_NATIVE = """
abs acos adddate addtime aes_decrypt aes_encrypt any_value ascii asin atan atan2 avg
benchmark bin bit_and bit_count bit_length bit_or bit_xor cast ceil ceiling char char_length
character_length charset chr coalesce coercibility collation compress concat concat_ws
connection_id conv convert convert_tz cos cot count crc32 crc32c curdate current_date
current_time current_timestamp current_user curtime database date date_add date_format
date_sub datediff day dayname dayofmonth dayofweek dayofyear decode default degrees
dense_rank des_decrypt des_encrypt elt encode encrypt exp export_set extract extractvalue
field find_in_set first_value floor format format_bytes format_pico_time found_rows
from_base64 from_days from_unixtime greatest group_concat hex hour if ifnull inet6_aton
inet6_ntoa inet_aton inet_ntoa insert instr interval is_free_lock is_ipv4 is_ipv6
is_used_lock isnull json_array json_arrayagg json_compact json_contains json_contains_path
json_depth json_detailed json_equals json_exists json_extract json_insert json_keys
json_length json_loose json_merge json_merge_patch json_merge_preserve json_normalize
json_object json_objectagg json_overlaps json_query json_quote json_remove json_replace
json_search json_set json_table json_type json_unquote json_valid json_value lag last_day
last_insert_id last_value lcase lead least left length ln load_file localtime
localtimestamp locate log log10 log2 lower lpad ltrim make_set makedate maketime match max
md5 microsecond mid min minute mod month monthname now nth_value ntile nullif oct
octet_length old_password ord percent_rank percentile_cont percentile_disc period_add
period_diff pi position pow power quarter quote radians rand rank regexp_instr
regexp_replace regexp_substr repeat replace reverse right round row_count row_number rpad
rtrim schema sec_to_time second session_user sformat sha sha1 sha2 sign sin sleep soundex
space sqrt std stddev stddev_pop stddev_samp str_to_date strcmp subdate substr substring
substring_index subtime sum sys_guid sysdate system_user tan time time_format time_to_sec
timediff timestamp timestampadd timestampdiff to_base64 to_char to_days to_seconds trim
truncate ucase uncompress uncompressed_length unhex unix_timestamp updatexml upper
user utc_date utc_time utc_timestamp uuid uuid_short values var_pop var_samp variance
version week weekday weekofyear weight_string year yearweek natural_sort_key
current_role st_astext st_geomfromtext st_distance point polygon linestring
in exists any all some not and or xor on using over as key index primary unique foreign
references partition by from where join table into set char varchar decimal numeric
binary int integer signed unsigned double float date datetime enum check constraint
row is like rlike union intersect except regexp between case when then else end distinct
returning lateral
"""
BUILTINS = frozenset(re.findall(r"\S+", _NATIVE))

_WORD = re.compile(r"[a-z]+").match
_LEADING = re.compile(r"\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*|#[^\n]*\n\s*|\(\s*)*([a-z]+)",
                      re.DOTALL).match
_NAME_BACKWARDS = re.compile(r"[\w$`.]+").match
_SCAN_LIMIT = 64 * 1024
_CACHE_LIMIT = 4096
_cache: dict[str, bool] = {}


def _calls_unknown_function(low: str) -> bool:
    # Each "(" preceded by a name is a call, except a table's column list (INTO t (a, b)).
    pieces = low.split("(")
    for i in range(len(pieces) - 1):
        before = pieces[i].rstrip()
        found = _NAME_BACKWARDS(before[::-1])
        if found is None:
            continue
        name = found.group()[::-1].replace("`", "")
        if "." not in name and name in BUILTINS:  # db.f(): another database's function
            continue
        head = before[:len(before) - found.end()].rstrip()
        if head.endswith(("into", "table", "exists")):
            continue  # INSERT INTO t (…), CREATE TABLE t (…): a column list
        return True
    return False


def changes_untracked_state(sql: str | bytes) -> bool:
    """True unless *sql* provably changes only session state that the server reports."""
    if len(sql) > _SCAN_LIMIT:
        return True
    low = (sql.decode("utf-8", "replace") if isinstance(sql, (bytes, bytearray))
           else sql).lower()
    if "/*!" in low or "/*m!" in low:  # executable comments: code the first word hides
        return True
    first = _WORD(low.lstrip()) or _LEADING(low)
    verb = first.group(first.lastindex or 0) if first is not None else ""
    if verb not in TRACKED_VERBS or _mentions_untracked(low, verb):
        return True
    return "(" in low and _calls_unknown_function(low)


def statement_changes_untracked_state(sql: str) -> bool:
    """:func:`changes_untracked_state` of a statement *template* (placeholders, no values),
    remembered: an app runs the same few hundred texts over and over. Parameters are quoted
    literals and cannot change the answer."""
    known = _cache.get(sql)
    if known is None:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        known = _cache[sql] = changes_untracked_state(sql)
    return known
