"""A whole-loan plan the search changes move by move, with every row's activity kept up to date.

A *move* takes one loan from its route to another (``R``: unfunded); a compound move is a few
moves of distinct loans made together. :meth:`PlanState.try_moves` says exactly what a compound
move would do to every hard row (obligor rows included) and to the objective, shortfall fees
included; :meth:`PlanState.apply` makes it. The activities are sums kept by adding each move's
change, so they are re-derived from the plan (``refresh``) whenever the search offers a plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rows import TOL, RouteIndex, Rows, loan_cost, shortfall_cost


@dataclass(frozen=True, eq=False)
class Trial:
    """What a compound move would do."""

    feasible: bool
    delta_objective: float
    rows: np.ndarray  # ids of the rows it changes
    change: np.ndarray  # their change


class PlanState:
    def __init__(self, rows: Rows, route: np.ndarray):
        self.rows = rows
        self.inst = rows.inst
        self.route = np.array(route, dtype=np.int64, copy=True)
        self.refresh()

    def refresh(self) -> None:
        """Every activity and total from the plan itself (no accumulated rounding)."""
        inst = self.inst
        idx = RouteIndex.of(inst, self.route)
        self.act = self.rows.activity(self.route, idx)
        self.totals = idx.totals.copy()
        self.cost = float(loan_cost(inst, np.arange(inst.n), self.route).sum())

    @property
    def slack(self) -> np.ndarray:
        return self.rows.rhs - self.act

    def objective(self) -> float:
        return self.cost + shortfall_cost(self.inst, self.totals)

    def feasible(self) -> bool:
        return not (self.act - self.rows.rhs > TOL).any()

    def _changes(self, loans: np.ndarray, to: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row ids and their changes for moves ``loans -> to``, and the totals' change (R)."""
        rows, inst = self.rows, self.inst
        R = inst.R
        frm = self.route[loans]
        ids: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        for a, b in sorted(set(zip(frm.tolist(), to.tolist()))):
            if a == b:
                continue
            sel = loans[(frm == a) & (to == b)]
            u, d = rows.delta(a, b, sel)
            if len(u):
                ids.append(u)
                vals.append(d.sum(axis=1))
        moved = frm != to
        for row, v in rows.obligor_delta(loans[moved], frm[moved], to[moved]):
            ids.append(np.array([row]))
            vals.append(np.array([v]))
        dtot = np.zeros(R + 1)
        amt_from = np.append(inst.share, 0.0)[frm] * inst.principal[loans]
        amt_to = np.append(inst.share, 0.0)[to] * inst.principal[loans]
        np.add.at(dtot, frm, -amt_from)
        np.add.at(dtot, to, amt_to)
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0), dtot[:R]
        allid = np.concatenate(ids)
        allv = np.concatenate(vals)
        uid, inv = np.unique(allid, return_inverse=True)
        return uid, np.bincount(inv, weights=allv, minlength=len(uid)), dtot[:R]

    def try_moves(self, loans: np.ndarray, to: np.ndarray, tol: float = TOL / 10) -> Trial:
        loans = np.asarray(loans, dtype=np.int64)
        to = np.asarray(to, dtype=np.int64)
        ids, change, dtot = self._changes(loans, to)
        # a row may move past its limit only when it already was past it and the move does not
        # make it worse (the repair's starting plans)
        new = self.act[ids] + change
        over = new > self.rows.rhs[ids] + tol
        feasible = not (over & (change > 0)).any()
        inst = self.inst
        dcost = float(loan_cost(inst, loans, to).sum() - loan_cost(inst, loans, self.route[loans]).sum())
        dshort = shortfall_cost(inst, self.totals + dtot) - shortfall_cost(inst, self.totals)
        return Trial(bool(feasible), dcost + dshort, ids, change)

    def apply(self, loans: np.ndarray, to: np.ndarray, trial: Trial | None = None) -> None:
        loans = np.asarray(loans, dtype=np.int64)
        to = np.asarray(to, dtype=np.int64)
        ids, change, dtot = self._changes(loans, to)
        inst = self.inst
        self.cost += float(loan_cost(inst, loans, to).sum() - loan_cost(inst, loans, self.route[loans]).sum())
        self.act[ids] += change
        self.totals += dtot
        self.route[loans] = to
