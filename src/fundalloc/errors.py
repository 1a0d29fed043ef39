"""One base exception, typed subclasses, messages that say what was expected and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


class FundallocError(Exception):
    """Base class of every error fundalloc raises on purpose."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (file, row or key) and what."""

    source: str
    where: str
    message: str

    def __str__(self) -> str:
        place = f"{self.source}: {self.where}" if self.where else self.source
        return f"{place}: {self.message}"


class InputError(FundallocError):
    """Invalid input. Carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem):
        self.problems: tuple[Problem, ...] = (
            (problems,) if isinstance(problems, Problem) else tuple(problems)
        )
        lines = [str(p) for p in self.problems]
        head = "invalid input" if len(lines) == 1 else f"invalid input ({len(lines)} problems)"
        super().__init__(head + ":\n  " + "\n  ".join(lines))


class SolverError(FundallocError):
    """The solver failed in a way that leaves no usable plan."""

    exit_code = 3


class VerificationError(FundallocError):
    """A plan breaks a hard constraint of the model."""

    exit_code = 1


class Collector:
    """Collects problems at the edge so that one error reports them all."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, source: str, where: str, message: str) -> None:
        self.problems.append(Problem(source, where, message))

    def extend(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems.extend(problems)

    def raise_if_any(self) -> None:
        if self.problems:
            raise InputError(self.problems)

    def __bool__(self) -> bool:
        return bool(self.problems)
