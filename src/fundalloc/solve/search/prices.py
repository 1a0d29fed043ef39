"""The LP's prices as the search reads them: what each binding row is worth, and what each loan
costs on each route at those prices (its reduced cost).

A plan's distance from the bound splits, by the LP's duals ``y``, into the loans' reduced-cost
losses (a loan not on a route of least reduced cost) and the slack left in binding rows valued
at their prices: ``objective - LB = sum_i loss_i + sum_k price_k slack_k`` (plus the soft
minimums' terms). The search works on both: it fills priced slack with moves whose reduced-cost
loss is small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...formulation import RowKind
from ..lagrange import Dual, unit_reduced_costs
from ..rows import Rows


_AT_LEAST = (RowKind.WA_MIN.value, RowKind.DAILY_MIN_HARD.value)


@dataclass(frozen=True, eq=False)
class Prices:
    price: np.ndarray  # per row of :class:`Rows`: the value of one unit of its slack (>= 0)
    universe: np.ndarray  # the loans priced one by one (ascending)
    position: np.ndarray  # n: index into ``universe``, -1 outside it
    rc: np.ndarray  # len(universe) x (R+1): reduced cost on every route (inf: not eligible), unfunded last

    @staticmethod
    def build(rows: Rows, dual: Dual, cls: np.ndarray, lp_rows, lp_dual: np.ndarray, universe: np.ndarray) -> "Prices":
        inst = rows.inst
        price = np.zeros(rows.m)
        y = dict(zip(lp_rows["label"], lp_dual)) if lp_rows is not None else {}
        kinds = rows.kind
        for k, lab in enumerate(rows.label):
            v = float(y.get(lab, 0.0))
            # the LP's weighted-average and hard minimums are '>=' rows (positive dual); the rest '<='
            price[k] = max(v, 0.0) if kinds[k] in _AT_LEAST else max(-v, 0.0)
        universe = np.asarray(universe, dtype=np.int64)
        position = np.full(inst.n, -1, dtype=np.int64)
        position[universe] = np.arange(len(universe))
        rc = unit_reduced_costs(inst, dual, cls, universe) * inst.principal[universe, None]
        rc[~np.isfinite(rc)] = np.inf
        return Prices(price, universe, position, rc)

    def loss(self, loans: np.ndarray, frm: np.ndarray, to: np.ndarray) -> np.ndarray:
        """Reduced-cost change of moving each loan (in the universe) from ``frm`` to ``to``."""
        pos = self.position[loans]
        return self.rc[pos, to] - self.rc[pos, frm]

    def decompose(self, route: np.ndarray, slack: np.ndarray) -> tuple[float, float]:
        """The priced slack of a plan, and its loans' reduced-cost losses (over the universe)."""
        slack_cost = float(np.dot(self.price, np.maximum(slack, 0.0)))
        r = route[self.universe]
        on = self.rc[np.arange(len(self.universe)), r]
        loss = float(np.sum(on - self.rc.min(axis=1)))
        return slack_cost, loss
