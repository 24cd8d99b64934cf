"""Differential test: after any borrower, the next borrower's session equals a fresh one.

A seeded generator draws borrowers from a grammar of statements that change session state
(MariaDB's documentation of SET, SET TRANSACTION, SET ROLE-free privileges, user variables,
temporary tables, prepared statements, HANDLER, LOCK TABLES, named locks, sequences, FLUSH …
FOR EXPORT, BACKUP STAGE, XA, stored functions and procedures, driver calls), runs each on a
pool of one connection, and compares the next borrower's session fingerprint with that of a
fresh connection of an identical pool: every session variable, user variables, current role,
default database, temporary tables, prepared statements, handlers, table and named locks,
sequences' previous values, backup stage, transaction state (``@@in_transaction``, the next
transaction's access mode and isolation) and ``LAST_INSERT_ID()``.

Without ``POOLKIT_FUZZ_SECONDS`` the fixed seeds run (CI); with it, random seeds run until the
budget is spent, each printed so that a failure can be replayed with ``POOLKIT_FUZZ_SEED``.
"""

from __future__ import annotations

import os
import random
import time
import typing as t

import pymysql
import pytest
from conftest import scratch_table

from poolkit import Pool
from poolkit.url import parse_url

pytestmark = pytest.mark.fuzz

FIXED_SEEDS = (2, 3, 21)
BORROWERS = 15  # per seed and reset mode
VARIABLES = ("@fz_a", "@fz_b", "@fz_secret")
TEMP_TABLES = ("fz_tmp", "fuzz_t")  # fuzz_t shadows the real table
STATEMENTS = ("fz_stmt", "fz_other")
LOCKS = ("fz_lock", "fz_hidden")
#: Session variables that differ between any two connections, fresh or not.
PER_CONNECTION = frozenset({"PSEUDO_THREAD_ID", "TIMESTAMP", "RAND_SEED1", "RAND_SEED2",
                            "THREAD_ID", "LAST_GTID", "GTID_SEQ_NO", "WARNING_COUNT",
                            "ERROR_COUNT", "IDENTITY", "INSERT_ID", "LAST_INSERT_ID"})

SESSION_SETS = (
    "SET SESSION sql_mode = ''", "SET SESSION sql_mode = 'ANSI_QUOTES'",
    "SET time_zone = '+09:00'", "SET SESSION sql_select_limit = 1",
    "SET SESSION foreign_key_checks = 0", "SET SESSION unique_checks = 0",
    "SET autocommit = 1", "SET SESSION wait_timeout = 77",
    "SET SESSION max_statement_time = 5", "SET NAMES latin1", "SET lc_time_names = 'de_DE'",
    "SET SESSION div_precision_increment = 9", "SET SESSION group_concat_max_len = 7",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
    "SET SESSION TRANSACTION READ ONLY", "SET SESSION sql_safe_updates = 1",
    "SET SESSION session_track_state_change = OFF", "SET SESSION session_track_schema = OFF",
    "SET SESSION session_track_system_variables = ''",
    "SET SESSION session_track_transaction_info = 'CHARACTERISTICS'",
    "SET SESSION default_storage_engine = 'Aria'", "SET SESSION max_error_count = 3",
    "SET SESSION big_tables = 1", "SET @@SESSION.tx_read_only = 1",
    "SET STATEMENT max_statement_time = 2 FOR SELECT 1",
)
UNTRACKED = (
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SET TRANSACTION READ ONLY",
    "SELECT GET_LOCK('fz_lock', 0)", "SELECT fz_hidden_lock()", "SELECT fz_hidden_var()",
    "CALL fz_proc()", "LOCK TABLES fuzz_t READ", "HANDLER fuzz_t OPEN",
    "SELECT NEXTVAL(fz_seq)", "SELECT NEXT VALUE FOR fz_seq", "SELECT SETVAL(fz_seq, 500)",
    "FLUSH TABLES fuzz_t FOR EXPORT", "BACKUP STAGE START", "XA START 'fz_xa'",
    "SELECT 'x' INTO @fz_secret", "SELECT @fz_b := 4", "DO @fz_a := 5",
)
OTHER = (
    "SET @fz_a = 1", "SET @fz_secret = 'token'", "USE information_schema",
    "CREATE TEMPORARY TABLE fz_tmp (a INT)", "CREATE TEMPORARY TABLE fuzz_t (a INT)",
    "PREPARE fz_stmt FROM 'SELECT 1'", "PREPARE fz_other FROM 'SELECT 2'", "BEGIN",
    "INSERT INTO fuzz_ai (v) VALUES (1)", "SELECT COUNT(*) FROM fuzz_t",
    "START TRANSACTION READ ONLY", "SELECT 1/0", "SELECT 1",
)
#: Driver calls that change the session without a statement of the borrower's.
DRIVER_CALLS: dict[str, t.Callable[[t.Any], None]] = {
    "autocommit(True)": lambda raw: raw.autocommit(True),
    "set_character_set('latin1')": lambda raw: raw.set_character_set("latin1"),
    "select_db('information_schema')": lambda raw: raw.select_db("information_schema"),
}
DRIVER = tuple(DRIVER_CALLS)


def borrower(rng: random.Random) -> list[str]:
    """One borrower's statements, drawn from the grammar (1-4 of them)."""
    pools = (SESSION_SETS, UNTRACKED, OTHER, DRIVER)
    return [rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 4))]


def act(conn: t.Any, statement: str) -> None:
    if statement in DRIVER_CALLS:
        DRIVER_CALLS[statement](conn.raw)
        return
    try:
        cur = conn.raw.cursor()
        cur.execute(statement)
        cur.fetchall()
        cur.close()
    except pymysql.err.MySQLError:
        pass  # a statement the session refused (LOCK TABLES held, XA state …): keep going


def _rows(raw: t.Any, sql: str) -> list[tuple[t.Any, ...]]:
    cur = raw.cursor()
    cur.execute(sql)
    rows = list(cur.fetchall())
    cur.close()
    return rows


def _error(raw: t.Any, sql: str) -> int | str:
    try:
        _rows(raw, sql)
    except pymysql.err.MySQLError as error:
        return int(error.args[0])
    return "ok"


def _isolation(raw: t.Any) -> list[tuple[t.Any, ...]]:
    # INNODB_TRX is a cache refreshed at most every 0.1 s: wait (bounded) for our row.
    deadline = time.monotonic() + 2.0
    while True:
        time.sleep(0.11)
        rows = _rows(raw, "SELECT trx_isolation_level FROM information_schema.INNODB_TRX "
                          "WHERE trx_mysql_thread_id = CONNECTION_ID()")
        if rows or time.monotonic() > deadline:
            return rows


def fingerprint(conn: t.Any, db: str) -> dict[str, t.Any]:
    """Everything the server shows of this session (read first thing in a borrow)."""
    raw = conn.raw
    print_ = {"last_insert_id": _rows(raw, "SELECT LAST_INSERT_ID()")[0][0]}
    variables = _rows(raw, "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM "
                           "information_schema.SESSION_VARIABLES")
    print_["variables"] = {k: v for k, v in variables if k not in PER_CONNECTION}
    print_["user_variables"] = _rows(raw, "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM "
                                          "information_schema.USER_VARIABLES ORDER BY 1")
    print_["role_db_trx"] = _rows(raw, "SELECT CURRENT_ROLE(), DATABASE(), @@in_transaction, "
                                       f"LASTVAL({db}.fz_seq), IS_USED_LOCK('fz_lock'), "
                                       "IS_USED_LOCK('fz_hidden') = CONNECTION_ID()")
    print_["temporary"] = [_error(raw, f"SELECT 1 FROM {db}.{n} LIMIT 0") for n in TEMP_TABLES]
    print_["prepared"] = [_error(raw, f"EXECUTE {n}") for n in STATEMENTS]
    print_["handler"] = _error(raw, f"HANDLER {db}.fuzz_t READ FIRST")
    print_["locked"] = _error(raw, f"SELECT COUNT(*) FROM {db}.fuzz_other")  # 1100 if LOCKed
    # The next transaction's characteristics: access mode and isolation, as InnoDB sees them.
    print_["next_trx_write"] = _error(raw, f"INSERT INTO {db}.fuzz_ai (v) VALUES (-1)")
    print_["next_trx_isolation"] = _isolation(raw)
    _rows(raw, "ROLLBACK")
    print_["backup"] = _error(raw, "BACKUP STAGE START")
    _error(raw, "BACKUP STAGE END")
    return print_


@pytest.fixture
def fuzz_schema(admin: t.Any) -> None:
    scratch_table(admin, "fuzz_t", "id INT PRIMARY KEY")
    scratch_table(admin, "fuzz_other", "id INT PRIMARY KEY")
    scratch_table(admin, "fuzz_ai", "id INT AUTO_INCREMENT PRIMARY KEY, v INT")
    with admin.cursor() as cur:
        cur.execute("CREATE SEQUENCE IF NOT EXISTS fz_seq")
        cur.execute("CREATE OR REPLACE FUNCTION fz_hidden_lock() RETURNS INT "
                    "RETURN GET_LOCK('fz_hidden', 0)")
        cur.execute("CREATE OR REPLACE FUNCTION fz_hidden_var() RETURNS INT "
                    "BEGIN SET @fz_hidden = 1; RETURN 1; END")
        cur.execute("CREATE OR REPLACE PROCEDURE fz_proc() "
                    "BEGIN SET @fz_proc = 1; SET SESSION sql_select_limit = 3; END")
        cur.execute("XA RECOVER")
        for row in cur.fetchall():  # never leave a prepared XA transaction behind
            cur.execute(f"XA ROLLBACK '{row[3].decode()}'")


def seeds() -> t.Iterator[int]:
    budget = os.environ.get("POOLKIT_FUZZ_SECONDS")
    if os.environ.get("POOLKIT_FUZZ_SEED"):
        yield int(os.environ["POOLKIT_FUZZ_SEED"])
        return
    if not budget:
        yield from FIXED_SEEDS
        return
    deadline = time.monotonic() + float(budget)
    while time.monotonic() < deadline:
        yield random.randrange(2**32)


@pytest.mark.parametrize("reset", ["auto", "always"])
def test_next_borrower_sees_a_fresh_session(make_pool: t.Callable[..., Pool], database_url: str,
                                            fuzz_schema: None, reset: str) -> None:
    db = parse_url(database_url).database
    fresh_pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_RESET=reset)
    with fresh_pool.connection() as conn:
        fresh = fingerprint(conn, db)
    fresh_pool.close()
    for seed in seeds():
        print(f"POOLKIT_FUZZ_SEED={seed} POOLKIT_RESET={reset}")
        rng = random.Random(seed)
        pool = make_pool(POOLKIT_MAX_CONNECTIONS=1, POOLKIT_RESET=reset)
        for step in range(BORROWERS):
            actions = borrower(rng)
            with pool.connection() as conn:
                for statement in actions:
                    act(conn, statement)
            with pool.connection() as conn:
                seen = fingerprint(conn, db)
            diff = {k: (seen[k], fresh[k]) for k in fresh if seen[k] != fresh[k]}
            if "variables" in diff:
                got, want = diff["variables"]
                diff["variables"] = {k: (got.get(k), want.get(k)) for k in want
                                     if got.get(k) != want.get(k)}
            assert not diff, (f"POOLKIT_FUZZ_SEED={seed} POOLKIT_RESET={reset} step {step}: "
                              f"after {actions}: {diff}")
        pool.close()
