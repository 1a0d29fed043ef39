"""Phase 4, the whole-loan search: from the LP's plan to whole loans within the gap tolerance.

The structure it works on: a basic LP solution leaves about as many loans fractional as there are
binding rows, and each binding row is a cap or a ratio that many interchangeable small loans can
fill. The LP's duals price every row, and a plan's gap to the bound splits into slack left in
binding rows (at those prices) and reduced-cost losses of loans off their cheapest route. So:

1. **starts** — the warm start's plans that still hold every row (a what-if's base, a sweep's
   earlier points), the LP's rounding (:mod:`.start`), and on days of up to ``FFD_LOANS`` loans
   first-fit decreasing, repaired to hold every row; loans moved onto any funder a start leaves
   short of a hard minimum (:mod:`.fill`);
2. **exact** — a small day is also one whole-loan MIP (:mod:`.exact`), which proves its plan
   optimal among whole loans or bounds every whole-loan plan from below;
3. **relocate** — each loan worth moving onto its cheapest route with room, over every route
   (:mod:`.relocate`): where many routes price alike, the LP's few cheapest are the full ones;
4. **exchange** — single and paired moves that fill the costliest slack (:mod:`.exchange`), and
   ejection chains (:mod:`.chains`), with relocation between their passes;
5. **kernel** — when the exchanges stall above the tolerance, a MIP over the loans around the
   costliest rows (:mod:`.kernel`), then exchanges again, a few rounds.

Every method offers its plans to one :class:`~fundalloc.solve.incumbent.Incumbent`. The budget
is work (moves checked, MIP nodes), so the same inputs give the same plan on any machine under
any load; the clock only stops a search that runs past the safety limit, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..context import Context
from ..incumbent import Incumbent
from ..lagrange import Pricing, lagrangian
from ..obligor import LazyObligor
from ...greedy import first_fit_decreasing
from ..refine import Relaxation
from ..repair import repair
from ..restricted import FixedSums
from ..rows import Rows
from ..split import Split
from .exact import exact, pairs
from .chains import Chains
from .exchange import Exchange
from .fill import fill_minimums, shortfalls
from .kernel import kernel_round
from .prices import Prices
from .relocate import relocate
from .start import lp_rounding
from ..state import PlanState


@dataclass(frozen=True, eq=False)
class SearchResult:
    route: np.ndarray
    whole_loan_bound: float  # a lower bound on whole-loan plans (the LP's, or an exact MIP's when higher)
    proven: bool  # an exact MIP proved the plan optimal among whole-loan plans
    work_exhausted: bool


# beyond this many loans the exchange search prices only the loans worth moving
FULL_UNIVERSE = 300_000
# up to this many loans the search also starts from first-fit decreasing
FFD_LOANS = 20_000


def _universe(ctx: Context, sp: Split, pricing: Pricing, route: np.ndarray) -> np.ndarray:
    """The loans the exchange search may move: all of them on a day of up to ``FULL_UNIVERSE``;
    on a bigger one the fractional loans, the unfunded, and per route the loans cheapest to move at
    the LP prices and the smallest ones."""
    inst = ctx.full
    n = inst.n
    if n <= FULL_UNIVERSE:
        return np.arange(n)
    keep = sp.fractional | (route == inst.R)
    per = max(2000, FULL_UNIVERSE // (4 * inst.R))
    for r in range(inst.R):
        on = np.flatnonzero(route == r)
        if not len(on):
            continue
        cheap = on[np.argsort(pricing.move_cost[on], kind="stable")[:per]]
        small = on[np.argsort(inst.principal[on], kind="stable")[:per]]
        keep[cheap] = True
        keep[small] = True
    return np.flatnonzero(keep)


def _filled(ctx: Context, rows: Rows, route: np.ndarray) -> np.ndarray:
    """``route`` with loans moved onto any funder it leaves short of a hard minimum."""
    state = PlanState(rows, route)
    if not (shortfalls(state) > 0).any():
        return route
    fill_minimums(ctx, state, ctx.options.exchange_candidates * 4)
    ctx.clock.lap("fill")
    return state.route


def search(ctx: Context, relax: Relaxation, sp: Split, cls: np.ndarray, sums: FixedSums, rows: Rows,
           lazy: LazyObligor, incumbent: Incumbent, starts: list[tuple[str, np.ndarray]],
           settled: bool) -> SearchResult:
    opts = ctx.options
    tol = opts.gap_tolerance
    target = incumbent.target(tol / 2)
    for name, plan in starts:
        incumbent.offer(plan, name)
    ctx.clock.lap("search")
    bound = incumbent.lower_bound
    proven = False
    if settled or incumbent.within(tol):
        return SearchResult(incumbent.route, bound, proven, False)
    pricing = lagrangian(ctx.inst, relax.dual, cls)[1]
    prices = Prices.build(rows, relax.dual, cls, relax.prob.rows, relax.sol.row_dual,
                          _universe(ctx, sp, pricing, sp.route))
    movable = np.ones(ctx.full.n, dtype=bool)  # (the exchange checks every obligor row exactly)
    rounded = _filled(ctx, rows, lp_rounding(ctx, sp, sums, lazy, rows, prices, target))
    incumbent.offer(rounded, "lp_rounding")
    ctx.clock.lap("rounding")
    if rows.inst.n <= FFD_LOANS and not incumbent.within(tol):
        # packing days (identical funders whose caps whole loans can fill) are where rounding an
        # LP is weakest and first-fit decreasing strongest: its plan, repaired to hold every row,
        # is offered too, so the search never ends behind it
        ffd, _ = repair(rows, first_fit_decreasing(rows.inst))
        ctx.work.charge("ffd", rows.inst.n * rows.inst.R)
        incumbent.offer(_filled(ctx, rows, ffd), "first_fit_decreasing")
        ctx.clock.lap("ffd")
    if incumbent.route is None:  # no start meets the hard minimums: the caller names them
        return SearchResult(rounded, bound, False, ctx.work.exhausted)
    universe = prices.universe
    if not incumbent.within(tol):
        moved = PlanState(rows, incumbent.route)
        if relocate(ctx, moved, universe, opts.exchange_candidates * 4):
            moved.refresh()
            incumbent.offer(moved.route, "relocate", moved.objective())
        ctx.clock.lap("relocate")
    if not incumbent.within(tol) and pairs(ctx) <= opts.exact_pairs:
        ex = exact(ctx, incumbent.route, sums, None)
        if ex.route is not None:
            incumbent.offer(ex.route, "exact")
        bound = max(bound, ex.bound)
        proven = ex.proven
        ctx.clock.lap("exact")
    if proven or incumbent.within(tol):
        return SearchResult(incumbent.route, bound, proven, False)
    state = PlanState(rows, incumbent.route)
    ex = Exchange(ctx, state, prices, movable, fills=opts.exchange_candidates // 2, counters=opts.exchange_candidates)
    ctx.clock.lap("search")
    chains = Chains(ex)
    for round_no in range(opts.kernel_rounds + 1):
        for _ in range(opts.exchange_passes):
            moved = relocate(ctx, state, universe, opts.exchange_candidates * 4)
            moved += ex.run(max_moves=10 ** 9)
            chains.invalidate(range(ctx.full.R))
            made = chains.run(max_chains=10 ** 9) + moved
            if not made or ctx.work.exhausted or ctx.clock.expired():
                break
        state.refresh()
        sc, loss = prices.decompose(state.route, state.slack)
        ctx.clock.say(f"exchange: priced slack {sc:,.2f}, reduced-cost loss {loss:,.2f}, "
                      f"gap {state.objective() - incumbent.lower_bound:,.2f}")
        incumbent.offer(state.route, "exchange", state.objective())
        ctx.clock.lap("exchange")
        if incumbent.within(tol) or round_no == opts.kernel_rounds or ctx.work.exhausted or ctx.clock.expired():
            break
        new = kernel_round(ctx, ex, sums, lazy, target, round_no)
        ctx.clock.lap("kernel")
        if new is None or not incumbent.offer(new, "kernel"):
            continue
        state.route[:] = incumbent.route
        state.refresh()
    ctx.stats["search_work"] = ctx.work.used
    return SearchResult(incumbent.route, bound, proven, ctx.work.exhausted)
