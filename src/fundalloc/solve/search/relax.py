"""Staged relax-and-fix: round the LP's fractional loans while smaller loans absorb the change.

The LP over loans leaves about as many loans fractional as there are binding rows, and some of
them are big: putting a big loan on one route whole moves thousands of currency units between
binding rows, which no single move of another loan can put back. Relax-and-fix rounds them the
way the LP itself would: a MIP in which the fractional loans are whole-loan decisions and a set
of *absorbers* stays continuous, every other loan fixed. The LP's optimum stays reachable to
within what the absorbers cannot take, so this step is almost free (the MIP's relaxation is the
LP over the same loans); its new fractional loans are among the absorbers. Each stage draws its
absorbers from smaller loans than the last (below a principal quantile), so the loans left
fractional shrink stage by stage, and what a final rounding of them costs shrinks with them.

Absorbers are chosen where they are needed: on every route the fractional loans could take, the
loans that can move there (their route is among their cheapest at the LP prices) and lose least
by it (their runner-up's reduced cost is close), plus, for each binding row of the route, loans
that fill it. The budget is branch-and-bound nodes per stage.
"""

from __future__ import annotations

import numpy as np

from ..context import Context
from ..obligor import LazyObligor
from ..restricted import FixedSums, place
from ..rows import Rows
from ..split import Split
from .prices import Prices


class Absorbers:
    """Per route, the loans worth keeping continuous while others are rounded (chosen among the
    search's universe of loans, so a big day costs what a small one does)."""

    def __init__(self, rows: Rows, prices: Prices, sp: Split):
        inst = rows.inst
        R = inst.R
        self.rows, self.prices, self.inst = rows, prices, inst
        U = prices.universe
        self.U = U
        order = np.argsort(prices.rc, axis=1, kind="stable")
        rc_sorted = np.take_along_axis(prices.rc, order[:, :2], axis=1)
        self.margin = rc_sorted[:, 1] - rc_sorted[:, 0]  # what moving to the runner-up costs
        support = sp.support(U).copy()
        for j in range(2):
            r = order[:, j]
            ok = r < R
            support[np.flatnonzero(ok), r[ok]] = True
        self.support_u = support & inst.elig[U, :R]
        self.principal_u = inst.principal[U]

    def support(self, loans: np.ndarray) -> np.ndarray:
        """The routes each loan may take in a relax-and-fix MIP: its LP support, its two cheapest
        routes at the LP prices (a loan outside the universe: its LP support)."""
        pos = self.prices.position[loans]
        out = np.zeros((len(loans), self.inst.R), dtype=bool)
        inside = pos >= 0
        out[inside] = self.support_u[pos[inside]]
        return out

    def routes_of(self, mask: np.ndarray) -> np.ndarray:
        """The routes any loan of ``mask`` may take."""
        idx = np.flatnonzero(mask)
        return np.flatnonzero(self.support(idx).any(axis=0)) if len(idx) else np.zeros(0, dtype=np.int64)

    def pick(self, routes: np.ndarray, exclude: np.ndarray, per_route: int, max_principal: float) -> np.ndarray:
        inst, rows = self.inst, self.rows
        U = self.U
        add = np.zeros(len(U), dtype=bool)
        pool = ~exclude[U]
        small = pool & (self.principal_u <= max_principal)
        for r in routes.tolist():
            cand = np.flatnonzero(small & self.support_u[:, r] & ~add)
            if len(cand) < per_route // 2:  # too few small loans there: the smallest ones
                cand = np.flatnonzero(pool & self.support_u[:, r] & ~add)
                cand = cand[np.argsort(self.principal_u[cand], kind="stable")][:per_route]
            cand = cand[np.argsort(self.margin[cand], kind="stable")]
            add[cand[:per_route]] = True
            ids = rows.route_rows[r]
            priced = [j for j, k in enumerate(ids.tolist())
                      if self.prices.price[k] > 0 and int(rows.route[k]) == r]
            if priced and len(cand):
                C = rows.coef(r, U[cand])
                for j in priced:
                    fill = cand[(C[j] > 0) & ~add[cand]]
                    add[fill[:max(1, per_route // 3)]] = True
        out = np.zeros(inst.n, dtype=bool)
        out[U[add]] = True
        return out


def staged_rounding(ctx: Context, sp: Split, sums: FixedSums, lazy: LazyObligor, rows: Rows,
                    prices: Prices) -> tuple[np.ndarray, np.ndarray]:
    """The LP's plan with its fractional loans made whole, stage by stage (see the module's
    docstring). Returns the plan (loans still fractional on their largest share) and the mask of
    those loans."""
    opts = ctx.options
    inst = lazy.inst
    route, frac = sp.route.copy(), sp.fractional.copy()
    if not frac.any():
        return route, frac
    ab = Absorbers(rows, prices, sp)
    decided = np.zeros(inst.n, dtype=bool)
    ok_free = lazy.free_ok()
    for q in opts.relax_stages:
        X = frac & ~decided
        if not X.any() or ctx.work.exhausted or ctx.clock.expired():
            break
        free = X | (ab.pick(ab.routes_of(X), decided | X | ~ok_free, opts.relax_absorbers,
                            float(np.quantile(inst.principal, q))))
        allowed = ab.support(np.flatnonzero(free)) | sp.support(np.flatnonzero(free))
        placed = place(ctx, inst, np.where(free, -1, route), sums, allowed, opts.relax_nodes,
                       rel_gap=opts.gap_tolerance / 5, binary=X)
        ctx.count("relax_stages")
        if not np.isfinite(placed.objective) or placed.fractional is None:
            break
        route = placed.route
        decided |= X
        frac = placed.fractional & ~decided
        ctx.clock.say(f"relax-and-fix below the {q:.0%} principal quantile: {int(free.sum()):,} loans free, "
                      f"objective {placed.objective:,.2f}, {int(frac.sum())} fractional left")
    return route, frac
