"""A seeded generator of SQL files from the constructs that decide whether ``flask initdb``
gives the client's database: server-numbered and explicit ids, sequences, InnoDB / MyISAM /
Aria targets, triggers into other tables, user variables and functions in rows and in
``SET``, ``SET STATEMENT … FOR``, ``sql_mode`` changes and version comments, the file's own
transactions and ``autocommit``, temporary tables, subqueries and ``INSERT … SELECT``, one- and
multi-table ``LOCK TABLES``, ``DELIMITER`` blocks, client commands, comments holding quotes,
binary and latin1 literals, control bytes in comments, and a failing statement at a random
place (with the fix that makes it load)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

ENGINES = ("InnoDB", "InnoDB", "MyISAM", "Aria")


@dataclass
class Generated:
    """A file, its fixed version (None: nothing fails), and what it was made of."""

    sql: bytes
    fixed: bytes | None
    dump: bool
    parts: list[str] = field(default_factory=list)


@dataclass
class _Table:
    name: str
    engine: str
    auto: bool
    rows: int = 0
    next_id: int = 1


class Grammar:
    """``Grammar(seed).file()``: one file; the same seed, the same file."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lines: list[bytes] = []
        self.parts: list[str] = []
        self.tables: list[_Table] = []
        self.failing: tuple[int, bytes] | None = None  # line index, its fixed text
        self.strict = True
        self.counter = False  # @n defined
        self.sequence = False

    def _add(self, sql: str | bytes, part: str | None = None) -> None:
        self.lines.append(sql.encode("utf-8") if isinstance(sql, str) else sql)
        if part is not None and part not in self.parts:
            self.parts.append(part)

    def file(self) -> Generated:
        rng = self.rng
        dump = rng.random() < 0.5
        if dump:
            self._add("-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu")
            self._add("/*!40101 SET NAMES utf8mb4 */;")
            self._add("/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, "
                      "FOREIGN_KEY_CHECKS=0 */;")
            self._add("/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, "
                      "SQL_MODE='NO_AUTO_VALUE_ON_ZERO,STRICT_TRANS_TABLES' */;", "dump")
        self._prelude()
        for number in range(rng.randint(1, 3)):
            self._table(f"t{number}", dump)
        for _ in range(rng.randint(2, 6)):
            rng.choice([self._rows, self._rows, self._extra, self._session, self._lock_two,
                        self._transaction, self._routine, self._client])()
        if dump:
            self._add("/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;")
            self._add("/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;")
        if rng.random() < 0.3:
            self._fail()
        sql = b"\n".join(self.lines) + b"\n"
        fixed = None
        if self.failing is not None:
            lines = list(self.lines)
            lines[self.failing[0]] = self.failing[1]
            fixed = b"\n".join(lines) + b"\n"
        return Generated(sql, fixed, dump, self.parts)

    # -- pieces -----------------------------------------------------------------------------
    def _prelude(self) -> None:
        rng = self.rng
        if rng.random() < 0.3:
            self._add(rng.choice(["-- Don't edit: generated", "# it's a 'quoted' comment",
                                  "/* a comment's quote */ SELECT 1;"]), "comment quotes")
        if rng.random() < 0.2:
            self._add(b"-- control \x01 byte in a comment", "control byte")
        if rng.random() < 0.3:
            self.strict = rng.random() < 0.5
            self._add(f"SET sql_mode='{'STRICT_TRANS_TABLES' if self.strict else ''}';",
                      "sql_mode")
        if rng.random() < 0.2:
            self._add("SET STATEMENT sql_mode='' FOR SELECT 1;", "SET STATEMENT")
        if rng.random() < 0.2:
            self._add("/*!110000 SET sql_mode='' */;", "version comment")
        if rng.random() < 0.3:
            self._add("SET @n := 0;", "user variable")
            self.counter = True
        if rng.random() < 0.2:
            self._add("CREATE SEQUENCE s;", "sequence")
            self.sequence = True

    def _table(self, name: str, dump: bool) -> None:
        rng = self.rng
        table = _Table(name, rng.choice(ENGINES), rng.random() < 0.5)
        key = "`id` int NOT NULL AUTO_INCREMENT" if table.auto else "`id` int NOT NULL"
        if dump:
            self._add(f"DROP TABLE IF EXISTS `{name}`;")
        self._add(f"CREATE TABLE `{name}` ({key}, `v` varchar(6), `n` int, PRIMARY KEY (`id`))"
                  f" ENGINE={table.engine};", f"engine {table.engine}")
        self.tables.append(table)
        if rng.random() < 0.25:
            self._add(f"CREATE TABLE IF NOT EXISTS `{name}_log` (`id` int) ENGINE=MyISAM;")
            self._add(f"CREATE TRIGGER `{name}_ai` AFTER INSERT ON `{name}` FOR EACH ROW "
                      f"INSERT INTO `{name}_log` VALUES (NEW.id);", "trigger")
        locked = dump and rng.random() < 0.7
        if locked:
            self._add(f"LOCK TABLES `{name}` WRITE;", "lock")
        self._rows(table)
        if locked:
            self._add("UNLOCK TABLES;")

    def _value(self, table: _Table) -> tuple[str, str]:
        """(the id value, the n value) of a row."""
        rng = self.rng
        if table.auto and rng.random() < 0.5:
            ident = "NULL"
        else:
            ident = str(table.next_id + rng.randint(0, 2))
        choices = ["1", "NULL", "0"]
        if self.counter:
            choices.append("@n := @n + 1")
        if self.sequence:
            choices.append("NEXTVAL(s)")
        choices += ["LENGTH('x')", f"(SELECT COUNT(*) FROM `{self.tables[0].name}`)"]
        return ident, rng.choice(choices)

    def _rows(self, table: _Table | None = None) -> None:
        rng = self.rng
        table = table or rng.choice(self.tables)
        for _ in range(rng.randint(3, 25)):
            ident, n = self._value(table)
            if ident != "NULL":
                table.next_id = max(table.next_id, int(ident) + 1)
            text = rng.choice(["'a'", "'b''c'", "'d\\'e'", "_binary '\x02\xff'", "'caf\xe9'",
                               "NULL"])
            row = f"INSERT INTO `{table.name}` VALUES ({ident}, {text}, {n});"
            if ident == "NULL" and rng.random() < 0.5:
                row = f"INSERT INTO `{table.name}` (`v`, `n`) VALUES ({text}, {n});"
            self._add(row.encode("latin-1"), "rows")
            table.rows += 1

    def _extra(self) -> None:
        rng = self.rng
        table = rng.choice(self.tables)
        self._add(rng.choice([
            f"INSERT INTO `{table.name}` (`v`, `n`) SELECT 'sel', COUNT(*) FROM "
            f"`{self.tables[0].name}`;",
            f"UPDATE `{table.name}` SET `n` = `n` + 1 WHERE `id` < 3;",
            f"SET STATEMENT max_statement_time=5 FOR UPDATE `{table.name}` SET `n` = 7 "
            f"WHERE `id` = 1;",
            "CREATE TEMPORARY TABLE tmp (id int); INSERT INTO tmp VALUES (1);",
            f"SET @last = (SELECT MAX(`id`) FROM `{table.name}`);",
            f"SELECT COUNT(*) INTO @c FROM `{table.name}`;",
            f"DELETE FROM `{table.name}` WHERE `id` = 2;",
        ]), "extra")

    def _session(self) -> None:
        self.strict = self.rng.random() < 0.5
        self._add(self.rng.choice([
            f"SET sql_mode = '{'STRICT_ALL_TABLES' if self.strict else 'NO_ENGINE_SUBSTITUTION'}';",
            "SET @x = 5;",
            "SET NAMES utf8mb4;",
        ]), "session SET")

    def _lock_two(self) -> None:
        if len(self.tables) < 2:
            return
        a, b = self.tables[0], self.tables[1]
        self._add(f"LOCK TABLES `{a.name}` WRITE, `{b.name}` WRITE;", "multi-table lock")
        self._rows(a)
        self._rows(b)
        self._add("UNLOCK TABLES;")

    def _transaction(self) -> None:
        rng = self.rng
        opening = rng.choice(["START TRANSACTION;", "BEGIN;", "SET autocommit=0;"])
        self._add(opening, "own transaction")
        self._rows()
        if rng.random() < 0.8:
            self._add(rng.choice(["COMMIT;", "ROLLBACK;"]))
        if opening.startswith("SET") and rng.random() < 0.7:
            self._add("SET autocommit=1;")

    def _routine(self) -> None:
        table = self.rng.choice(self.tables)
        self._add("DELIMITER //")
        self._add(f"CREATE PROCEDURE bump() BEGIN UPDATE `{table.name}` SET `n` = 1; "
                  f"SELECT 1; END//")
        self._add("DELIMITER ;")
        self._add("CALL bump();", "DELIMITER block")
        self._add("DROP PROCEDURE bump;")

    def _client(self) -> None:
        self._add(self.rng.choice(["go", "ego", "status;", "print"]), "client command")

    def _fail(self) -> None:
        """Make one row fail (a value too long in strict mode, else a duplicate key)."""
        rows = [i for i, line in enumerate(self.lines)
                if line.startswith(b"INSERT INTO `t") and b" VALUES (" in line
                and b"NEXTVAL" not in line and b"(`v`" not in line]
        if not rows:
            return
        at = self.rng.choice(rows)
        line = self.lines[at]
        self.failing = (at, line)
        cut = line.index(b" VALUES (") + len(b" VALUES (")
        rest = line[cut:].split(b", ", 1)[1]
        if self.strict:
            self.lines[at] = line[:cut] + b"9999, 'toolong', " + rest.split(b", ", 1)[1]
        else:
            self.lines[at] = line[:cut] + b"1, " + rest
        self.parts.append("failure")
