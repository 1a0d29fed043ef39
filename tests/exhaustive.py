"""Every whole-loan assignment of a small day, evaluated at once with numpy: the exact optimum.

Written from model.md alone, independently of the engine: each assignment is one row of an
``options ** n`` table (in chunks), every hard limit is checked on every row, and the cheapest
feasible row wins (ties: the first in enumeration order). Covers daily maximums, facility
headroom, concentration (both bases, ``per`` columns), weighted averages, obligor limits with
exposures, platform capacity, soft daily minimums and diversification (funders' and groups'
shares of the day, groups' caps). Practical up to about 5 million
assignments (e.g. 12 loans over 2 routes, 9 loans over 4).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fundalloc.terms import Basis, InRule, NotInRule, RangeRule, RateGrid, Terms

TOL = 1e-7


def _rule_mask(col: pd.Series, rule) -> np.ndarray:
    present = col.notna().to_numpy()
    if isinstance(rule, RangeRule):
        v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
        ok = ~np.isnan(v)
        if rule.min is not None:
            ok &= v >= rule.min
        if rule.max is not None:
            ok &= v <= rule.max
        return ok
    values = rule.values if isinstance(rule, InRule) else rule.not_in
    if pd.api.types.is_numeric_dtype(col.dtype):
        hit = col.isin([float(v) for v in values if _is_num(v)]).to_numpy()
    else:
        hit = col.astype(str).isin([str(v) for v in values]).to_numpy()
    return present & hit if isinstance(rule, InRule) else present & ~hit


def _is_num(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _all(df: pd.DataFrame, rules: dict) -> np.ndarray:
    ok = np.ones(len(df), dtype=bool)
    for c, r in rules.items():
        ok &= _rule_mask(df[c], r)
    return ok


def _price(loans: pd.DataFrame, price) -> np.ndarray:
    """Per loan: a number, or a rate grid's first matching line (else its default)."""
    if not isinstance(price, RateGrid):
        return np.full(len(loans), float(price))
    out = np.full(len(loans), price.default)
    done = np.zeros(len(loans), dtype=bool)
    for line in price.lines:
        hit = _all(loans, line.where) & ~done
        out[hit] = line.rate
        done |= hit
    return out


def exact_optimum(loans: pd.DataFrame, terms: Terms, portfolio: pd.DataFrame | None = None,
                  exposures: pd.DataFrame | None = None, chunk: int = 1 << 18,
                  bids: pd.DataFrame | None = None) -> tuple[float, np.ndarray | None]:
    """The least objective over every whole-loan assignment, and one assignment that reaches it
    (route index per loan: funders in order, then the platform, then ``R`` for unfunded)."""
    loans = loans.reset_index(drop=True)
    n = len(loans)
    fs = list(terms.funders)
    plat = terms.platform
    R = len(fs) + 1
    p = loans["principal"].to_numpy(dtype=float)
    life = (loans["tenor_months"].to_numpy(dtype=float) + 1) / 24
    if "expected_life_years" in loans:
        given = pd.to_numeric(loans["expected_life_years"], errors="coerce").to_numpy(dtype=float)
        life = np.where(np.isnan(given), life, given)
    share = np.array([f.funding_share for f in fs] + [1.0])
    plat_share = np.array([1 - f.funding_share for f in fs] + [1.0])
    cost = np.zeros((n, R + 1))
    for r, f in enumerate(fs):
        s = f.funding_share
        rate, fee = _price(loans, f.cost_of_funds), _price(loans, f.upfront_fee)
        cost[:, r] = p * (s * (rate * life + fee) + (1 - s) * plat.cost_of_capital * life)
    quoted = {}  # bidding funder -> each loan's price (nan: no bid, not eligible)
    if bids is not None:
        ids = loans["loan_id"].astype(str).tolist()
        for f in fs:
            mine = bids[bids["funder_id"].astype(str) == f.id]
            if len(mine):
                q = dict(zip(mine["loan_id"].astype(str), mine["price"].astype(float)))
                quoted[f.id] = np.array([q.get(i, np.nan) for i in ids])
    for r, f in enumerate(fs):
        if f.id in quoted:  # the bid replaces the funder's rate: s (1 - price), upfront
            s = f.funding_share
            cost[:, r] = p * (s * (1.0 - np.nan_to_num(quoted[f.id])) + (1 - s) * plat.cost_of_capital * life)
    cost[:, R - 1] = p * plat.cost_of_capital * life
    if isinstance(plat.unfunded_penalty, str):  # each loan's own value
        cost[:, R] = p * pd.to_numeric(loans[plat.unfunded_penalty]).to_numpy(dtype=float)
    else:
        cost[:, R] = p * plat.unfunded_penalty
    elig = np.zeros((n, R + 1), dtype=bool)
    elig[:, R] = True
    for r, f in enumerate(fs):
        ok = _all(loans, f.eligibility)
        for w in f.weighted_average:
            ok &= pd.to_numeric(loans[w.field], errors="coerce").notna().to_numpy()
        if f.obligor_limit is not None:
            ok &= loans["borrower_id"].notna().to_numpy()
        if f.id in quoted:
            ok &= ~np.isnan(quoted[f.id])
        elig[:, r] = ok
    elig[:, R - 1] = _all(loans, plat.eligibility)
    options = [np.flatnonzero(elig[i]) for i in range(n)]
    sizes = [len(o) for o in options]
    total = math.prod(sizes)

    # concentration segments: (route, member mask, alpha, E, E_S, closed)
    segments = []
    for r, f in enumerate(fs):
        for c in f.concentration:
            basis = c.basis or (Basis.PORTFOLIO if portfolio is not None else Basis.NEW)
            inseg = _all(loans, c.where)
            E = 0.0
            prow = None
            if basis == Basis.PORTFOLIO and portfolio is not None:
                prow = portfolio[portfolio["funder_id"].astype(str) == f.id]
                E = float(prow["outstanding"].sum())
                prow = prow[_all(prow, c.where)]
            if c.per:
                keys = loans[c.per]
                vals = set(keys[inseg & keys.notna().to_numpy()].astype(str))
                if prow is not None:
                    vals |= set(prow[c.per].astype(str))
                for v in sorted(vals):
                    m = inseg & (keys.astype(str) == v).to_numpy() & keys.notna().to_numpy()
                    es = float(prow.loc[prow[c.per].astype(str) == v, "outstanding"].sum()) if prow is not None else 0.0
                    segments.append((r, m, c.max_share, E, es, basis, c.measure == "count"))
            else:
                es = float(prow["outstanding"].sum()) if prow is not None else 0.0
                segments.append((r, inseg, c.max_share, E, es, basis, c.measure == "count"))
    exp = {}
    if exposures is not None:
        for row in exposures.itertuples(index=False):
            exp[(str(row.funder_id), str(row.borrower_id))] = exp.get((str(row.funder_id), str(row.borrower_id)), 0.0) \
                + float(row.outstanding)

    best, best_combo = math.inf, None
    radices = np.array(sizes, dtype=np.int64)
    for start in range(0, total, chunk):
        idx = np.arange(start, min(total, start + chunk), dtype=np.int64)
        choice = np.empty((len(idx), n), dtype=np.int64)
        rest = idx.copy()
        for i in range(n - 1, -1, -1):
            choice[:, i] = options[i][rest % radices[i]]
            rest //= radices[i]
        ok = np.ones(len(idx), dtype=bool)
        obj = cost[np.arange(n)[None, :], choice].sum(axis=1)
        amt = np.where(choice < R, share[np.minimum(choice, R - 1)] * p[None, :], 0.0)
        A = np.stack([np.where(choice == r, amt, 0.0).sum(axis=1) for r in range(R)], axis=1)
        used = np.where(choice < R, plat_share[np.minimum(choice, R - 1)] * p[None, :], 0.0).sum(axis=1)
        if plat.daily_capacity is not None:
            ok &= used <= plat.daily_capacity + TOL
        for r, f in enumerate(fs):
            C = A[:, r]  # what the caps count
            if f.cap_measure:
                meas = pd.to_numeric(loans[f.cap_measure]).to_numpy(dtype=float)
                C = np.where(choice == r, f.funding_share * meas[None, :], 0.0).sum(axis=1)
            for cap in (f.daily_max, f.monthly_max):
                if cap is not None:
                    ok &= C <= cap + TOL
            if f.facility_limit is not None:
                ok &= C <= max(f.facility_limit - f.outstanding, 0.0) + TOL
            if f.daily_min_hard is not None:
                ok &= A[:, r] >= f.daily_min_hard - TOL
            if f.min_if_used is not None:
                ok &= (A[:, r] <= TOL) | (A[:, r] >= f.min_if_used - TOL)
            if f.fixed_cost:
                obj = obj + np.where(A[:, r] > 0, f.fixed_cost, 0.0)
            on = choice == r
            for w in f.weighted_average:
                v = pd.to_numeric(loans[w.field], errors="coerce").to_numpy(dtype=float)
                v = np.nan_to_num(v)
                E = EW = 0.0  # the book, on the portfolio basis
                if w.basis == Basis.PORTFOLIO and f.weighted_average_base is not None:
                    E = f.weighted_average_base["outstanding"]
                    EW = E * f.weighted_average_base[w.field]
                elif w.basis == Basis.PORTFOLIO:
                    prow = portfolio[portfolio["funder_id"].astype(str) == f.id]
                    E, EW = float(prow["outstanding"].sum()), float(prow[f"{w.field}_sum"].sum())
                for bound, sign in ((w.min, -1.0), (w.max, 1.0)):
                    if bound is None:
                        continue
                    room = sign * (bound * E - EW)
                    room = room if room >= -1e-9 * max(abs(EW), 1.0) else 0.0  # a book outside: today's alone
                    ok &= (np.where(on, amt * sign * (v[None, :] - bound), 0.0).sum(axis=1)) <= room + TOL
            if f.obligor_limit is not None:
                bids = loans["borrower_id"].astype(str).to_numpy()
                for b in sorted(set(bids)):
                    mb = bids == b
                    ok &= (np.where(on & mb[None, :], amt, 0.0).sum(axis=1)) + exp.get((f.id, b), 0.0) \
                        <= f.obligor_limit + TOL
            if f.daily_min:
                obj = obj + f.shortfall_fee * np.maximum(f.daily_min - A[:, r], 0.0)
        for r, m, alpha, E, es, basis, counts in segments:
            on = choice == r
            if counts:  # a share of today's loan count
                ok &= (on & m[None, :]).sum(axis=1) <= alpha * on.sum(axis=1) + TOL
                continue
            seg = np.where(on & m[None, :], amt, 0.0).sum(axis=1)
            if basis == Basis.PORTFOLIO and es > alpha * E + 1e-9 * max(E, 1.0):
                ok &= seg <= TOL  # closed: no new loans of the segment
            elif basis == Basis.PORTFOLIO:
                ok &= es + seg <= alpha * (E + A[:, r]) + TOL
            else:
                ok &= seg <= alpha * A[:, r] + TOL
        # diversification: a funder's or a group's share of the day's funded principal, a group's cap
        day = np.where(choice < R, p[None, :], 0.0).sum(axis=1)
        for r, f in enumerate(fs):
            x = f.max_share_of_day if f.max_share_of_day is not None else plat.max_funder_share
            if x is not None:
                ok &= A[:, r] <= x * day + TOL
        index = {f.id: r for r, f in enumerate(fs)}
        for g in terms.groups:
            tot = A[:, [index[m] for m in g.members]].sum(axis=1)
            on_g = np.isin(choice, [index[m] for m in g.members])
            for c in g.concentration:
                inseg = _all(loans, c.where)
                keys = [None] if not c.per else sorted(set(loans.loc[inseg & loans[c.per].notna().to_numpy(), c.per].astype(str)))
                for v in keys:
                    m = inseg if v is None else inseg & (loans[c.per].astype(str) == v).to_numpy() & loans[c.per].notna().to_numpy()
                    if c.measure == "count":
                        ok &= (on_g & m[None, :]).sum(axis=1) <= c.max_share * on_g.sum(axis=1) + TOL
                    else:
                        ok &= np.where(on_g & m[None, :], amt, 0.0).sum(axis=1) <= c.max_share * tot + TOL
            for w in g.weighted_average:
                v = np.nan_to_num(pd.to_numeric(loans[w.field], errors="coerce").to_numpy(dtype=float))
                for bound, sign in ((w.min, -1.0), (w.max, 1.0)):
                    if bound is not None:
                        ok &= np.where(on_g, amt * sign * (v[None, :] - bound), 0.0).sum(axis=1) <= TOL
            if g.daily_max is not None:
                ok &= tot <= g.daily_max + TOL
            if g.max_share_of_day is not None:
                ok &= tot <= g.max_share_of_day * day + TOL
        obj = np.where(ok, obj, np.inf)
        k = int(np.argmin(obj))
        if obj[k] < best - 1e-12:
            best, best_combo = float(obj[k]), choice[k].copy()
    return best, best_combo
