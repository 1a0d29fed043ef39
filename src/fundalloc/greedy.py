"""The simple alternative: a greedy cheapest-first router, for comparison in benchmarks.

Routes are taken in order of their cost per unit of principal (at the day's mean life); each
takes, in input order, the unassigned eligible loans that still fit its daily maximum, its
facility headroom and the platform's capacity. It knows nothing of concentration limits,
weighted averages or obligor limits, so it may break them: `evaluate` counts how many.
"""

from __future__ import annotations

import numpy as np

from .instance import Instance


def greedy_route(inst: Instance) -> np.ndarray:
    n, R = inst.n, inst.R
    route = np.full(n, R, dtype=np.int64)
    if n == 0:
        return route
    unit_cost = inst.k1 * float(inst.life.mean()) + inst.k0
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
