"""Every hard and soft row of the model, evaluated on a whole-loan assignment, in the limits' units.

``evaluate`` reads the one encoding of the rows (:mod:`fundalloc.solve.rows`) and reports each as
the treasury reads it: its value, limit and slack in the limit's own units (currency for caps, a
share for concentration, field units for weighted averages) and ``excess``, how far over the
limit it is in currency (> 0 means broken).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .instance import Instance
from .solve.rows import TOL, RouteIndex, Rows, objective

ENGINE_TOL = TOL  # currency units; the contract's tolerance is 0.01


def amounts(inst: Instance, route: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Funder amount, platform amount and funding cost per loan (zeros when unfunded)."""
    R = inst.R
    funded = route < R
    r = np.where(funded, route, 0)
    p = inst.principal
    funder = np.where(funded, inst.share[r] * p, 0.0)
    platform = np.where(funded, np.where(r == inst.platform_route, 0.0, inst.platform_share[r] * p), 0.0)
    k1, k0 = inst.rates(None, r)
    cost = np.where(funded, p * (k1 * inst.life + k0), 0.0)
    return funder, platform, cost


def funder_amounts(inst: Instance, route: np.ndarray) -> np.ndarray:
    """Funder amount per loan (zero when unfunded)."""
    return np.append(inst.share, 0.0)[route] * inst.principal


def route_totals(inst: Instance, route: np.ndarray) -> np.ndarray:
    return np.bincount(route, weights=funder_amounts(inst, route), minlength=inst.R + 1)[: inst.R]


def platform_used(inst: Instance, route: np.ndarray) -> float:
    """Platform money: its share of joint loans plus whole loans on the platform route."""
    return float(np.dot(np.append(inst.platform_share, 0.0)[route], inst.principal))


def whole_objective(inst: Instance, route: np.ndarray) -> float:
    """The plan's objective: funding cost, unfunded principal at the penalty, shortfall fees."""
    return objective(inst, route)


def obligor_values(inst: Instance, route: np.ndarray, rows: Rows | None = None) -> np.ndarray:
    """Per obligor row: the borrower's existing exposure plus today's funder amount on the route."""
    rows = rows if rows is not None else Rows.build(inst)
    ob = rows.obligor
    existing = np.array([o.existing for o in inst.obligor_rows], dtype=float)
    return existing + ob.activity(RouteIndex.of(inst, route))


def evaluate(inst: Instance, route: np.ndarray, rows: Rows | None = None) -> pd.DataFrame:
    """Every row's value, limit, slack and excess, in the order of the plan's ``constraints.csv``:
    per funder its caps, soft and hard minimums, then concentration, weighted averages, obligor rows,
    diversification (funders' and groups' shares of the day, groups' caps) and the platform's
    capital."""
    rows = rows if rows is not None else Rows.build(inst)
    idx = RouteIndex.of(inst, route)
    A = idx.totals
    daily, facility, _, conc, wa, plat, gconc, gwa, groups, ob = rows.families
    recs: list[dict] = []

    def add(constraint, r, kind, value, limit, slack, excess, ref=-1, note="", hard=True, who=None):
        recs.append({"constraint": constraint, "funder_id": inst.route_ids[r] if who is None else who, "kind": kind,
                     "value": value, "limit": limit, "slack": slack, "excess": excess,
                     "route": r, "ref": ref, "hard": hard, "note": note})

    caps_d = dict(zip(daily.route.tolist(), range(daily.m)))
    caps_f = dict(zip(facility.route.tolist(), range(facility.m)))
    act_d, act_f = daily.activity(idx), facility.activity(idx)  # (measured amounts where a funder says)
    for r in range(inst.R - 1):
        if r in caps_d:
            lim = float(daily.rhs[caps_d[r]])
            v = float(act_d[caps_d[r]])
            add(daily.label[caps_d[r]], r, "daily_max", v, lim, lim - v, v - lim, r)
        if r in caps_f:
            lim = float(facility.rhs[caps_f[r]])
            note = "facility already above its limit: closed" if inst.headroom[r] < 0 else ""
            v = float(act_f[caps_f[r]])
            add(facility.label[caps_f[r]], r, "facility_headroom", v, lim, lim - v, v - lim, r, note)
        if inst.daily_min[r] > 0:
            lim = inst.daily_min[r]
            add(f"daily_min:{inst.route_ids[r]}", r, "daily_min", A[r], lim, A[r] - lim,
                0.0, r, "soft: shortfall is priced at the shortfall fee", hard=False)
        if inst.daily_min_hard[r] > 0:
            lim = inst.daily_min_hard[r]
            add(f"daily_min_hard:{inst.route_ids[r]}", r, "daily_min_hard", A[r], lim, A[r] - lim, lim - A[r], r)
        if inst.use_min is not None and inst.use_min[r] > 0:
            lim = inst.use_min[r]
            used = A[r] > 0
            add(f"min_if_used:{inst.route_ids[r]}", r, "min_if_used", A[r], lim, A[r] - lim if used else 0.0,
                lim - A[r] if used else 0.0, r, "" if used else "not used today: nothing or at least the minimum")
    seg_amt = conc.segment_amounts(idx)
    conc_base = conc.bases(idx)  # (the funder amount, or the loan count where the share counts loans)
    for k in range(conc.m):
        r = int(conc.route[k])
        fam, s = inst.segment_of(int(conc.ref[k]))
        portfolio = s.basis.value == "portfolio"
        base = s.existing_total + A[r] if portfolio else conc_base[k]
        held = s.existing_segment + seg_amt[k] if portfolio else seg_amt[k]
        share_now = held / base if base > 0 else 0.0
        note = "existing portfolio above the cap: segment closed to new loans" if s.breached else ""
        excess = seg_amt[k] if s.breached else held - s.alpha * base
        add(conc.label[k], r, "concentration", share_now, s.alpha, s.alpha - share_now, excess, int(conc.ref[k]), note)
    wsum = wa.weighted_sums(idx)
    for k in range(wa.m):
        r = int(wa.route[k])
        t = inst.wa[int(wa.ref[k])]
        b = float(wa.bound[k])
        note = ""
        if t.breached(b, float(wa.sign[k])):
            note = "the book is already outside the limit: today's loans held to it on their own"
            tot, wt = A[r], wsum[k]
        else:  # the book plus today's loans (the book is empty on the new basis)
            tot, wt = t.existing_total + A[r], t.existing_weighted + wsum[k]
        avg = wt / tot if tot > 0 else float("nan")
        slack = (avg - b if wa.kinds[k] == "weighted_average_min" else b - avg) if tot > 0 else float("nan")
        excess = float(wa.sign[k] * (wsum[k] - b * A[r]) - wa.rhs[k])
        add(wa.label[k], r, wa.kinds[k], avg, b, slack, excess, int(wa.ref[k]), note)
    if ob.m:
        used = ob.activity(idx)
        for j, o in enumerate(inst.obligor_rows):
            val = float(o.existing + used[j])
            add(ob.label[j], o.route, "obligor", val, o.limit, o.limit - val, val - o.limit, j)
    if gconc.m:
        seg, tot = gconc.amounts(idx)
        for k, (gc, lab, _) in enumerate(inst.group_segments):
            share = float(seg[k] / tot[k]) if tot[k] > 0 else 0.0
            alpha = float(gconc.alpha[k])
            add(gconc.label[k], -1, "group_concentration", share, alpha, alpha - share,
                float(seg[k] - alpha * tot[k]), k, who=gc.group)
    if gwa.m:
        ws, tot = gwa.sums(idx)
        for k, t in enumerate(inst.group_wa):
            avg = float(ws[k] / tot[k]) if tot[k] > 0 else float("nan")
            slack = (avg - t.bound) * -t.sign if tot[k] > 0 else float("nan")
            add(gwa.label[k], -1, t.kind, avg, t.bound, slack, float(t.sign * (ws[k] - t.bound * tot[k])), k,
                who=t.group)
    if groups.m:
        D = groups.funded(idx)
        AG = groups.group_amounts(idx)
        for k, g in enumerate(inst.groups):
            excess = float(AG[k] - g.alpha * D - g.cap)
            if g.kind == "group_max":
                add(g.label, -1, g.kind, float(AG[k]), g.cap, g.cap - float(AG[k]), excess, k, who=g.name)
            else:  # a share of the day's funded principal
                share = float(AG[k] / D) if D > 0 else 0.0
                add(g.label, g.members[0] if g.kind == "funder_share" else -1, g.kind, share, g.alpha,
                    g.alpha - share, excess, k, who=g.name)
    if plat.m:
        used_p = float(plat.activity(idx)[0])
        add(plat.label[0], inst.R - 1, "platform_capacity", used_p, inst.platform_capacity,
            inst.platform_capacity - used_p, used_p - inst.platform_capacity, 0)
    cols = ["constraint", "funder_id", "kind", "value", "limit", "slack", "excess", "route", "ref", "hard", "note"]
    return pd.DataFrame.from_records(recs, columns=cols)
