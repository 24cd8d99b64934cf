"""``flask initdb`` against the ``mariadb`` client and ``myloader``, side by side in one run.

    python benchmarks/bench_initdb.py --private-server [--rounds 3] [--big [--big-mb 1024]]
    python benchmarks/bench_initdb.py --url mysql://root:@127.0.0.1:3306/test

Data sets: *world* (generated like MySQL's world dump: 5,302 single-row INSERTs over 3 tables,
one statement per row, as ``mysqldump --skip-extended-insert`` writes them), *sakila* (schema +
data from ../shared/corpus/sakila) and, with ``--big``, a generated dump of extended INSERTs of
about 1 GB. Per data set and round, into a freshly dropped database, alternating the order:

* ``mariadb db < file`` (the anchor; ratios are to it);
* ``myloader --threads N`` on a ``mydumper`` dump of the same database (N = ``--jobs auto``'s);
* ``flask initdb -q FILES`` and ``flask initdb -q --jobs auto FILES``, each in a child process
  that builds the app, then times the command itself (``test_cli_runner().invoke``): Python,
  flask and app start-up are excluded, the command's own work (history, lock) is included.

Every contender runs as a child process; its peak RSS is that child's (``wait4``). Medians of
``--rounds``; the 1 GB dump runs once. Touches databases ``world``, ``sakila`` and
``poolkit_bench_big`` (use ``--private-server``: a throwaway mariadbd on a free port).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poolkit.testing import admin_connect  # noqa: E402
from poolkit.url import DatabaseURL, parse_url  # noqa: E402

# The corpus lives in /work/shared beside the repository (or beside its worktrees).
SAKILA = next((p / "shared" / "corpus" / "sakila" for p in ROOT.parents
               if (p / "shared" / "corpus" / "sakila").is_dir()), ROOT / "corpus" / "sakila")
SAKILA_FILES = [SAKILA / "sakila-schema.sql", SAKILA / "sakila-data.sql"]
TIMEOUT = 1800
GOALS = {"world": 0.70, "sakila": 0.70, "big": 0.60}

_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from flask import Flask
from poolkit import Poolkit
from poolkit.commands.initdb import initdb_command
url, mode, paths = sys.argv[2], sys.argv[3], sys.argv[4:]
app = Flask("bench_initdb")
app.config.update(POOLKIT_DATABASE_URL=url, POOLKIT_MAX_CONNECTIONS=10)
Poolkit(app)
runner = app.test_cli_runner()
args = ["-q", *(["--jobs", "auto"] if mode == "auto" else []), *paths]
started = time.perf_counter()  # Python, flask and the app are up: their start-up is excluded
result = runner.invoke(initdb_command, args)  # by object: no app discovers poolkit's own
seconds = time.perf_counter() - started
if result.exit_code:
    raise SystemExit(f"initdb failed ({result.exit_code}): {result.output[-800:]}")
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_mb": hwm / 1024}))
"""


class Server:
    """A throwaway mariadbd in a temporary folder on a free 127.0.0.1 port."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="poolkit-bench-mariadbd-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DatabaseURL:
        data = self.folder / "data"
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.folder / 'sock'}",
             f"--pid-file={self.folder / 'pid'}", f"--tmpdir={self.folder}", "--skip-log-bin",
             "--user=root",
             "--max-allowed-packet=64M"],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "log", "wb"))
        url = parse_url(f"mysql://root:@127.0.0.1:{self.port}/test")
        deadline = time.monotonic() + 60
        while True:
            try:
                con = admin_connect(url.with_database(""))
                break
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit(f"the private mariadbd did not start: "
                                     f"{(self.folder / 'log').read_text()[-500:]}") from None
                time.sleep(0.2)
        with con.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS test")
        con.close()
        return url

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _sql(url: DatabaseURL, *statements: str) -> None:
    con = admin_connect(url.with_database(""))
    try:
        with con.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        con.close()


def _counts(url: DatabaseURL, database: str) -> dict[str, int]:
    """Rows per table of *database* (poolkit's history left out): every contender must load
    the same."""
    con = admin_connect(url.with_database(""))
    try:
        with con.cursor() as cur:
            cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
                        " AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME <> 'poolkit_sql_history'",
                        (database,))
            names = [row[0] for row in cur.fetchall()]
            counts = {}
            for name in names:
                cur.execute(f"SELECT COUNT(*) FROM `{database}`.`{name}`")
                counts[name] = cur.fetchone()[0]
            return counts
    finally:
        con.close()


def _auth(url: DatabaseURL) -> list[str]:
    args = [f"--host={url.host}", f"--port={url.port}", f"--user={url.user}"]
    return [*args, f"--password={url.password}"] if url.password else args


def _hwm(pid: int) -> float:
    """VmHWM (peak resident set) of process *pid* in MB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _timed(args: list[str], stdin: t.IO[bytes] | None = None) -> tuple[float, float, bytes]:
    """Run *args*; (wall seconds, peak RSS in MB of that process, stdout).

    The peak is VmHWM polled every 20 ms (getrusage's ru_maxrss would count the parent's
    pages the child had before exec); Python children report their own at the end too.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(args, stdin=stdin, stdout=out, stderr=err)
        peak = 0.0
        deadline = time.monotonic() + TIMEOUT
        while child.poll() is None:
            peak = max(peak, _hwm(child.pid))
            if time.monotonic() > deadline:
                child.kill()
                raise SystemExit(f"{args[0]} took more than {TIMEOUT} s")
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if child.returncode:
            raise SystemExit(f"{args[0]} failed ({child.returncode}): "
                             f"{err.read().decode()[-800:]}")
        return seconds, peak, out.read()


def run_client(url: DatabaseURL, database: str, files: list[Path]) -> tuple[float, float]:
    seconds = peak = 0.0
    for path in files:
        with open(path, "rb") as stream:
            s, rss, _ = _timed(["mariadb", *_auth(url), database], stdin=stream)
        seconds += s
        peak = max(peak, rss)
    return seconds, peak


def run_poolkit(url: DatabaseURL, database: str, files: list[Path], mode: str
                ) -> tuple[float, float, dict[str, t.Any]]:
    target = f"mysql://{url.user}:{url.password}@{url.host}:{url.port}/{database}"
    _, rss, out = _timed([sys.executable, "-c", _CHILD, str(ROOT), target, mode,
                          *map(str, files)])
    report = json.loads(out)
    return report["seconds"], max(rss, report["peak_mb"]), report


def run_myloader(url: DatabaseURL, database: str, folder: Path, threads: int
                 ) -> tuple[float, float]:
    seconds, rss, _ = _timed(["myloader", *_auth(url), "-d", str(folder), "-B", database,
                              "-o", f"--threads={threads}", "-v", "1"])
    return seconds, rss


def write_world(path: Path) -> int:
    """A dump shaped like MySQL's world.sql: the database dropped and created, then per table
    DROP/CREATE, ``set autocommit=0``, one INSERT per row (4,079 cities, 239 countries, 984
    languages), ``commit``."""
    rng = random.Random(1)
    out = [b"-- MySQL dump 10.13  (generated by bench_initdb: shaped like MySQL's world)\n",
           b"/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n",
           b"/*!40101 SET NAMES utf8mb4 */;\n/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n",
           b"/*!40103 SET TIME_ZONE='+00:00' */;\n/*!40014 SET @OLD_UNIQUE_CHECKS="
           b"@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n/*!40014 SET @OLD_FOREIGN_KEY_CHECKS="
           b"@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n/*!40101 SET @OLD_SQL_MODE="
           b"@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n"
           b"SET @old_autocommit=@@autocommit;\n/*!40000 DROP DATABASE IF EXISTS `world`*/;\n"
           b"CREATE DATABASE `world` DEFAULT CHARACTER SET utf8mb4;\nUSE `world`;\n"]
    codes = [f"{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}{chr(65 + i * 7 % 26)}"
             for i in range(239)]
    tables = {
        "city": ("`ID` int NOT NULL AUTO_INCREMENT, `Name` char(35) NOT NULL DEFAULT '', "
                 "`CountryCode` char(3) NOT NULL DEFAULT '', `District` char(20) NOT NULL "
                 "DEFAULT '', `Population` int NOT NULL DEFAULT '0', PRIMARY KEY (`ID`), KEY "
                 "`CountryCode` (`CountryCode`)",
                 [f"({i},'City {i} d''Or','{rng.choice(codes)}','District {i % 97}',"
                  f"{rng.randint(1000, 9000000)})" for i in range(1, 4080)]),
        "country": ("`Code` char(3) NOT NULL DEFAULT '', `Name` char(52) NOT NULL DEFAULT '', "
                    "`Continent` enum('Asia','Europe','Africa') NOT NULL DEFAULT 'Asia', "
                    "`SurfaceArea` decimal(10,2) NOT NULL DEFAULT '0.00', `Population` int NOT "
                    "NULL DEFAULT '0', `LifeExpectancy` decimal(3,1) DEFAULT NULL, PRIMARY KEY "
                    "(`Code`)",
                    [f"('{c}','Country {c}','{rng.choice(['Asia', 'Europe', 'Africa'])}',"
                     f"{rng.randint(1, 9999999)}.00,{rng.randint(0, 10 ** 8)},"
                     f"{rng.choice(['NULL', '71.5', '80.2'])})" for c in codes]),
        "countrylanguage": ("`CountryCode` char(3) NOT NULL DEFAULT '', `Language` char(30) "
                            "NOT NULL DEFAULT '', `IsOfficial` enum('T','F') NOT NULL DEFAULT "
                            "'F', `Percentage` decimal(4,1) NOT NULL DEFAULT '0.0', PRIMARY KEY "
                            "(`CountryCode`,`Language`)",
                            [f"('{codes[i % 239]}','Language {i}','{'TF'[i % 2]}',"
                             f"{i % 1000 / 10:.1f})" for i in range(984)]),
    }
    statements = 0
    for name, (columns, rows) in tables.items():
        out.append(f"DROP TABLE IF EXISTS `{name}`;\n/*!40101 SET @saved_cs_client = "
                   f"@@character_set_client */;\n/*!50503 SET character_set_client = utf8mb4 "
                   f"*/;\nCREATE TABLE `{name}` ({columns}) ENGINE=InnoDB DEFAULT "
                   f"CHARSET=utf8mb4;\n/*!40101 SET character_set_client = @saved_cs_client "
                   f"*/;\nset autocommit=0;\n".encode())
        out.extend(f"INSERT INTO `{name}` VALUES {row};\n".encode() for row in rows)
        out.append(b"commit;\n")
        statements += len(rows)
    out.append(b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n/*!40101 SET SQL_MODE=@OLD_SQL_MODE"
               b" */;\n/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;\n"
               b"SET autocommit=@old_autocommit;\n")
    path.write_bytes(b"".join(out))
    return statements


def write_big_dump(path: Path, megabytes: int) -> int:
    """A mariadb-dump-like file: prelude, one table, ~1 MB extended INSERTs. Returns rows."""
    row_id = 0
    target = megabytes * 1024 * 1024
    with open(path, "wb") as out:
        out.write(b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump (generated by "
                  b"bench_initdb)\n/*!40101 SET NAMES utf8mb4 */;\n/*!40014 SET "
                  b"@OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n/*!40014 SET "
                  b"@OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n"
                  b"DROP TABLE IF EXISTS `big`;\nCREATE TABLE `big` (\n  `id` int NOT NULL,\n"
                  b"  `name` varchar(64) NOT NULL,\n  `body` text,\n  `bin` varbinary(16),\n"
                  b"  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n"
                  b"LOCK TABLES `big` WRITE;\n")
        written = out.tell()
        body = b"it\\'s; a \\\"dump\\\" -- not a comment # nor this /* nor */ 100% " * 2
        while written < target:
            rows = []
            size = 0
            while size < 1_000_000:
                row_id += 1
                rows.append(b"(%d,'name %d','%s',_binary '\xff\xfe\\0;%d')" % (
                    row_id, row_id, body, row_id % 97))
                size += len(rows[-1]) + 1
            statement = b"INSERT INTO `big` VALUES " + b",".join(rows) + b";\n"
            out.write(statement)
            written += len(statement)
        out.write(b"UNLOCK TABLES;\n/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;\n"
                  b"/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;\n")
    return row_id


def bench(url: DatabaseURL, name: str, database: str, files: list[Path], rounds: int,
          work: Path, jobs: int, own_database: bool) -> dict[str, t.Any]:
    """Run the four contenders *rounds* times on *files*; print and return the medians."""
    def fresh() -> None:
        _sql(url, f"DROP DATABASE IF EXISTS `{database}`")
        if own_database:
            _sql(url, f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")

    fresh()
    run_client(url, database, files)  # load once for mydumper (and to warm the server up)
    expected = _counts(url, database)
    dumped = work / f"mydumper-{name}"
    shutil.rmtree(dumped, ignore_errors=True)
    subprocess.run(["mydumper", *_auth(url), "-B", database, "-o", str(dumped), "-R", "-G",
                    "-E", "--threads", str(jobs), "-v", "1"], check=True, timeout=TIMEOUT)
    figures: dict[str, list[tuple[float, float]]] = {
        "mariadb": [], f"myloader -t {jobs}": [], "initdb": [], "initdb --jobs auto": []}
    for number in range(rounds):
        order = list(figures)
        if number % 2:
            order.reverse()
        for who in order:
            fresh()
            if who == "mariadb":
                figures[who].append(run_client(url, database, files))
            elif who.startswith("myloader"):
                _sql(url, f"CREATE DATABASE IF NOT EXISTS `{database}`")
                figures[who].append(run_myloader(url, database, dumped, jobs))
            else:
                mode = "auto" if "jobs" in who else "serial"
                seconds, rss, _ = run_poolkit(url, database, files, mode)
                figures[who].append((seconds, rss))
            got = _counts(url, database)
            if got != expected:
                raise SystemExit(f"{who} loaded {got}, the client {expected}")
        print(f"  {name} round {number + 1}: " + ", ".join(
            f"{who} {values[-1][0]:.2f} s" for who, values in figures.items()), flush=True)
    anchor = statistics.median(s for s, _ in figures["mariadb"])
    size = sum(p.stat().st_size for p in files)
    print(f"{name} ({size / 2**20:.1f} MiB, {sum(expected.values()):,} rows in "
          f"{len(expected)} tables, each contender checked; median of {rounds}; ratio to the "
          "mariadb client; "
          f"load average {os.getloadavg()[0]:.1f}):")
    table = {}
    for who, values in figures.items():
        seconds = statistics.median(s for s, _ in values)
        peak = max(r for _, r in values)
        table[who] = (seconds, peak)
        print(f"  {who:<22} {seconds:8.2f} s  {seconds / anchor:5.2f}x  peak RSS {peak:5.0f} MB")
    goal = GOALS[name]
    ours = table["initdb --jobs auto"][0] / anchor
    print(f"  goal --jobs auto <= {goal:.2f}x: {'met' if ours <= goal else 'NOT met'} "
          f"({ours:.2f}x)", flush=True)
    fresh()
    _sql(url, f"DROP DATABASE IF EXISTS `{database}`")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get(
        "POOLKIT_DATABASE_URL", "mysql://root:@127.0.0.1:3306/test"),
        help="server to load into [default: POOLKIT_DATABASE_URL, else 127.0.0.1:3306]")
    parser.add_argument("--private-server", action="store_true",
                        help="start a throwaway mariadbd on a free port instead of --url")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["world", "sakila", "big"], action="append",
                        help="run only these data sets (repeatable)")
    parser.add_argument("--big", action="store_true", help="also the ~1 GB dump (minutes)")
    parser.add_argument("--big-mb", type=int, default=1024)
    args = parser.parse_args()
    if "world" in (args.only or ["world"]) and not args.private_server and "3306" in args.url:
        print("note: world and sakila use databases of those names on the server")
    for tool in ("mariadb", "mydumper", "myloader"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install mariadb-client mydumper)")
    from poolkit.sqlimport.plan import resolve_jobs

    jobs = resolve_jobs("auto", 10)
    print(f"--jobs auto = {jobs} connections ({os.cpu_count()} cores); flask and Python "
          "start-up are excluded from poolkit's times (they are timed inside the child)")
    work = Path(tempfile.mkdtemp(prefix="poolkit-bench-"))
    try:
        with Server() if args.private_server else _Given(args.url) as url:
            only = args.only or ["world", "sakila", *(["big"] if args.big else [])]
            if "world" in only:
                write_world(work / "world.sql")
                bench(url, "world", "world", [work / "world.sql"], args.rounds, work, jobs,
                      True)
            if "sakila" in only and all(p.is_file() for p in SAKILA_FILES):
                bench(url, "sakila", "sakila", SAKILA_FILES, args.rounds, work, jobs, True)
            if "big" in only:
                started = time.perf_counter()
                rows = write_big_dump(work / "big.sql", args.big_mb)
                print(f"generated big.sql: {rows:,} rows in {time.perf_counter() - started:.0f}"
                      " s", flush=True)
                bench(url, "big", "poolkit_bench_big", [work / "big.sql"], 1, work, jobs,
                      True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Given:
    def __init__(self, url: str) -> None:
        self.url = parse_url(url)

    def __enter__(self) -> DatabaseURL:
        return self.url

    def __exit__(self, *exc: object) -> None:
        pass


if __name__ == "__main__":
    main()
