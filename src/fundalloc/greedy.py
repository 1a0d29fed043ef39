"""The simple alternatives, for comparison in benchmarks: a greedy router and first-fit decreasing.

Both know only the caps a rule router tracks (daily maximum, facility headroom, platform
capacity), so they may break concentration limits, weighted averages and obligor limits:
`evaluate` counts how many.

- :func:`greedy_route`: routes are taken in order of their cost per unit of principal (at the
  day's mean life, a bidding route at its mean bid); each takes, in input order, the unassigned eligible loans that still fit.
- :func:`first_fit_decreasing`: loans are taken largest first; each goes to the cheapest route
  (at its own life) it is eligible for and still fits in, or stays unfunded.
"""

from __future__ import annotations

import numpy as np

from .instance import Instance


def greedy_route(inst: Instance) -> np.ndarray:
    n, R = inst.n, inst.R
    route = np.full(n, R, dtype=np.int64)
    if n == 0:
        return route
    unit_cost = inst.k1 * float(inst.life.mean()) + inst.k0  # a route's order (a graded route: its default)
    for r, q in inst.bid_price.items():  # a bidding route: at its mean bid
        on = inst.elig[:, r]
        unit_cost[r] -= inst.share[r] * (float(q[on].mean()) if on.any() else 0.0)
    platform_left = inst.platform_capacity
    for r in np.argsort(unit_cost, kind="stable"):
        cand = np.flatnonzero((route == R) & inst.elig[:, r])
        if len(cand) == 0:
            continue
        amount = inst.share[r] * inst.principal[cand]
        plat = inst.platform_share[r] * inst.principal[cand]
        cap = min(inst.daily_max[r], max(inst.headroom[r], 0.0))
        fits = (np.cumsum(amount) <= cap) & (np.cumsum(plat) <= platform_left)
        take = cand[fits]
        route[take] = r
        platform_left -= float(plat[fits].sum())
    return route


def first_fit_decreasing(inst: Instance) -> np.ndarray:
    """Largest loan first, each to the cheapest eligible route it still fits in."""
    n, R = inst.n, inst.R
    route = np.full(n, R, dtype=np.int64)
    left = np.minimum(inst.daily_max, np.maximum(inst.headroom, 0.0)).astype(float)
    platform_left = float(inst.platform_capacity)
    unit = inst.unit_cost()
    for i in np.argsort(-inst.principal, kind="stable"):
        p = float(inst.principal[i])
        for r in np.argsort(unit[i], kind="stable"):
            if not inst.elig[i, r]:
                continue
            a = float(inst.share[r]) * p if r < R - 1 else 0.0
            b = float(inst.platform_share[r]) * p
            if a <= left[r] + 1e-9 and b <= platform_left + 1e-9:
                route[i] = r
                left[r] -= a
                platform_left -= b
                break
    return route
