"""``--jobs``: dump-shaped files whose rows a parallel load must not reorder, split or hold up.
Each is loaded with the client and with a real ``flask initdb --jobs auto`` process (bounded in
time: a hang is a difference) and the databases compared."""

from __future__ import annotations

import pytest

from .conftest import Twin
from .twin import rows

HEAD = (b"-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)\n"
        b"/*!40101 SET NAMES utf8mb4 */;\n"
        b"/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n"
        b"/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n")
TAIL = (b"/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n"
        b"/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;\n")


def table(name: str, create: str, inserts: list[str]) -> bytes:
    body = (f"DROP TABLE IF EXISTS `{name}`;\nCREATE TABLE `{name}` ({create}) ENGINE=InnoDB;\n"
            f"LOCK TABLES `{name}` WRITE;\n" + "".join(i + ";\n" for i in inserts)
            + "UNLOCK TABLES;\n")
    return body.encode()


def parallel_same(twin: Twin, body: bytes) -> None:
    twin.write(HEAD + body + TAIL)
    client = twin.client()
    loaded = twin.process("--jobs", "auto", timeout=60)
    assert loaded.code != -9, "flask initdb --jobs auto did not finish in 60 s"
    assert (loaded.code == 0) == (client.code == 0), (client.output, loaded.output)
    found = twin.differences()
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("row", ["INSERT INTO `customer` (`name`) VALUES ('c{i}')",
                                 "INSERT INTO `customer` VALUES (NULL, 'c{i}')",
                                 "INSERT INTO `customer` VALUES (0, 'c{i}')"])
def test_server_numbered_ids_keep_file_order(twin: Twin, row: str) -> None:
    customers = [row.format(i=i) for i in range(6000)]  # ~300 KB: several jobs of rows
    if "(0," in row:  # 0 numbers the row unless NO_AUTO_VALUE_ON_ZERO (the dump's prelude)
        customers.insert(0, "SET sql_mode = ''")
    orders = [f"INSERT INTO `orders` VALUES ({i}, {1 + i % 6000})" for i in range(1500)]
    parallel_same(twin, table("customer", "`id` int NOT NULL AUTO_INCREMENT, `name` "
                              "varchar(10), PRIMARY KEY (`id`)", customers)
                  + table("orders", "`id` int NOT NULL, `customer_id` int, PRIMARY KEY (`id`)",
                          orders))
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM orders o JOIN customer c ON "
                "c.id = o.customer_id AND c.name = CONCAT('c', o.id % 6000)") == [(1500,)]


def test_a_user_variable_counting_rows(twin: Twin) -> None:
    counted = [f"INSERT INTO `t` VALUES ({k}, @n := @n + 1)" for k in range(3000)]
    parallel_same(twin, b"SET @n := 0;\n" + table("t", "`k` int NOT NULL, `n` int, "
                                                   "PRIMARY KEY (`k`)", counted))
    assert rows(twin.initdb_url, "SELECT COUNT(DISTINCT n) FROM t") == [(3000,)]


def test_rows_looking_up_another_table(twin: Twin) -> None:
    people = [f"INSERT INTO `person` VALUES ({i}, 'p{i}')" for i in range(300)]
    lookups = [f"INSERT INTO `visit` VALUES ({i}, (SELECT id FROM person WHERE name = "
               f"'p{i % 300}'))" for i in range(2000)]
    parallel_same(twin, table("person", "`id` int NOT NULL, `name` varchar(10), "
                              "PRIMARY KEY (`id`)", people)
                  + table("visit", "`id` int NOT NULL, `person_id` int, PRIMARY KEY (`id`)",
                          lookups))
    assert rows(twin.initdb_url, "SELECT COUNT(*) FROM visit WHERE person_id IS NULL") == [(0,)]


def test_a_lock_spanning_two_tables(twin: Twin) -> None:
    body = (b"DROP TABLE IF EXISTS `a`;\nCREATE TABLE `a` (`id` int NOT NULL PRIMARY KEY);\n"
            b"DROP TABLE IF EXISTS `b`;\nCREATE TABLE `b` (`id` int NOT NULL PRIMARY KEY);\n"
            b"LOCK TABLES `a` WRITE, `b` WRITE;\n"
            + b"".join(b"INSERT INTO `a` VALUES (%d);\nINSERT INTO `b` VALUES (%d);\n" % (i, i)
                       for i in range(500)) + b"UNLOCK TABLES;\n")
    parallel_same(twin, body)


def test_a_duplicate_row_stops_at_its_line_every_time(twin: Twin) -> None:
    items = [f"INSERT INTO `items` VALUES ({i}, 'x')" for i in range(4000)]
    items[2500] = "INSERT INTO `items` VALUES (7, 'dup')"
    others = [f"INSERT INTO `other` VALUES ({i})" for i in range(4000)]
    body = HEAD + table("items", "`id` int NOT NULL, `v` varchar(5), PRIMARY KEY (`id`)",
                        items) + table("other", "`id` int NOT NULL PRIMARY KEY", others) + TAIL
    twin.write(body)
    line = body[:body.index(b"VALUES (7, 'dup')")].count(b"\n") + 1
    for _ in range(5):
        loaded = twin.process("--jobs", "auto", "--force", timeout=60)
        assert loaded.code == 1, loaded.output
        assert f"1.sql:{line}: ERROR 1062" in loaded.output, loaded.output


def test_a_user_variable_counted_across_two_tables_without_keys(twin: Twin) -> None:
    # Found by the differential tester: rows kept in order on each table's connection still
    # counted on their own connection's @n.
    first = [f"INSERT INTO `a` VALUES ({k}, @n := @n + 1)" for k in range(400)]
    second = [f"INSERT INTO `b` VALUES ({k}, @n := @n + 1)" for k in range(400)]
    parallel_same(twin, b"SET @n := 0;\n" + table("a", "`k` int, `n` int", first)
                  + table("b", "`k` int, `n` int", second))
    assert rows(twin.initdb_url, "SELECT MAX(n) FROM b") == [(800,)]


def test_a_data_unit_that_fails_resumes_at_its_failing_row(twin: Twin) -> None:
    # Found by the differential tester: rows after a barrier open a data unit; when one of
    # them failed, the record resumed at the unit's first row, which had run: a 1062 on rerun.
    rows_ = [f"INSERT INTO `t` VALUES ({i}, 'v')" for i in range(200)]
    rows_[120] = "INSERT INTO `t` VALUES (5, 'dup')"
    body = (HEAD + b"DROP TABLE IF EXISTS `t`;\n"
            b"CREATE TABLE `t` (`id` int NOT NULL PRIMARY KEY, `v` varchar(3)) ENGINE=InnoDB;\n"
            b"CREATE TABLE IF NOT EXISTS `other` (`id` int) ENGINE=MyISAM;\n"
            + "".join(r + ";\n" for r in rows_).encode() + TAIL)
    twin.write(body)
    first = twin.process("--jobs", "auto")
    assert first.code == 1 and "ERROR 1062" in first.output, first.output
    twin.write(body.replace(b"(5, 'dup')", b"(120, 'v')"))
    again = twin.process("--jobs", "auto")
    assert again.code == 0, again.output
    assert twin.client().code == 0
    found = twin.differences()
    assert found == [], "\n".join(found)
