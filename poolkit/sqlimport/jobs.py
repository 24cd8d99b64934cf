"""The parallel loader's bookkeeping: jobs, the units they belong to, and a file's result."""

from __future__ import annotations

import collections
import typing as t
from dataclasses import dataclass, field

from .coalesce import Candidate
from .files import SqlFile
from .outcome import StatementError
from .plan import Step
from .statement import Statement

if t.TYPE_CHECKING:
    from .parallel import Worker


@dataclass(eq=False)
class Job:
    """Consecutive statements of one unit, run together on one connection."""

    unit: Unit
    kind: str
    steps: list[Step]
    log_at: int
    nbytes: int = 0
    #: Per step: the INSERT it is when it may be coalesced with its neighbours (whether it
    #: is, the server decides when the job is sent), else None.
    prefixes: list[Candidate | None] = field(default_factory=list)


@dataclass(eq=False)
class Unit:
    """A table's statements (or a run of barriers) and where its jobs stand."""

    id: int
    kind: str  # "table" or BARRIER
    first: Step
    fence: bool
    #: The length of the session log when the unit began.
    log_at: int = 0
    jobs: collections.deque[Job] = field(default_factory=collections.deque)
    running: list[Job] = field(default_factory=list)
    closed: bool = False
    owner: Worker | None = None
    #: A job of it failed or was stopped: the step a re-run resumes at.
    broken: Step | None = None

    @property
    def alone(self) -> bool:
        return self.kind != "table"

    @property
    def done(self) -> bool:
        return self.closed and not self.jobs and not self.running and self.broken is None

    def resume_step(self) -> Step:
        """Where a serial re-run picks this unit up: a barrier run, or a data unit (its rows
        run in order on one connection, and cannot run twice), at its first statement not
        run; a table unit at its start (``DROP TABLE IF EXISTS``: it can run again)."""
        if not self.alone and not self.first.data:
            return self.first
        if self.broken is not None:
            return self.broken
        return self.jobs[0].steps[0] if self.jobs else self.first


@dataclass
class ParallelResult:
    """What a parallel load of one file did."""

    file: SqlFile
    statements: int = 0
    seconds: float = 0.0
    errors: list[StatementError] = field(default_factory=list)
    interrupted: bool = False
    #: Where a serial re-run may resume (None: every statement ran), and how many statements
    #: come before it; every one of those ran.
    resume: Statement | None = None
    resume_index: int = 0
    #: False when statements after :attr:`resume` already ran and cannot run twice.
    exact: bool = True
    jobs: int = 0

    @property
    def ok(self) -> bool:
        """True when every statement ran."""
        return not self.errors and not self.interrupted
