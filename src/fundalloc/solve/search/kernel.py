"""Kernel sub-MIPs: branch and bound over the loans around the rows whose slack costs most.

When no single or paired exchange lowers the objective, a better plan may still need several
loans to move at once (a chain through two binding rows, three loans to fill a gap no two can).
The kernel frees, for each of the rows whose priced slack is largest, the moves the exchange
search considered for it (the fills cheapest per unit at the LP prices, the smallest fills, the
cheapest counter-moves), and lets a MIP choose among exactly those routes for those loans, every
other loan fixed. The MIP starts from the current plan and has a node budget: it can only return
the plan or a better one.
"""

from __future__ import annotations

import numpy as np

from ..context import Context
from ..obligor import LazyObligor
from ..restricted import FixedSums, place
from .exchange import Exchange


def kernel_round(ctx: Context, ex: Exchange, sums: FixedSums, lazy: LazyObligor, target: float,
                 round_no: int) -> np.ndarray | None:
    """One kernel MIP around the costliest rows; the plan it gives (None if none was found)."""
    st, pr = ex.state, ex.prices
    opts = ctx.options
    R = st.inst.R
    cost = pr.price * np.maximum(st.slack, 0.0)
    rows_by_cost = [int(k) for k in np.argsort(-cost, kind="stable") if cost[k] > 0]
    if not rows_by_cost:
        return None
    free = np.zeros(st.inst.n, dtype=bool)
    allowed_extra: dict[int, set[int]] = {}
    per_row = max(8, opts.kernel_loans // max(1, min(len(rows_by_cost), 8)))
    # each round looks a little wider: more rows, more moves per row
    per_row = per_row * (1 + round_no // 2)
    ok_free = lazy.free_ok()
    for k in rows_by_cost[:8 + 2 * round_no]:
        if k != ex.platform_row and k not in ex.local:
            continue
        picked = ex._pick(k)
        if picked is None:
            continue
        loans, dest, dk, loss, fill, ctr = picked
        take = np.concatenate([fill[:per_row], ctr[:per_row // 2]])
        for i, d in zip(loans[take].tolist(), dest[take].tolist()):
            if not ok_free[i]:
                continue
            free[i] = True
            allowed_extra.setdefault(i, set()).add(d)
        if free.sum() >= opts.kernel_loans * (1 + round_no // 2):
            break
    idx = np.flatnonzero(free)
    if not len(idx):
        return None
    allowed = np.zeros((len(idx), R), dtype=bool)
    cur = st.route[idx]
    on = cur < R
    allowed[np.flatnonzero(on), cur[on]] = True
    for row, i in enumerate(idx.tolist()):
        for d in allowed_extra.get(i, ()):
            if d < R:
                allowed[row, d] = True
    allowed &= lazy.inst.elig[idx]
    placed = place(ctx, lazy.inst, np.where(free, -1, st.route), sums, allowed, opts.kernel_nodes,
                   start_route=st.route, target=target)
    ctx.count("kernel_loans", len(idx))
    ctx.count("kernel_nodes", placed.nodes)
    if not np.isfinite(placed.objective):
        return None
    return placed.route
