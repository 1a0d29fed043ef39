"""Cold and warm solves: what a solve starts from, as objects rather than branches.

A cold solve starts from quantile bins and no plan. A warm solve (a what-if, a sweep's next
point) starts from what a similar day's solve left (:class:`WarmStart`): its refined bins and LP
basis when the classes are the same, its whole-loan plans as candidate incumbents (each that
holds every limit of the new day), and its obligor rows that bound. When the new LP's optimum is
the old one's and no plan beats the old plan, the deterministic search would only repeat the
search that made it, so the warm solve is *settled* and keeps that plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends import Basis
from ..instance import Instance
from .classes import initial_bins
from .rows import Rows, objective


@dataclass(frozen=True, eq=False)
class WarmStart:
    """What a later solve of a similar day can reuse: the classes, the refined bins, the final
    LP basis and the whole-loan plan."""

    route_ids: tuple[str, ...]
    cls: np.ndarray
    bins: np.ndarray
    basis: Basis | None
    shape: tuple[int, int]  # (rows, cols) of the LP the basis belongs to
    route: np.ndarray
    obligor_active: tuple[tuple[str, str], ...] = ()  # (route id, borrower) of the obligor rows in the LP
    # whole-loan plans of other similar days (a sweep's earlier points, its base): each that holds
    # every limit of the new day is a candidate incumbent too
    incumbents: tuple[np.ndarray, ...] = ()
    objective: float = float("nan")  # of ``route``, and the final LP's objective of the solve that made it
    lp_objective: float = float("nan")


class ColdPolicy:
    name = "cold"

    def __init__(self, q: int):
        self.q = q

    def bins(self, inst: Instance, cls: np.ndarray, continuous: list[str]) -> tuple[np.ndarray, int]:
        return initial_bins(inst, cls, continuous, self.q)

    def basis(self) -> tuple[Basis | None, tuple[int, int] | None]:
        return None, None

    def starts(self, full: Instance, rows: Rows) -> list[tuple[str, np.ndarray]]:
        return []

    def settled(self, lp_objective: float, best_start: float) -> bool:
        return False

    def obligor_active(self, inst: Instance) -> np.ndarray:
        return np.zeros(len(inst.obligor_rows), dtype=bool)


class WarmPolicy(ColdPolicy):
    name = "warm"

    def __init__(self, q: int, warm: WarmStart, inst: Instance, cls: np.ndarray):
        super().__init__(q)
        self.warm = warm
        self.same_routes = warm.route_ids == inst.route_ids
        self.reuse = self.same_routes and len(warm.cls) == inst.n and np.array_equal(warm.cls, cls)

    def bins(self, inst, cls, continuous):
        if self.reuse:
            return self.warm.bins, int(self.warm.bins.max()) + 1 if len(self.warm.bins) else 0
        return super().bins(inst, cls, continuous)

    def basis(self):
        return (self.warm.basis, self.warm.shape) if self.reuse else (None, None)

    def starts(self, full: Instance, rows: Rows) -> list[tuple[str, np.ndarray]]:
        if not self.same_routes:
            return []
        out = []
        for k, plan in enumerate((self.warm.route, *self.warm.incumbents)):
            if len(plan) == full.n:
                out.append(("warm_start" if k == 0 else f"warm_incumbent_{k}", plan))
        return out

    def settled(self, lp_objective: float, best_start: float) -> bool:
        w = self.warm
        return bool(np.isfinite(w.objective)
                    and best_start <= w.objective + 1e-10 * max(abs(w.objective), 1.0)
                    and abs(lp_objective - w.lp_objective) <= 1e-12 * max(abs(w.lp_objective), 1.0))

    def obligor_active(self, inst: Instance) -> np.ndarray:
        return warm_obligor_active(self.warm, inst)


def warm_obligor_active(warm: WarmStart, inst: Instance) -> np.ndarray:
    """The obligor rows of ``inst`` that were in the warm start's LP (by funder and borrower)."""
    active = np.zeros(len(inst.obligor_rows), dtype=bool)
    index = {(inst.route_ids[o.route], o.borrower): j for j, o in enumerate(inst.obligor_rows)}
    for label in warm.obligor_active:
        if label in index:
            active[index[label]] = True
    return active


def best_start_objective(full: Instance, rows: Rows, starts: list[tuple[str, np.ndarray]]) -> float:
    """The objective of the cheapest start that holds every row (inf: none)."""
    best = np.inf
    for _, plan in starts:
        if not len(rows.broken(plan)):
            best = min(best, objective(full, plan))
    return best
