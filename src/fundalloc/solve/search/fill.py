"""Filling hard minimums: loans moved onto a funder that whole-loan rounding left short of its
``daily_min_hard``.

The LP meets a hard minimum by splitting a loan or two; rounding them down leaves the funder a
little short, and a shortfall there is not a cost to trade against others but a plan that cannot
be delivered. No other neighbourhood aims at it (the exchange fills slack in ``<=`` rows), so this
one does, funder by funder in route order:

1. the candidates are the loans eligible at the funder and elsewhere now (unfunded, the platform,
   other funders) whose move there fits every row it touches (one vectorised check per route
   they leave), in order of the extra cost per unit of the funder's amount they bring;
2. each is checked exactly against every row (the minimum's own row may stay short: it only
   improves), and made when it breaks no other; the last one needed is the cheapest of those
   that cover what is still short.

The work charged is one unit per candidate checked at once and :data:`~.exchange.CHECK` per exact check.
"""

from __future__ import annotations

import numpy as np

from ..context import Context
from ..rows import TOL as TOL_ROW, loan_cost
from ..state import PlanState
from .exchange import CHECK

TOL = 0.005  # currency units: a minimum short by less than half a cent is met


def shortfalls(state: PlanState) -> np.ndarray:
    """Per funder route: what the plan leaves short of its hard minimum."""
    inst = state.inst
    F = inst.R - 1
    return np.maximum(inst.daily_min_hard[:F] - state.totals[:F], 0.0)


def _fits(state: PlanState, loans: np.ndarray, f: int) -> np.ndarray:
    """Which single moves ``loan -> f`` hold every row they touch (obligor rows aside), in one
    vectorised check per route they leave."""
    rows, slack = state.rows, state.slack
    ok = np.zeros(len(loans), dtype=bool)
    frm = state.route[loans]
    for a in np.unique(frm):
        sel = np.flatnonzero(frm == a)
        u, d = rows.delta(int(a), f, loans[sel])
        ok[sel] = ((d <= slack[u][:, None] + TOL_ROW / 10) | (d <= 0)).all(axis=0) if len(u) else True
    return ok


def fill_minimums(ctx: Context, state: PlanState, limit: int) -> int:
    """Move loans onto the funders short of a hard minimum; returns how many moved."""
    inst = state.inst
    made = 0
    for f in np.flatnonzero(shortfalls(state) > TOL):
        f = int(f)
        cand = np.flatnonzero(inst.elig[:, f] & (state.route != f))
        if not len(cand):
            continue
        cand = cand[_fits(state, cand, f)]
        ctx.work.charge("fill", len(cand))
        if not len(cand):
            continue
        amount = inst.share[f] * inst.principal[cand]
        extra = loan_cost(inst, cand, np.full(len(cand), f)) - loan_cost(inst, cand, state.route[cand])
        order = np.lexsort((cand, extra / np.maximum(amount, 1e-12)))[:limit]
        cand, amount, extra = cand[order], amount[order], extra[order]
        done = np.zeros(len(cand), dtype=bool)
        while shortfalls(state)[f] > TOL and not ctx.work.exhausted and not ctx.clock.expired():
            need = shortfalls(state)[f]
            covers = ~done & (amount >= need)
            # the cheapest loan that covers the rest, else the next by cost per unit brought
            i = int(np.flatnonzero(covers)[np.argmin(extra[covers])]) if covers.any() else \
                (int(np.flatnonzero(~done)[0]) if (~done).any() else -1)
            if i < 0:
                break
            done[i] = True
            ctx.work.charge("fill", CHECK)
            loan = np.array([cand[i]])
            trial = state.try_moves(loan, np.array([f]))
            if trial.feasible:
                state.apply(loan, np.array([f]), trial)
                made += 1
    return made
