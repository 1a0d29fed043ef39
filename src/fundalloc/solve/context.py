"""What every phase of a solve shares: the instance, the options, the solver, the clock (timings
and the safety stop), the work budget and the statistics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from dataclasses import replace

from ..backends import Backend, Solution, SolveOptions, SolveStatus
from ..formulation import Problem
from ..instance import Instance
from .options import PlanOptions

Progress = Callable[[str], None]


class Clock:
    """Phase timings, progress messages, and the safety stop.

    The clock never decides what the search does (the work budget does); it only stops a solve
    that runs past ``time_limit``, and a plan so stopped says so in its status."""

    def __init__(self, time_limit: float, progress: Progress | None = None):
        self.timings: dict[str, float] = {}
        self.progress = progress
        self.start = time.perf_counter()
        self.deadline = self.start + time_limit
        self._t = self.start
        self.stopped = False  # set when the safety stop cut something short

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + (now - self._t)
        self._t = now

    def say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)

    def remaining(self) -> float:
        """Seconds to the safety stop (a solver's own time limit: never reached on a normal run)."""
        return max(0.0, self.deadline - time.perf_counter())

    def expired(self) -> bool:
        if time.perf_counter() >= self.deadline:
            self.stopped = True
        return self.stopped


class Work:
    """A deterministic budget: units of work (candidate moves evaluated, simplex iterations,
    branch-and-bound nodes). Every heuristic charges what it did; none looks at the clock."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.used = 0
        self.by: dict[str, int] = {}

    def charge(self, what: str, units: int) -> None:
        units = int(units)
        self.used += units
        self.by[what] = self.by.get(what, 0) + units

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit


@dataclass
class Context:
    inst: Instance  # the instance the LPs and MIPs see (the active obligor rows only)
    full: Instance  # every row: what judges a whole-loan plan
    options: PlanOptions
    backend: Backend
    clock: Clock
    work: Work
    stats: dict[str, float] = field(default_factory=dict)

    def count(self, key: str, value: float = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + value

    def solve(self, problem: Problem, options: SolveOptions = SolveOptions()) -> Solution:
        """Every LP and MIP of a solve goes through here: the solver's time limit is what is left
        to the safety stop (at least a second, so that a last LP can still finish), and an answer
        the time limit cut short marks the solve as stopped, whichever phase asked for it."""
        sol = self.backend.solve(problem, replace(options, time_limit=max(self.clock.remaining(), 1.0)))
        if sol.status == SolveStatus.TIME_LIMIT:
            self.clock.stopped = True
        return sol
