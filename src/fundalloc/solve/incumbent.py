"""The best whole-loan plan so far, and the one door every heuristic offers its plans through."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .rows import TOL, Rows, objective


@dataclass
class Offer:
    source: str
    objective: float
    accepted: bool


@dataclass
class Incumbent:
    """Keeps the cheapest plan that holds every hard row (checked exactly, row by row).

    ``offer`` is the only way in: a plan that breaks a row, or is not cheaper than the one held
    (by more than a relative 1e-12), is refused. Ties keep the earlier plan, so the result does not
    depend on which heuristic happens to find an equal plan later."""

    rows: Rows
    lower_bound: float
    say: object = None  # progress messages (a callable), optional
    route: np.ndarray | None = None
    objective: float = float("inf")
    source: str = ""
    history: list[Offer] = field(default_factory=list)

    def offer(self, route: np.ndarray, source: str, value: float | None = None) -> bool:
        """Take ``route`` if it holds every hard row and is cheaper. ``value``: its objective,
        when the caller computed it (checked against a fresh evaluation all the same)."""
        if len(self.rows.broken(route, TOL)):
            self.history.append(Offer(source, float("nan"), False))
            return False
        obj = objective(self.rows.inst, route)
        better = obj < self.objective - 1e-12 * max(abs(self.objective), 1.0) if np.isfinite(self.objective) else True
        self.history.append(Offer(source, obj, bool(better)))
        if better:
            self.route, self.objective, self.source = route.copy(), obj, source
        if self.say is not None:
            self.say(f"{source}: objective {obj:,.2f}{' (kept)' if better else ''}, best gap {self.gap():.2e}")
        return bool(better)

    def gap(self) -> float:
        if self.route is None:
            return float("inf")
        lb = self.lower_bound
        return (self.objective - lb) / abs(lb) if abs(lb) > 1e-12 else (0.0 if abs(self.objective) < 1e-9 else float("inf"))

    def within(self, tolerance: float) -> bool:
        return self.gap() <= tolerance

    def target(self, tolerance: float) -> float:
        """An objective within ``tolerance`` of the bound."""
        return self.lower_bound + abs(self.lower_bound) * tolerance
