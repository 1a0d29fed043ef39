"""The whole-loan search's own start: the LP's plan, rounded.

Every loan but the few the LP over loans leaves fractional is whole on its LP route already.
Staged relax-and-fix (:mod:`.relax`) makes the big fractional loans whole while smaller loans
absorb the change; the few small loans left fractional are then placed by a MIP over them and
small absorbers, all of them whole-loan decisions, from a start where they are unfunded. When
that MIP finds no plan, they stay on their largest share and the repair unfunds what it must.
The plan holds every row (obligor rows a lazy LP never saw are enforced here too).
"""

from __future__ import annotations

import numpy as np

from ..context import Context
from ..obligor import LazyObligor
from ..repair import repair
from ..restricted import FixedSums, place
from ..rows import Rows
from ..split import Split
from .prices import Prices
from .relax import Absorbers, staged_rounding


def lp_rounding(ctx: Context, sp: Split, sums: FixedSums, lazy: LazyObligor, rows: Rows,
                prices: Prices, target: float) -> np.ndarray:
    """A whole-loan plan from the LP over loans (see the module's docstring); always feasible."""
    opts = ctx.options
    R = ctx.inst.R
    route, frac = staged_rounding(ctx, sp, sums, lazy, rows, prices)
    ctx.clock.lap("rounding")
    if frac.any() and not ctx.clock.expired():
        ab = Absorbers(rows, prices, sp)
        q = opts.relax_stages[-1] if opts.relax_stages else 0.5
        free = frac | ab.pick(ab.routes_of(frac), frac | ~lazy.free_ok(), opts.relax_final_absorbers,
                              float(np.quantile(ctx.inst.principal, q)))
        start = np.where(frac, R, route)
        fi = np.flatnonzero(free)
        allowed = (ab.support(fi) | sp.support(fi)) & lazy.inst.elig[fi, :R]
        placed = place(ctx, lazy.inst, np.where(free, -1, route), sums, allowed, opts.relax_final_nodes,
                       start_route=start, target=target)
        ctx.count("rounding_nodes", placed.nodes)
        if np.isfinite(placed.objective):
            route = placed.route
        ctx.clock.lap("rounding")
    route = lazy.enforce(ctx, route, sums)
    route, moved = repair(rows, route)
    ctx.stats["rounding_repaired_loans"] = moved
    return route
