"""The differential tester: generated files (:mod:`.grammar`) loaded with ``mariadb < file`` and
with real ``flask initdb`` processes — serial (``--batch-bytes 0``), default, ``--jobs auto``,
and fail -> fix -> resume — into fresh databases, compared table by table (rows in key order,
SHOW CREATE with AUTO_INCREMENT, sequences), routines, triggers and exit codes. A load that
does not finish in :data:`RUN_SECONDS` is a difference.

Without ``POOLKIT_FUZZ_SECONDS`` (make test, CI) the fixed seeds run; with it (make fuzz)
random seeds run until the budget is spent, each printed so that a failure can be replayed
with ``POOLKIT_FUZZ_SEED=<seed>``. Every difference found becomes a minimal test in
test_equivalence.py / test_jobs_equivalence.py.
"""

from __future__ import annotations

import os
import random
import re
import time
import typing as t
from pathlib import Path

import pytest

from .grammar import Grammar
from .twin import client_load, differences, has_client, initdb_process, snapshot

pytestmark = pytest.mark.fuzz

#: Seeds run by make test and CI (about 5 s each).
FIXED_SEEDS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233)
RUN_SECONDS = 60.0
MODES = (("serial", ("--batch-bytes", "0")), ("default", ()), ("jobs", ("--jobs", "auto")))


def _seeds() -> t.Iterator[int]:
    if os.environ.get("POOLKIT_FUZZ_SEED"):
        yield int(os.environ["POOLKIT_FUZZ_SEED"])
        return
    budget = os.environ.get("POOLKIT_FUZZ_SECONDS")
    if not budget:
        yield from FIXED_SEEDS
        return
    deadline = time.monotonic() + float(budget)
    rng = random.Random()
    while time.monotonic() < deadline:
        yield rng.randrange(1 << 31)


def _client_line(output: str) -> int | None:
    """The line of the client's first error (``ERROR 1062 (23000) at line 12: …``)."""
    found = re.search(r"^ERROR \d+ \(\w+\) at line (\d+)", output, re.M)
    return int(found.group(1)) if found else None


def _load(url: str, folder: Path, sql: bytes, *args: str) -> tuple[int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "1.sql").write_bytes(sql)
    done = initdb_process(url, folder, *args, timeout=RUN_SECONDS)
    return done.code, done.output


def check_seed(seed: int, make_database: t.Callable[[], str], tmp: Path) -> list[str]:
    """Every difference between the client and initdb on the file of *seed*."""
    made = Grammar(seed).file()
    print(f"fuzz seed {seed}: {', '.join(made.parts)}")
    found: list[str] = []
    source = tmp / f"{seed}.sql"
    source.write_bytes(made.sql)
    reference = make_database()
    client = client_load(reference, source, timeout=RUN_SECONDS)
    expected = snapshot(reference)
    for mode, args in MODES:
        url = make_database()
        code, output = _load(url, tmp / f"{seed}-{mode}" / "sql", made.sql, *args)
        if code == -9:
            found.append(f"{mode}: did not finish in {RUN_SECONDS:g} s")
            continue
        if (code == 0) != (client.code == 0):
            found.append(f"{mode}: exit {code}, client {client.code}: {output[-300:]}")
        elif code != 0 and mode == "jobs":
            # A parallel load that fails has run later tables' units too (a rerun resumes
            # and makes it whole, see _resume): the failure must be the client's, at its line.
            line = _client_line(client.output)
            if line is not None and f"1.sql:{line}: ERROR" not in output:
                found.append(f"{mode}: not the client's error (line {line}): {output[-300:]}")
            continue
        found += [f"{mode}: {line}" for line in differences(expected, snapshot(url))]
    if made.fixed is not None:
        found += _resume(seed, made.sql, made.fixed, make_database, tmp)
        found += _resume(seed, made.sql, made.fixed, make_database, tmp, "--jobs", "auto")
    return found


def _resume(seed: int, sql: bytes, fixed: bytes, make_database: t.Callable[[], str],
            tmp: Path, *args: str) -> list[str]:
    """fail -> fix -> resume (both runs with *args*) against a clean client load of the
    fixed file."""
    name = "resume" + "".join(args).replace("-", "")
    source = tmp / f"{seed}-fixed.sql"
    source.write_bytes(fixed)
    reference = make_database()
    client = client_load(reference, source, timeout=RUN_SECONDS)
    url = make_database()
    folder = tmp / f"{seed}-{name}" / "sql"
    first, _ = _load(url, folder, sql, *args)
    code, output = _load(url, folder, fixed, *args)
    if -9 in (first, code):
        return [f"{name}: did not finish"]
    if first == 0:  # nothing failed (a non-strict mode truncated the value): no resume
        return []
    if first != 0 and code != 0 and "cannot resume" in output and "--force" in output:
        return []  # refused in one line: the skipped statements built session state
    found = []
    if (code == 0) != (client.code == 0):
        found.append(f"{name}: exit {code}, client {client.code}: {output[-300:]}")
    elif code != 0 and args:  # the fixed file fails too, in parallel: as in check_seed
        line = _client_line(client.output)
        if line is not None and f"1.sql:{line}: ERROR" not in output:
            found.append(f"{name}: not the client's error (line {line}): {output[-300:]}")
        return found
    found += [f"{name}: {line}" for line in differences(snapshot(reference), snapshot(url))]
    return found


def test_initdb_loads_what_the_client_loads(make_database: t.Callable[[], str],
                                            tmp_path: Path) -> None:
    if not has_client():
        pytest.fail("the mariadb client is not installed")
    failures = []
    for seed in _seeds():
        found = check_seed(seed, make_database, tmp_path)
        if found:
            failures.append(f"seed {seed} (POOLKIT_FUZZ_SEED={seed}):\n  " + "\n  ".join(found))
    assert not failures, "\n".join(failures)
