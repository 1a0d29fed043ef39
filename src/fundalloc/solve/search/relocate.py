"""Relocation: each loan worth moving onto the cheapest route that still has room for it.

The exchange search looks at a loan's few cheapest routes at the LP's prices. When many routes
price alike (a dozen identical trusts, or funders a basis point apart, all with caps), those few
are the full ones, and a loan left unfunded, or on the platform's expensive balance sheet, never
sees the empty route that would take it. This neighbourhood looks at every eligible route, by the
loan's exact cost there:

1. the candidates are the loans with the most to gain by their exact cost (unfunded first, as
   their penalty dominates), at most ``limit`` of them;
2. per destination route, one vectorised check of every candidate's single move against the
   rows it touches finds the moves that fit now;
3. candidates in order of gain take their cheapest fitting route, each move checked exactly
   (obligor rows and shortfall fees included) against the plan as it stands after the ones
   before; only moves that lower the objective are made.

The work charged is the number of (loan, route) checks, and :data:`~.exchange.CHECK` per exact check.
"""

from __future__ import annotations

import numpy as np

from ..context import Context
from ..rows import TOL, loan_cost
from ..state import PlanState
from .exchange import CHECK


def relocate(ctx: Context, state: PlanState, universe: np.ndarray, limit: int) -> int:
    """Make the improving relocations found among the ``universe`` loans; returns how many."""
    inst = state.inst
    R = inst.R
    rows = state.rows
    U = np.asarray(universe, dtype=np.int64)
    if not len(U) or limit <= 0:
        return 0
    now_u = loan_cost(inst, U, state.route[U])
    best = np.full(len(U), np.inf)
    for r in range(R):  # the cheapest eligible route of each loan, one route at a time (no n x R matrix)
        k1, k0 = inst.rates(U, r)
        c = (k1 * inst.life[U] + k0) * inst.principal[U]
        best = np.where(inst.elig[U, r], np.minimum(best, c), best)
    gain = now_u - best
    pick = np.flatnonzero(gain > 1e-9 * np.maximum(now_u, 1.0))
    if not len(pick):
        return 0
    pick = pick[np.argsort(-gain[pick], kind="stable")[:limit]]
    cand = U[pick]
    now = np.zeros(inst.n)
    now[cand] = now_u[pick]
    elig = np.asarray(inst.elig[cand], dtype=bool)
    unit = inst.unit_cost(cand)
    cost_c = np.where(elig, unit * inst.principal[cand, None], np.inf)  # candidates x R
    ctx.work.charge("relocate", len(cand) * R)
    slack = state.slack
    fits = np.zeros((len(cand), R), dtype=bool)
    frm = state.route[cand]
    for b in range(R):
        ok_b = np.isfinite(cost_c[:, b]) & (cost_c[:, b] < now[cand] - 1e-12) & (frm != b)
        for a in np.unique(frm[ok_b]):
            sel = np.flatnonzero(ok_b & (frm == a))
            u, d = rows.delta(int(a), b, cand[sel])
            if len(u):
                fits[sel, b] = ((d <= slack[u][:, None] + TOL / 10) | (d <= 0)).all(axis=0)
            else:
                fits[sel, b] = True
    made = 0
    for i in np.flatnonzero(fits.any(axis=1)):
        loan = int(cand[i])
        order = np.argsort(cost_c[i], kind="stable")
        for b in order:
            b = int(b)
            if not fits[i, b] or b == state.route[loan]:
                continue
            if ctx.work.exhausted or ctx.clock.expired():
                return made
            ctx.work.charge("relocate", CHECK)
            trial = state.try_moves(np.array([loan]), np.array([b]))
            if trial.feasible and trial.delta_objective < -1e-9:
                state.apply(np.array([loan]), np.array([b]), trial)
                made += 1
                break
    return made
