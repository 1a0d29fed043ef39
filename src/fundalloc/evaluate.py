"""Every hard and soft row of the model, evaluated on a whole-loan assignment in float64.

``evaluate`` gives one row per constraint with its value, limit, slack (in the limit's units) and
``excess`` (how far over the limit it is, in currency; > 0 means broken). ``repair`` moves the
fewest loans it can to unfunded until no row is broken; every family's left side only falls when
the right loans leave, so the loop always ends with a feasible plan.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .instance import Instance

ENGINE_TOL = 1e-6  # currency units; the contract's tolerance is 0.01


def amounts(inst: Instance, route: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Funder amount, platform amount and funding cost per loan (zeros when unfunded)."""
    R = inst.R
    funded = route < R
    r = np.where(funded, route, 0)
    p = inst.principal
    funder = np.where(funded, inst.share[r] * p, 0.0)
    platform = np.where(funded, np.where(r == inst.platform_route, 0.0, inst.platform_share[r] * p), 0.0)
    cost = np.where(funded, p * (inst.k1[r] * inst.life + inst.k0[r]), 0.0)
    return funder, platform, cost


def funder_amounts(inst: Instance, route: np.ndarray) -> np.ndarray:
    """Funder amount per loan (zero when unfunded): one gather, not the three of :func:`amounts`."""
    return np.append(inst.share, 0.0)[route] * inst.principal


def route_totals(inst: Instance, route: np.ndarray) -> np.ndarray:
    funder = funder_amounts(inst, route)
    return np.bincount(route, weights=funder, minlength=inst.R + 1)[: inst.R]


def platform_used(inst: Instance, route: np.ndarray) -> float:
    """Platform money: its share of joint loans plus whole loans on the platform route."""
    return float(np.dot(np.append(inst.platform_share, 0.0)[route], inst.principal))


def whole_objective(inst: Instance, route: np.ndarray) -> float:
    """The plan's objective: funding cost, unfunded principal at the penalty, shortfall fees."""
    funder = funder_amounts(inst, route)
    cost = np.append(inst.k1, 0.0)[route] * inst.principal_life + np.append(inst.k0, 0.0)[route] * inst.principal
    A = np.bincount(route, weights=funder, minlength=inst.R + 1)[: inst.R - 1]
    shortfall = np.maximum(inst.daily_min[: inst.R - 1] - A, 0.0)
    fee = np.nan_to_num(inst.shortfall_fee[: inst.R - 1]) * shortfall
    return float(cost.sum() + inst.penalty * inst.principal[route == inst.R].sum() + fee.sum())


def obligor_values(inst: Instance, route: np.ndarray) -> np.ndarray:
    """Per obligor row: the borrower's existing exposure plus today's funder amount on the route.

    Only the loans of borrowers with a row are read (a few, on any day), so this is the cheap
    check the engine runs after every whole-loan round.
    """
    R = inst.R
    rows = inst.obligor_rows
    out = np.array([o.existing for o in rows], dtype=float)
    if not rows:
        return out
    has = np.flatnonzero(inst.obligor_slot >= 0)
    r = route[has]
    funded = r < R
    has, r = has[funded], r[funded]
    key = inst.obligor_slot[has] * R + r
    row_key = np.array([o.slot * R + o.route for o in rows], dtype=np.int64)
    keys, inverse = np.unique(key, return_inverse=True)
    used = np.bincount(inverse, weights=inst.share[r] * inst.principal[has], minlength=len(keys))
    pos = np.minimum(np.searchsorted(keys, row_key), max(len(keys) - 1, 0))
    hit = (keys[pos] == row_key) if len(keys) else np.zeros(len(rows), dtype=bool)
    out[hit] += used[pos[hit]]
    return out


def _by_route(route: np.ndarray, R: int) -> list[np.ndarray]:
    """Loan indices on each route (0..R, R = unfunded), from one stable sort."""
    # 16-bit keys: numpy's stable sort is then a radix sort, several times faster on big days
    order = np.argsort(route.astype(np.uint16) if R < (1 << 16) - 1 else route, kind="stable")
    bounds = np.searchsorted(route[order], np.arange(R + 2))
    return [order[bounds[r]:bounds[r + 1]] for r in range(R + 1)]


def evaluate(inst: Instance, route: np.ndarray) -> pd.DataFrame:
    """Every row's value, limit, slack and excess; each family touches only its route's loans."""
    R = inst.R
    F = R - 1
    funder = funder_amounts(inst, route)
    A = np.bincount(route, weights=funder, minlength=R + 1)[:R]
    on = _by_route(route, R)
    recs: list[dict] = []

    def add(constraint, r, kind, value, limit, slack, excess, ref=-1, note="", hard=True):
        recs.append({"constraint": constraint, "funder_id": inst.route_ids[r], "kind": kind,
                     "value": value, "limit": limit, "slack": slack, "excess": excess,
                     "route": r, "ref": ref, "hard": hard, "note": note})

    for r in range(F):
        if np.isfinite(inst.daily_max[r]):
            lim = inst.daily_max[r]
            add(f"daily_max:{inst.route_ids[r]}", r, "daily_max", A[r], lim, lim - A[r], A[r] - lim, r)
        if np.isfinite(inst.headroom[r]):
            lim = max(inst.headroom[r], 0.0)
            note = "facility already above its limit: closed" if inst.headroom[r] < 0 else ""
            add(f"facility_headroom:{inst.route_ids[r]}", r, "facility_headroom", A[r], lim,
                lim - A[r], A[r] - lim, r, note)
        if inst.daily_min[r] > 0:
            lim = inst.daily_min[r]
            add(f"daily_min:{inst.route_ids[r]}", r, "daily_min", A[r], lim, A[r] - lim,
                0.0, r, "soft: shortfall is priced at the shortfall fee", hard=False)
    seg_ref = 0
    for fam in inst.conc:
        r = fam.route
        idx = on[r]
        where = fam.where[idx]
        a = funder[idx]
        if fam.per_codes is None:
            seg_amt = np.array([a[where].sum()])
        else:
            codes = fam.per_codes[idx]
            ok = where & (codes >= 0)
            seg_amt = np.bincount(codes[ok], weights=a[ok], minlength=max(len(fam.per_values), 1))
        for j, s in enumerate(fam.segments):
            amt = float(seg_amt[s.code]) if s.code >= 0 else (float(seg_amt[0]) if fam.per_codes is None else 0.0)
            portfolio = s.basis.value == "portfolio"
            base = s.existing_total + A[r] if portfolio else A[r]
            held = s.existing_segment + amt if portfolio else amt
            share_now = held / base if base > 0 else 0.0
            excess = held - s.alpha * base
            note = ""
            if s.breached:
                note = "existing portfolio above the cap: segment closed to new loans"
                excess = amt  # the only hard requirement left: no new loans of the segment
            add(f"concentration:{inst.route_ids[r]}:{s.label}", r, "concentration", share_now, s.alpha,
                s.alpha - share_now, excess, seg_ref + j, note)
        seg_ref += len(fam.segments)
    for j, t in enumerate(inst.wa):
        r = t.route
        idx = on[r]
        w = inst.fields[t.field][idx]
        a = funder[idx]
        tot = a.sum()
        aw = float((a * w).sum())
        avg = aw / tot if tot > 0 else float("nan")
        if t.min is not None:
            add(f"weighted_average_min:{inst.route_ids[r]}:{t.field}", r, "weighted_average_min",
                avg, t.min, avg - t.min if tot > 0 else float("nan"), -(aw - t.min * tot), j)
        if t.max is not None:
            add(f"weighted_average_max:{inst.route_ids[r]}:{t.field}", r, "weighted_average_max",
                avg, t.max, t.max - avg if tot > 0 else float("nan"), aw - t.max * tot, j)
    if inst.obligor_rows:
        values = obligor_values(inst, route)
        for j, o in enumerate(inst.obligor_rows):
            val = float(values[j])
            add(f"obligor:{inst.route_ids[o.route]}:{o.borrower}", o.route, "obligor", val, o.limit,
                o.limit - val, val - o.limit, j)
    if np.isfinite(inst.platform_capacity):
        used_p = platform_used(inst, route)
        add(f"platform_capacity:{inst.route_ids[-1]}", R - 1, "platform_capacity", used_p,
            inst.platform_capacity, inst.platform_capacity - used_p, used_p - inst.platform_capacity, 0)
    cols = ["constraint", "funder_id", "kind", "value", "limit", "slack", "excess", "route", "ref", "hard", "note"]
    return pd.DataFrame.from_records(recs, columns=cols)


def _pick(weights: np.ndarray, need: float) -> np.ndarray:
    """Indices (into ``weights``) whose removal frees at least ``need``: the smallest single one
    that suffices, else the largest ones in turn."""
    pos = weights > 0
    if need <= 0 or not pos.any():
        return np.zeros(0, dtype=np.int64)
    idx = np.flatnonzero(pos)
    w = weights[idx]
    enough = w >= need
    if enough.any():
        k = idx[enough][np.argmin(w[enough])]
        return np.array([k])
    order = idx[np.argsort(-w, kind="stable")]
    csum = np.cumsum(weights[order])
    stop = int(np.searchsorted(csum, need)) + 1
    return order[:stop]


def repair(inst: Instance, route: np.ndarray, tol: float = ENGINE_TOL,
           max_rounds: int = 10_000) -> tuple[np.ndarray, int, pd.DataFrame]:
    """Move loans to unfunded until no hard row is over its limit.

    Returns the route, the number of loans moved, and the final evaluation."""
    route = route.copy()
    R = inst.R
    moved = 0
    for _ in range(max_rounds):
        ev = evaluate(inst, route)
        bad = ev[ev["hard"] & (ev["excess"] > tol)]
        if bad.empty:
            return route, moved, ev
        funder = funder_amounts(inst, route)
        obligor = bad[bad["kind"] == "obligor"]
        if len(obligor):
            # obligor rows are independent of each other (disjoint loans): fix them all at once
            has = np.flatnonzero(inst.obligor_slot >= 0)
            for row in obligor.itertuples():
                o = inst.obligor_rows[int(row.ref)]
                on = has[(route[has] == o.route) & (inst.obligor_slot[has] == o.slot)]
                pick = on[_pick(funder[on], float(row.excess) + tol)]
                route[pick] = R
                moved += len(pick)
            continue
        # one row per route in a round: a route's rows share its loans, so fixing one changes
        # the others, but routes do not touch each other (unfunding a loan only frees platform
        # capital), so on a big day this takes a few rounds rather than one per broken row.
        # The platform row, which spans every route, waits until it is the only one broken
        rows = bad[bad["kind"] != "platform_capacity"]
        rows = rows.drop_duplicates("route") if len(rows) else bad.iloc[:1]
        for row in rows.itertuples():
            pick = _repair_pick(inst, route, funder, row.route, row.kind, int(row.ref), float(row.excess) + tol)
            route[pick] = R
            moved += len(pick)
    raise RuntimeError("repair did not converge")  # pragma: no cover


def _repair_pick(inst: Instance, route: np.ndarray, funder: np.ndarray, r: int, kind: str, ref: int,
                 need: float) -> np.ndarray:
    """The loans whose unfunding brings one broken row back under its limit."""
    on = route == r
    if kind in ("daily_max", "facility_headroom"):
        weight = np.where(on, funder, 0.0)
    elif kind == "platform_capacity":
        weight = np.append(inst.platform_share, 0.0)[route] * inst.principal
    elif kind == "concentration":
        from .engine import _segment_of
        fam, seg = _segment_of(inst, ref)
        member = fam.member_code() == (0 if fam.per_codes is None else seg.code)
        factor = 1.0 if seg.breached else (1.0 - seg.alpha)
        weight = np.where(on & member, funder * factor, 0.0)
    elif kind == "weighted_average_min":
        t = inst.wa[ref]
        weight = np.where(on, funder * (t.min - np.nan_to_num(inst.fields[t.field])), 0.0)
    elif kind == "weighted_average_max":
        t = inst.wa[ref]
        weight = np.where(on, funder * (np.nan_to_num(inst.fields[t.field]) - t.max), 0.0)
    else:  # pragma: no cover
        raise AssertionError(kind)
    pick = _pick(weight, need)
    if len(pick) == 0:  # nothing left to move: unfund the whole route
        pick = np.flatnonzero(on)
    return pick
