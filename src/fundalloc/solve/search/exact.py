"""A small day as one whole-loan MIP: HiGHS's own branch and bound over every loan.

On a day of a few thousand loan-route pairs the whole MIP is small, and its branch and bound
either proves its plan optimal among whole-loan plans (its dual bound meets its objective) or
ends its node budget with a dual bound that is itself a valid lower bound on every whole-loan
plan, often above the LP's. That is how a tiny day whose LP funds part of a loan that no whole
loan can replace is shown to be as good as whole loans allow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...backends import SolveStatus
from ..context import Context
from ..restricted import FixedSums, place


@dataclass(frozen=True, eq=False)
class Exact:
    route: np.ndarray | None  # the MIP's plan (None: none found)
    bound: float  # a lower bound on every whole-loan plan
    proven: bool  # the MIP finished: its plan is optimal among whole-loan plans


def pairs(ctx: Context) -> int:
    """Loan-route pairs of the whole day (unfunded included)."""
    return int(ctx.full.elig.sum()) + ctx.full.n


def exact(ctx: Context, start: np.ndarray | None, sums: FixedSums, target: float | None) -> Exact:
    inst = ctx.full
    route = np.full(inst.n, -1, dtype=np.int64)
    placed = place(ctx, inst, route, sums, None, ctx.options.exact_nodes, start_route=start, target=target,
                   rel_gap=1e-9)
    ctx.count("exact_nodes", placed.nodes)
    found = placed.route if np.isfinite(placed.objective) else None
    proven = placed.status == SolveStatus.OPTIMAL and found is not None
    bound = float(placed.bound) if np.isfinite(placed.bound) else -np.inf
    return Exact(found, bound, proven)
