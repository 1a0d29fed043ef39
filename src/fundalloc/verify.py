"""An independent check of a plan folder against the input files.

It shares nothing with the solve path but the edge readers: eligibility, every limit and the
objective are recomputed here with plain pandas from ``allocations.csv`` and the inputs, in the
words of ``model.md``. Tolerance: 0.01 currency units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError, Problem
from .io import read_bids, read_exposures, read_originations, read_portfolio, read_table
from .terms import Basis, InRule, NotInRule, RangeRule, RateGrid, Rule, Terms, load_terms

TOL = 0.01


@dataclass
class Report:
    violations: list[dict[str, Any]] = field(default_factory=list)
    objective: float = float("nan")
    plan_objective: float = float("nan")
    lower_bound: float = float("nan")
    gap: float = float("nan")
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, check: str, funder_id: str, detail: str, amount: float = float("nan")) -> None:
        self.violations.append({"check": check, "funder_id": funder_id, "detail": detail, "amount": amount})

    def lines(self) -> list[str]:
        out = [f"checked {self.checked} constraints; objective {self.objective:,.4f} "
               f"(plan.json {self.plan_objective:,.4f}); lower bound {self.lower_bound:,.4f}; gap {self.gap:.3e}"]
        for v in self.violations[:200]:
            out.append(f"VIOLATION {v['check']} [{v['funder_id']}]: {v['detail']}")
        if len(self.violations) > 200:
            out.append(f"... and {len(self.violations) - 200} more violations")
        out.append("OK: no hard constraint is broken" if self.ok else f"FAILED: {len(self.violations)} violations")
        return out


def _rule_ok(series: pd.Series, rule: Rule) -> pd.Series:
    present = series.notna()
    if isinstance(rule, RangeRule):
        v = pd.to_numeric(series, errors="coerce")
        ok = v.notna()
        if rule.min is not None:
            ok &= v >= rule.min
        if rule.max is not None:
            ok &= v <= rule.max
        return ok.fillna(False).astype(bool)
    values = rule.values if isinstance(rule, InRule) else rule.not_in
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        hit = series.isin([float(v) for v in values])
    else:
        hit = series.astype("string").isin([str(v) for v in values])
    hit = hit.fillna(False).astype(bool)
    return (hit & present) if isinstance(rule, InRule) else (present & ~hit)


def _all_rules(df: pd.DataFrame, rules: dict[str, Rule]) -> pd.Series:
    ok = pd.Series(True, index=df.index)
    for col, rule in rules.items():
        ok &= _rule_ok(df[col], rule)
    return ok


def _price(df: pd.DataFrame, price: float | RateGrid) -> pd.Series:
    """Each loan's rate: the first grid line whose rules it meets, else the default."""
    if not isinstance(price, RateGrid):
        return pd.Series(float(price), index=df.index)
    out = pd.Series(price.default, index=df.index, dtype=float)
    done = pd.Series(False, index=df.index)
    for line in price.lines:
        hit = _all_rules(df, line.where) & ~done
        out[hit] = line.rate
        done |= hit
    return out


def verify_plan(originations: str | Path, funders: str | Path, plan_dir: str | Path,
                portfolio: str | Path | None = None, exposures: str | Path | None = None,
                bids: str | Path | None = None) -> Report:
    terms: Terms = load_terms(funders)
    loans = read_originations(originations)
    bid_table = read_bids(bids) if bids else None
    port = read_portfolio(portfolio) if portfolio else None
    expo = read_exposures(exposures) if exposures else None
    plan_dir = Path(plan_dir)
    alloc_path = plan_dir / "allocations.csv"
    if not alloc_path.exists():
        raise InputError(Problem(str(alloc_path), "", "the plan folder has no allocations.csv"))
    alloc = read_table(alloc_path, string_columns=("loan_id", "funder_id"))
    for c in ("loan_id", "funder_id", "funder_amount", "platform_amount", "cost"):
        if c not in alloc.columns:
            raise InputError(Problem(str(alloc_path), f"column '{c}'", "required column is missing"))
    summary = {}
    if (plan_dir / "plan.json").exists():
        try:
            summary = json.loads((plan_dir / "plan.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(Problem(str(plan_dir / "plan.json"), "", f"cannot read the plan summary: {exc}")) from None

    rep = Report()
    plat = terms.platform
    by_id = {f.id: f for f in terms.funders}

    # every loan exactly once
    ids = loans["loan_id"].astype(str)
    aids = alloc["loan_id"].astype(str)
    dup = aids[aids.duplicated()]
    if len(dup):
        rep.add("allocated_once", "", f"{len(dup)} loans appear more than once, e.g. {list(dup[:5])}")
    missing = set(ids) - set(aids)
    extra = set(aids) - set(ids)
    if missing:
        rep.add("allocated_once", "", f"{len(missing)} loans have no allocation row, e.g. {sorted(missing)[:5]}")
    if extra:
        rep.add("allocated_once", "", f"{len(extra)} allocation rows name unknown loans, e.g. {sorted(extra)[:5]}")
    rep.checked += 1

    # the plan's columns under names no originations column can take (a loan file may carry its
    # own columns called cost or funder_id)
    plan_cols = {c: f"\x00plan.{c}" for c in ("funder_id", "funder_amount", "platform_amount", "cost")}
    planned = alloc[["loan_id", *plan_cols]].drop_duplicates("loan_id").rename(columns=plan_cols)
    df = loans.merge(planned, on="loan_id", how="left", validate="one_to_one")
    route = df[plan_cols["funder_id"]].fillna("").astype(str)
    known = set(by_id) | {plat.id, ""}
    unknown = sorted(set(route) - known)
    if unknown:
        rep.add("route", "", f"unknown funder ids in allocations: {unknown[:5]}")
    p = df["principal"].astype(float)
    life = (df["tenor_months"].astype(float) + 1) / 24
    if "expected_life_years" in df.columns:
        life = df["expected_life_years"].astype(float).where(df["expected_life_years"].notna(), life)
    share = route.map({**{f.id: f.funding_share for f in terms.funders}, plat.id: 1.0}).astype(float)
    rate = pd.Series(0.0, index=df.index)
    fee = pd.Series(0.0, index=df.index)
    rate[route == plat.id] = plat.cost_of_capital
    bid = pd.Series(np.nan, index=df.index)  # a bidding funder's price for each loan it holds
    bidders: set[str] = set()
    if bid_table is not None and len(bid_table):
        bidders = set(bid_table["funder_id"].astype(str))
        quotes = dict(zip(zip(bid_table["loan_id"].astype(str), bid_table["funder_id"].astype(str)),
                          bid_table["price"].astype(float)))
        bid = pd.Series([quotes.get((lid, fid), np.nan) for lid, fid in zip(df["loan_id"].astype(str), route)],
                        index=df.index)
    for f in terms.funders:  # each loan's price at its funder: a number, its rate grid's line, or its bid
        mine = route == f.id
        if mine.any() and f.id in bidders:  # the bid replaces the rate: s (1 - price) upfront
            rate[mine] = 0.0
            fee[mine] = 1.0 - bid[mine]
        elif mine.any():
            rate[mine] = _price(df[mine], f.cost_of_funds)
            fee[mine] = _price(df[mine], f.upfront_fee)
    funded = route != ""
    a = (share * p).where(funded, 0.0)
    b = ((1 - share) * p).where(funded & (route != plat.id), 0.0)
    cost = (p * (share * (rate * life + fee) + (1 - share) * plat.cost_of_capital * life)).where(funded, 0.0)

    fa = df[plan_cols["funder_amount"]].astype(float).fillna(0.0)
    pa = df[plan_cols["platform_amount"]].astype(float).fillna(0.0)
    ca = df[plan_cols["cost"]].astype(float).fillna(0.0)
    for name, mine, theirs in (("funder_amount", a, fa), ("platform_amount", b, pa), ("cost", cost, ca)):
        bad = (mine - theirs).abs() > TOL
        if bad.any():
            rep.add("amounts", "", f"{int(bad.sum())} rows where {name} differs from the model "
                                   f"(first: loan {df.loc[bad.idxmax(), 'loan_id']})")
    rep.checked += 1

    # eligibility and closures
    for f in list(terms.funders) + [None]:
        fid = f.id if f else plat.id
        mask = route == fid
        if not mask.any():
            continue
        sub = df[mask]
        rules = f.eligibility if f else plat.eligibility
        ok = _all_rules(sub, rules)
        if f:
            for w in f.weighted_average:
                ok &= pd.to_numeric(sub[w.field], errors="coerce").notna()
            if f.obligor_limit is not None:
                ok &= sub["borrower_id"].notna() if "borrower_id" in sub else False
        if f and f.id in bidders:  # a bidding funder takes only the loans it bid on
            ok &= bid[mask].notna()
        if (~ok).any():
            rep.add("eligibility", fid, f"{int((~ok).sum())} loans not eligible, e.g. {list(sub.loc[~ok, 'loan_id'][:5])}")
        rep.checked += 1

    A = a.groupby(route).sum()
    for f in terms.funders:
        Af = float(A.get(f.id, 0.0))
        Cf = Af  # what the caps count: the funder amount, or its share of the loans' measured amounts
        if f.cap_measure:
            on_f = route == f.id
            Cf = float((f.funding_share * pd.to_numeric(df.loc[on_f, f.cap_measure], errors="coerce")).sum())
        for kind, cap in (("daily_max", f.daily_max), ("monthly_max", f.monthly_max)):
            if cap is not None:  # one day can never use more than the month's quota
                rep.checked += 1
                if Cf > cap + TOL:
                    rep.add(kind, f.id, f"{Cf:,.2f} > {cap:,.2f}", Cf - cap)
        if f.facility_limit is not None:
            rep.checked += 1
            head = f.facility_limit - f.outstanding
            if Cf > max(head, 0.0) + TOL:
                rep.add("facility_headroom", f.id, f"{Cf:,.2f} > headroom {head:,.2f}", Cf - head)
        if f.min_if_used is not None:
            rep.checked += 1
            if TOL < Af < f.min_if_used - TOL:
                rep.add("min_if_used", f.id, f"{Af:,.2f}: neither nothing nor at least {f.min_if_used:,.2f}",
                        f.min_if_used - Af)
        if f.daily_min_hard is not None:
            rep.checked += 1
            if Af < f.daily_min_hard - TOL:
                rep.add("daily_min_hard", f.id, f"{Af:,.2f} < the hard minimum {f.daily_min_hard:,.2f}",
                        f.daily_min_hard - Af)
        on = route == f.id
        for c in f.concentration:
            basis = c.basis or (Basis.PORTFOLIO if port is not None and c.measure != "count" else Basis.NEW)
            seg = _all_rules(df, c.where) & on
            if c.measure == "count":  # a share of today's loan count
                keys = df[c.per].astype("string") if c.per else None
                parts = ([(f"{c.name}[{v}]", seg & (keys == v).fillna(False)) for v in sorted(keys[seg].dropna().unique())]
                         if c.per else [(c.name, seg)])
                n_on = int(on.sum())
                for label, mask in parts:
                    rep.checked += 1
                    if int(mask.sum()) > c.max_share * n_on + 1e-9:
                        rep.add("concentration", f.id, f"{label}: {int(mask.sum())} loans > {c.max_share} x {n_on}",
                                float(mask.sum() - c.max_share * n_on))
                continue
            E = ES = 0.0
            pseg = None
            if basis == Basis.PORTFOLIO and port is not None:
                prow = port[port["funder_id"] == f.id]
                E = float(prow["outstanding"].sum())
                pin = prow[_all_rules(prow, c.where)]
                ES = float(pin["outstanding"].sum())
                if c.per:
                    pseg = pin.groupby(pin[c.per].astype(str))["outstanding"].sum()
            groups: list[tuple[str, pd.Series, float]]
            if c.per:
                keys = df[c.per].astype("string")
                vals = set(keys[seg].dropna().unique()) | (set(pseg.index) if pseg is not None else set())
                groups = [(v, seg & (keys == v).fillna(False), float(pseg.get(v, 0.0)) if pseg is not None else 0.0)
                          for v in sorted(vals)]
            else:
                groups = [("", seg, ES)]
            for v, m, es in groups:
                rep.checked += 1
                new_seg = float(a[m].sum())
                label = f"{c.name}[{v}]" if v else c.name
                if basis == Basis.PORTFOLIO and es > c.max_share * E + 1e-9 * max(E, 1.0):
                    if new_seg > TOL:
                        rep.add("concentration", f.id, f"{label}: portfolio already above the cap, yet "
                                                       f"{new_seg:,.2f} of new loans were added", new_seg)
                    continue
                held = es + new_seg
                base = (E if basis == Basis.PORTFOLIO else 0.0) + Af
                if held > c.max_share * base + TOL:
                    rep.add("concentration", f.id, f"{label}: {held:,.2f} > {c.max_share} x {base:,.2f}",
                            held - c.max_share * base)
        for w in f.weighted_average:
            rep.checked += 1
            vals = pd.to_numeric(df.loc[on, w.field], errors="coerce")
            amt = a[on]
            # the book (portfolio basis): its outstanding and outstanding x field
            E = EW = 0.0
            if w.basis == Basis.PORTFOLIO and f.weighted_average_base is not None:  # the book, as the terms give it
                E = float(f.weighted_average_base["outstanding"])
                EW = E * float(f.weighted_average_base.get(w.field, 0.0))
            elif w.basis == Basis.PORTFOLIO and port is not None and f"{w.field}_sum" in port.columns:
                prow = port[port["funder_id"] == f.id]
                E = float(prow["outstanding"].sum())
                EW = float(pd.to_numeric(prow[f"{w.field}_sum"], errors="coerce").sum())
            for side, bound, sign in (("min", w.min, -1.0), ("max", w.max, 1.0)):
                if bound is None:
                    continue
                room = sign * (bound * E - EW)  # what the book leaves (< 0: already outside the limit)
                if room < -1e-9 * max(abs(EW), 1.0):
                    room = 0.0  # today's loans held to the limit on their own
                s = float((amt * sign * (vals - bound)).sum())
                if s > room + TOL:
                    word = "below" if side == "min" else "above"
                    rep.add(f"weighted_average_{side}", f.id, f"{w.field}: average {word} {bound}", s - room)
        if f.obligor_limit is not None and on.any():
            per_b = a[on].groupby(df.loc[on, "borrower_id"].astype(str)).sum()
            if expo is not None:
                ex = expo[expo["funder_id"] == f.id].groupby("borrower_id")["outstanding"].sum()
                per_b = per_b.add(ex.reindex(per_b.index).fillna(0.0), fill_value=0.0)
            over = per_b[per_b > f.obligor_limit + TOL]
            rep.checked += len(per_b)
            for bid, val in over.items():
                rep.add("obligor", f.id, f"borrower {bid}: {val:,.2f} > {f.obligor_limit:,.2f}", val - f.obligor_limit)

    # diversification: no funder, and no group of funders, above its share of the day's funded
    # principal; a group's total within its daily maximum
    day = float(p[funded].sum())
    for f in terms.funders:
        x = f.max_share_of_day if f.max_share_of_day is not None else plat.max_funder_share
        if x is None:
            continue
        rep.checked += 1
        Af = float(A.get(f.id, 0.0))
        if Af > x * day + TOL:
            rep.add("funder_share", f.id, f"{Af:,.2f} > {x} x the day's {day:,.2f}", Af - x * day)
    for g in terms.groups:
        AG = float(sum(float(A.get(m, 0.0)) for m in g.members))
        on_g = route.isin(list(g.members))
        for c in g.concentration:  # each segment's share of the members' total today
            seg = _all_rules(df, c.where) & on_g
            parts = ([(f"{c.name}[{v}]", seg & (df[c.per].astype("string") == v).fillna(False))
                      for v in sorted(df.loc[seg, c.per].dropna().astype(str).unique())] if c.per else [(c.name, seg)])
            for label, mask in parts:
                rep.checked += 1
                if c.measure == "count":  # of the members' loans today
                    n_g = int(on_g.sum())
                    if int(mask.sum()) > c.max_share * n_g + 1e-9:
                        rep.add("group_concentration", g.name, f"{label}: {int(mask.sum())} loans > "
                                                               f"{c.max_share} x {n_g}", float(mask.sum() - c.max_share * n_g))
                    continue
                held = float(a[mask].sum())
                if held > c.max_share * AG + TOL:
                    rep.add("group_concentration", g.name, f"{label}: {held:,.2f} > {c.max_share} x {AG:,.2f}",
                            held - c.max_share * AG)
        for w in g.weighted_average:  # the members' loans of today
            vals = pd.to_numeric(df.loc[on_g, w.field], errors="coerce").fillna(0.0)
            amt = a[on_g]
            for side, bound, sign in (("min", w.min, -1.0), ("max", w.max, 1.0)):
                if bound is None:
                    continue
                rep.checked += 1
                s = float((amt * sign * (vals - bound)).sum())
                if s > TOL * max(1.0, abs(bound)):
                    word = "below" if side == "min" else "above"
                    rep.add(f"group_weighted_average_{side}", g.name, f"{w.field}: average {word} {bound}", s)
        if g.daily_max is not None:
            rep.checked += 1
            if AG > g.daily_max + TOL:
                rep.add("group_max", g.name, f"{AG:,.2f} > {g.daily_max:,.2f}", AG - g.daily_max)
        if g.max_share_of_day is not None:
            rep.checked += 1
            if AG > g.max_share_of_day * day + TOL:
                rep.add("group_share", g.name, f"{AG:,.2f} > {g.max_share_of_day} x the day's {day:,.2f}",
                        AG - g.max_share_of_day * day)

    if plat.daily_capacity is not None:
        rep.checked += 1
        used = float(b.sum() + p[route == plat.id].sum())
        if used > plat.daily_capacity + TOL:
            rep.add("platform_capacity", plat.id, f"{used:,.2f} > {plat.daily_capacity:,.2f}",
                    used - plat.daily_capacity)

    shortfall = sum(f.shortfall_fee * max(0.0, (f.daily_min or 0.0) - float(A.get(f.id, 0.0)))
                    for f in terms.funders)
    if plat.penalty_column:  # each loan's own value
        value = pd.to_numeric(df[plat.penalty_column], errors="coerce").astype(float)
        lost = float((value * p)[~funded].sum())
    else:
        lost = float(plat.unfunded_penalty * p[~funded].sum())
    fixed = sum(f.fixed_cost for f in terms.funders if f.fixed_cost and float(A.get(f.id, 0.0)) > 0)
    rep.objective = float(cost.sum() + lost + shortfall + fixed)
    rep.plan_objective = float(summary.get("objective", float("nan")))
    rep.lower_bound = float(summary.get("lower_bound", float("nan")))
    if np.isfinite(rep.lower_bound) and abs(rep.lower_bound) > 0:
        rep.gap = (rep.objective - rep.lower_bound) / abs(rep.lower_bound)
    elif rep.objective == 0:
        rep.gap = 0.0
    if np.isfinite(rep.plan_objective) and abs(rep.plan_objective - rep.objective) > max(TOL, 1e-9 * abs(rep.objective)):
        rep.add("objective", "", f"plan.json says {rep.plan_objective:,.4f}, the files give {rep.objective:,.4f}")
    return rep
