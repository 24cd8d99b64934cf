"""A parallel loader on connections of a poolkit pool (``flask initdb --jobs``)."""

from __future__ import annotations

import contextlib
import typing as t

from .apply import BATCH_BYTES
from .files import SqlFile
from .history import quote_ident
from .jobs import ParallelResult
from .parallel import Loader, OnRows, OnStatement
from .plan import SESSION, Step
from .session import DEFAULT_CHARSET, import_session, kill_running_statement, max_allowed_packet
from .statement import Statement

if t.TYPE_CHECKING:
    from ..pool.pool import Pool


class PooledLoader:
    """A :class:`Loader` on *jobs* connections of *pool* (import sessions, opened on first
    use), each file starting in *database* with *charset*, as a serial load does; closed with
    the loader. *batch_bytes* (None: apply's) is kept below the server's ``max_allowed_packet``;
    0 sends one statement per round trip."""

    def __init__(self, pool: Pool, jobs: int, database: str, *, charset: str = DEFAULT_CHARSET,
                 comments: bool = False, batch_bytes: int | None = None,
                 on_statement: OnStatement | None = None, on_rows: OnRows | None = None
                 ) -> None:
        self.pool = pool
        self.jobs = jobs
        self.database = database
        self.charset = charset
        self.comments = comments
        self.batch_bytes = batch_bytes
        self.on_statement = on_statement
        self.on_rows = on_rows
        self.stack = contextlib.ExitStack()
        self.loader: Loader | None = None

    def __enter__(self) -> PooledLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def load(self, file: SqlFile, on_progress: t.Callable[[int], None] | None = None
             ) -> ParallelResult:
        """Load *file* on the connections (see :meth:`Loader.load`)."""
        if self.loader is None:
            raws = []
            for _ in range(self.jobs):
                raw = self.stack.enter_context(import_session(self.pool.connection(),
                                                              self.charset))
                raws.append(raw)
            batch = BATCH_BYTES if self.batch_bytes is None else self.batch_bytes
            batch = min(batch, max_allowed_packet(raws[0]) // 2)
            settings = self.pool.settings
            self.loader = Loader(raws, kill=lambda raw: kill_running_statement(settings, raw),
                                 on_statement=self.on_statement, on_rows=self.on_rows,
                                 batch_bytes=batch, comments=self.comments)
        for sql in (f"USE {quote_ident(self.database)}", f"SET NAMES {self.charset}"):
            stmt = Statement(sql.encode(), 0, 0, 0, file.path)
            self.loader.append_log(Step(stmt, -1, SESSION, 0))
        return self.loader.load(file, on_progress=on_progress)
