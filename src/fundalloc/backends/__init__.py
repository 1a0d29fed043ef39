"""Solver backends. Each translates a :class:`~fundalloc.formulation.Problem` in bulk calls and
maps the solver's native statuses to :class:`SolveStatus`. No backend knows what a loan is."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np

from ..errors import InputError, Problem as InputProblem
from ..formulation import Problem


class SolveStatus(StrEnum):
    OPTIMAL = "optimal"  # proven optimal (MIP: within the requested gap)
    TARGET = "target"  # MIP stopped because its incumbent reached the caller's objective target
    WORK_LIMIT = "work_limit"  # stopped at its node or iteration budget; x is the best solution found, if any
    TIME_LIMIT = "time_limit"  # stopped at the time limit (the safety stop); x is the best found, if any
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    ERROR = "error"


@dataclass(frozen=True, eq=False)
class SolveOptions:
    time_limit: float = 60.0
    mip_rel_gap: float = 1e-7
    threads: int = 1
    verbose: bool = False
    basis: "Basis | None" = None  # a starting basis (LP only; backends may ignore it)
    objective_target: float | None = None  # MIP: stop once an incumbent is at or below this
    start: np.ndarray | None = None  # MIP: a feasible point to start from (backends may ignore it)
    node_limit: int | None = None  # MIP: branch-and-bound nodes at most (a deterministic budget)


@dataclass(frozen=True, eq=False)
class Basis:
    """Simplex basis statuses: 0 at lower, 1 basic, 2 at upper, 3 zero (free), 4 nonbasic."""

    col: np.ndarray  # int8 per column
    row: np.ndarray  # int8 per row


@dataclass(frozen=True, eq=False)
class Solution:
    status: SolveStatus
    x: np.ndarray | None
    objective: float
    bound: float  # best proven lower bound (MIP dual bound; the objective for an optimal LP)
    row_dual: np.ndarray | None  # d objective / d row bound (LP only)
    seconds: float
    solver: str
    version: str
    detail: dict = field(default_factory=dict)
    basis: Basis | None = None

    @property
    def has_solution(self) -> bool:
        return self.x is not None


class Backend(Protocol):
    name: str

    def version(self) -> str: ...

    def solve(self, problem: Problem, options: SolveOptions) -> Solution: ...


BACKENDS = ("highs", "ortools", "pulp")


def get_backend(name: str) -> Backend:
    if name == "highs":
        from .highs import HighsBackend
        return HighsBackend()
    if name == "ortools":
        from .ortools import OrtoolsBackend
        return OrtoolsBackend()
    if name == "pulp":
        from .pulp import PulpBackend
        return PulpBackend()
    raise InputError(InputProblem("options", "solver", f"unknown solver '{name}'; choose one of {', '.join(BACKENDS)}"))
