"""Many small statements: ``flask initdb`` batched, unbatched, and the ``mariadb`` client.

    python benchmarks/bench_batching.py [--rounds 5]

Generates a file shaped like MySQL's world database dump (``DROP/CREATE DATABASE``, ``USE``,
three InnoDB tables, then 5,302 one-row ``INSERT``s) in a temporary folder, and loads it,
alternating, with ``mariadb < file``, ``flask initdb --batch-bytes 0 -`` (one statement per
round trip) and ``flask initdb -`` (multi-statement batches, group commit). The poolkit runs go
through the real ``initdb`` command in this process (flask start-up excluded); the file is
read from standard input, so nothing is recorded between rounds. Prints medians and ratios to
the client, and the server's ``innodb_flush_log_at_trx_commit`` (it decides what a commit
costs). The database (``poolkit_bench_world``) is dropped afterwards.

The server comes from POOLKIT_DATABASE_URL (default mysql://root:@127.0.0.1:3306/test).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402

from poolkit import Poolkit  # noqa: E402
from poolkit.commands.initdb import initdb_command  # noqa: E402
from poolkit.testing import admin_connect  # noqa: E402
from poolkit.url import parse_url  # noqa: E402

DATABASE = "poolkit_bench_world"


def world_like(database: str) -> bytes:
    """A world.sql look-alike: 8 setup statements, 5,302 one-row INSERTs, 3 at the end."""
    rnd = random.Random(7)

    def word(n: int) -> str:
        return "".join(rnd.choice("abcdefghijklmnop") for _ in range(n))

    out = [f"DROP DATABASE IF EXISTS `{database}`;",
           f"CREATE DATABASE `{database}` DEFAULT CHARACTER SET utf8mb4;", f"USE `{database}`;",
           "SET NAMES utf8mb4;", "SET character_set_client = utf8mb4;",
           "CREATE TABLE `city` (`ID` int NOT NULL AUTO_INCREMENT, `Name` char(35) NOT NULL, "
           "`CountryCode` char(3) NOT NULL, `District` char(20) NOT NULL, `Population` int NOT "
           "NULL, PRIMARY KEY (`ID`), KEY `CountryCode` (`CountryCode`)) ENGINE=InnoDB;",
           "CREATE TABLE `country` (`Code` char(3) NOT NULL, `Name` char(52) NOT NULL, "
           "`Continent` char(20) NOT NULL, `Region` char(26) NOT NULL, `SurfaceArea` "
           "decimal(10,2) NOT NULL, `Population` int NOT NULL, PRIMARY KEY (`Code`)) "
           "ENGINE=InnoDB;",
           "CREATE TABLE `countrylanguage` (`CountryCode` char(3) NOT NULL, `Language` char(30) "
           "NOT NULL, `IsOfficial` enum('T','F') NOT NULL DEFAULT 'F', `Percentage` "
           "decimal(4,1) NOT NULL, PRIMARY KEY (`CountryCode`,`Language`)) ENGINE=InnoDB;"]
    out += [f"INSERT INTO `city` VALUES ({i},'{word(10)}','{word(3).upper()}','{word(8)}',"
            f"{rnd.randint(1000, 9000000)});" for i in range(1, 4080)]
    out += [f"INSERT INTO `country` VALUES ('{i:03d}','{word(12)}','Asia','{word(10)}',"
            f"{rnd.randint(1, 99999)}.00,{rnd.randint(1000, 90000000)});" for i in range(239)]
    out += [f"INSERT INTO `countrylanguage` VALUES ('{i % 239:03d}','{word(9)}{i}','F',"
            f"{rnd.randint(0, 999) / 10});" for i in range(984)]
    out += ["SET character_set_client = DEFAULT;", "COMMIT;",
            "SELECT COUNT(*) AS cities FROM city;"]
    return ("\n".join(out) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base = os.environ.get("POOLKIT_DATABASE_URL", "mysql://root:@127.0.0.1:3306/test")
    url = parse_url(base).with_database(DATABASE)
    admin = admin_connect(url.with_database(""))
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
        cur.execute("SELECT @@innodb_flush_log_at_trx_commit")
        flush = cur.fetchone()[0]
    app = Flask("poolkit_bench_batching")
    app.config["POOLKIT_DATABASE_URL"] = base.rsplit("/", 1)[0] + "/" + DATABASE
    extension = Poolkit(app)
    data = world_like(DATABASE)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "world.sql"
        path.write_bytes(data)

        def client() -> None:
            command = ["mariadb", f"--host={url.host}", f"--port={url.port}",
                       f"--user={url.user}", DATABASE]
            if url.password:
                command.insert(4, f"--password={url.password}")
            with open(path, "rb") as stdin:
                subprocess.run(command, stdin=stdin, stdout=subprocess.DEVNULL, check=True,
                               timeout=600)

        def initdb(*options: str) -> t.Callable[[], None]:
            def run() -> None:
                result = app.test_cli_runner().invoke(initdb_command, ["-q", *options, "-"],
                                                      input=data)
                assert result.exit_code == 0, result.output
            return run

        modes = {"mariadb < file": client, "initdb --batch-bytes 0": initdb("--batch-bytes", "0"),
                 "initdb (batched)": initdb()}
        times: dict[str, list[float]] = {name: [] for name in modes}
        try:
            for _ in range(args.rounds):
                for name, run in modes.items():
                    started = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - started)
        finally:
            extension.close()
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")
            admin.close()
    statements = data.count(b";\n")
    print(f"world-like file: {statements} statements, {len(data):,} bytes; "
          f"innodb_flush_log_at_trx_commit={flush}; medians of {args.rounds} rounds")
    anchor = statistics.median(times["mariadb < file"])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"  {name:24s} {median:7.3f} s  {median / anchor:5.2f}x the client")


if __name__ == "__main__":
    main()
