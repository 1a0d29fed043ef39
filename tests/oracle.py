"""Brute force over every whole-loan assignment of a tiny day: the true optimum, by enumeration.

Written from model.md alone, with plain Python loops, as an oracle for the engine.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd

from fundalloc.terms import InRule, NotInRule, RangeRule, RateGrid, Terms


def _ok(value, rule) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if isinstance(rule, RangeRule):
        v = float(value)
        return (rule.min is None or v >= rule.min) and (rule.max is None or v <= rule.max)
    vals = rule.values if isinstance(rule, InRule) else rule.not_in
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        hit = any(float(value) == float(v) for v in vals if _num(v))
    else:
        hit = str(value) in {str(v) for v in vals}
    return hit if isinstance(rule, InRule) else not hit


def _num(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _rules(row: dict, rules: dict) -> bool:
    return all(_ok(row.get(c), r) for c, r in rules.items())


def _price(row: dict, price) -> float:
    if not isinstance(price, RateGrid):
        return float(price)
    for line in price.lines:
        if _rules(row, line.where):
            return line.rate
    return price.default


def brute_force(loans: pd.DataFrame, terms: Terms, exposures: pd.DataFrame | None = None) -> tuple[float, tuple]:
    """Minimum objective over all assignments (new-basis concentration only)."""
    rows = loans.to_dict("records")
    plat = terms.platform
    routes = [f.id for f in terms.funders] + [plat.id]
    F = {f.id: f for f in terms.funders}
    exp = {}
    if exposures is not None:
        for r in exposures.to_dict("records"):
            exp[(r["funder_id"], r["borrower_id"])] = exp.get((r["funder_id"], r["borrower_id"]), 0.0) + r["outstanding"]
    options = []
    for row in rows:
        opts = [None]
        for rid in routes:
            if rid == plat.id:
                if _rules(row, plat.eligibility):
                    opts.append(rid)
                continue
            f = F[rid]
            if not _rules(row, f.eligibility):
                continue
            if any(row.get(w.field) is None or (isinstance(row.get(w.field), float) and math.isnan(row.get(w.field)))
                   for w in f.weighted_average):
                continue
            opts.append(rid)
        options.append(opts)
    best = (math.inf, None)
    for combo in itertools.product(*options):
        obj = _objective(rows, combo, terms, F, exp)
        if obj < best[0]:
            best = (obj, combo)
    return best


def _objective(rows, combo, terms, F, exp) -> float:
    plat = terms.platform
    total_cost = 0.0
    unfunded = 0.0
    A = {fid: 0.0 for fid in F}
    plat_used = 0.0
    for row, rid in zip(rows, combo):
        p = row["principal"]
        L = row.get("expected_life_years") or (row["tenor_months"] + 1) / 24
        if rid is None:
            unfunded += p
        elif rid == plat.id:
            total_cost += p * plat.cost_of_capital * L
            plat_used += p
        else:
            f = F[rid]
            s = f.funding_share
            rate, fee = _price(row, f.cost_of_funds), _price(row, f.upfront_fee)
            total_cost += p * (s * (rate * L + fee) + (1 - s) * plat.cost_of_capital * L)
            A[rid] += s * p
            plat_used += (1 - s) * p
    if plat.daily_capacity is not None and plat_used > plat.daily_capacity + 1e-9:
        return math.inf
    short = 0.0
    for fid, f in F.items():
        a = A[fid]
        if f.daily_max is not None and a > f.daily_max + 1e-9:
            return math.inf
        if f.facility_limit is not None and a > f.facility_limit - f.outstanding + 1e-9:
            return math.inf
        mine = [(row, f.funding_share * row["principal"]) for row, rid in zip(rows, combo) if rid == fid]
        for c in f.concentration:
            groups = {}
            for row, amt in mine:
                if _rules(row, c.where):
                    key = row.get(c.per) if c.per else ""
                    if c.per and (key is None or (isinstance(key, float) and math.isnan(key))):
                        continue
                    groups[key] = groups.get(key, 0.0) + amt
            if any(v > c.max_share * a + 1e-9 for v in groups.values()):
                return math.inf
        for w in f.weighted_average:
            s = sum(amt * (row[w.field] - (w.min if w.min is not None else 0)) for row, amt in mine)
            if w.min is not None and s < -1e-9:
                return math.inf
            if w.max is not None and sum(amt * (row[w.field] - w.max) for row, amt in mine) > 1e-9:
                return math.inf
        if f.obligor_limit is not None:
            per = {}
            for row, amt in mine:
                per[row["borrower_id"]] = per.get(row["borrower_id"], 0.0) + amt
            if any(v + exp.get((fid, b), 0.0) > f.obligor_limit + 1e-9 for b, v in per.items()):
                return math.inf
        if f.daily_min:
            short += f.shortfall_fee * max(0.0, f.daily_min - a)
        if f.daily_min_hard is not None and a < f.daily_min_hard - 1e-9:
            return math.inf
    # diversification: shares of the day's funded principal, groups' caps
    day = sum(row["principal"] for row, rid in zip(rows, combo) if rid is not None)
    for fid, f in F.items():
        x = f.max_share_of_day if f.max_share_of_day is not None else plat.max_funder_share
        if x is not None and A[fid] > x * day + 1e-9:
            return math.inf
    for g in terms.groups:
        total = sum(A[m] for m in g.members)
        for c in g.concentration:  # a segment's share of the members' total
            held: dict = {}
            for row, rid in zip(rows, combo):
                if rid in g.members and _rules(row, c.where):
                    key = row.get(c.per) if c.per else ""
                    if c.per and (key is None or (isinstance(key, float) and math.isnan(key))):
                        continue
                    held[key] = held.get(key, 0.0) + F[rid].funding_share * row["principal"]
            if any(v > c.max_share * total + 1e-9 for v in held.values()):
                return math.inf
        if g.daily_max is not None and total > g.daily_max + 1e-9:
            return math.inf
        if g.max_share_of_day is not None and total > g.max_share_of_day * day + 1e-9:
            return math.inf
    return total_cost + plat.unfunded_penalty * unfunded + short
