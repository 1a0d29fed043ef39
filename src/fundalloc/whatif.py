"""What-if analysis for analysts: scenarios from a base day, comparisons, sweeps, explanations.

    base = fa.plan(day)
    cut = fa.derive(day, funders={"bank_icbc": {"daily_max": 80e6}})
    fa.compare(base, fa.plan(cut, warm=base))           # cost, routes, loans that moved and why
    fa.sweep(day, "platform.daily_capacity", [6e8, 7e8, 8e8], warm=base)
    fa.shadow_prices(base)                               # binding limits, most valuable first
    fa.explain(base, day, "L00000042")                   # route, cost, cheaper route, what kept it out
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .api import Day, plan
from .errors import InputError, Problem
from .instance import compile_instance
from .plan import Plan
from .rules import ColumnView
from .terms import Terms, terms_from_dict

MAX_INCUMBENTS = 8  # earlier plans a sweep point considers as its incumbent (one loan-sized array each)


def derive(day: Day, *, funders: dict[str, dict[str, Any]] | None = None,
           platform: dict[str, Any] | None = None, remove: Iterable[str] = (),
           add: Iterable[dict[str, Any]] = (), scale: float | None = None,
           where: str | np.ndarray | pd.Series | None = None) -> Day:
    """A scenario: the base day with overrides.

    - ``funders``: per funder id, the fields to replace (any key of the funders contract);
    - ``platform``: platform fields to replace (e.g. ``daily_capacity``, ``cost_of_capital``);
    - ``remove``: funder ids to drop; ``add``: whole new funders (contract form);
    - ``scale``: multiply every loan's principal (a volume spike is ``scale=1.3``);
    - ``where``: keep only some originations (a pandas query string or a boolean mask).

    The result is validated like any input: an unknown funder or key raises :class:`InputError`.
    """
    terms = scenario_terms(day.terms, funders=funders, platform=platform, remove=remove, add=add)
    missing = sorted(terms.columns() - set(day.loans.columns))
    if missing:
        raise InputError(Problem("scenario", f"columns {missing}",
                                 "a rule names a column the originations do not have"))
    loans = day.loans
    if where is not None:
        loans = loans.query(where) if isinstance(where, str) else loans[np.asarray(where, dtype=bool)]
        loans = loans.reset_index(drop=True)
    if scale is not None:
        if not scale > 0:
            raise InputError(Problem("scenario", "scale", f"scale must be > 0, got {scale}"))
        loans = loans.assign(principal=loans["principal"] * float(scale))
    ids = set(terms.route_ids)
    port = day.portfolio
    expo = day.exposures
    if port is not None:
        port = port[port["funder_id"].isin(ids)].reset_index(drop=True)
    if expo is not None:
        expo = expo[expo["funder_id"].isin(ids)].reset_index(drop=True)
    bids = day.bids
    if bids is not None:  # a removed funder's bids go with it, and so do the bids on loans left out
        keep = bids["funder_id"].isin(ids) & bids["loan_id"].isin(loans["loan_id"].astype(str))
        bids = bids[keep.to_numpy()].reset_index(drop=True)
    inst = compile_instance(loans, terms, port, expo, sources={"funders": "scenario"}, bids=bids)
    return Day(loans, terms, port, expo, inst, {"compile": 0.0}, bids)


def scenario_terms(terms: Terms, *, funders: dict[str, dict[str, Any]] | None = None,
                   platform: dict[str, Any] | None = None, remove: Iterable[str] = (),
                   add: Iterable[dict[str, Any]] = ()) -> Terms:
    """The terms with overrides applied (see :func:`derive`), validated like any funders document."""
    doc = terms.model_dump(mode="json", exclude_none=True)
    problems: list[Problem] = []
    by_id = {f["id"]: f for f in doc["funders"]}
    for fid, changes in (funders or {}).items():
        if fid not in by_id:
            problems.append(Problem("scenario", f"funders[{fid}]", f"no funder '{fid}' in the base terms"))
            continue
        if not isinstance(changes, dict):
            problems.append(Problem("scenario", f"funders[{fid}]", "expected a mapping of fields to new values"))
            continue
        by_id[fid].update(copy.deepcopy(changes))
    removed = set(remove)
    for fid in sorted(removed - set(by_id)):
        problems.append(Problem("scenario", f"remove[{fid}]", f"no funder '{fid}' in the base terms"))
    if problems:
        raise InputError(problems)
    doc["funders"] = [f for f in doc["funders"] if f["id"] not in removed] + [copy.deepcopy(f) for f in add]
    # a removed funder leaves its groups too; a group left with no member goes with it
    groups = [{**g, "members": [m for m in g["members"] if m not in removed]} for g in doc.get("groups", [])]
    doc["groups"] = [g for g in groups if g["members"]]
    doc["platform"].update(copy.deepcopy(platform or {}))
    return terms_from_dict(doc, "scenario")


@dataclass(frozen=True, eq=False)
class Comparison:
    """Two plans side by side."""

    summary: pd.DataFrame  # one row per measure: base, scenario, change
    routes: pd.DataFrame  # per route: amounts and counts before and after
    moved: pd.DataFrame  # loans whose route changed, with the cost change and why

    def __repr__(self) -> str:
        return (f"Comparison(objective change {self.summary.loc['objective', 'change']:+,.2f}, "
                f"{len(self.moved):,} loans moved)")


def compare(base: Plan, scenario: Plan) -> Comparison:
    """What changed from ``base`` to ``scenario``: totals, per-route amounts, moved loans."""
    measures = ["objective", "lower_bound", "funding_cost", "unfunded_count", "unfunded_principal", "shortfall"]
    summary = pd.DataFrame({
        "base": [getattr(base, m) for m in measures],
        "scenario": [getattr(scenario, m) for m in measures],
    }, index=measures)
    summary["change"] = summary["scenario"] - summary["base"]

    cols = ["loan_count", "principal", "funder_amount", "platform_amount", "cost"]
    a = base.funders.set_index("funder_id")[cols]
    b = scenario.funders.set_index("funder_id")[cols]
    routes = a.add_suffix("_base").join(b.add_suffix("_scenario"), how="outer").fillna(0.0)
    for c in cols:
        routes[f"{c}_change"] = routes[f"{c}_scenario"] - routes[f"{c}_base"]

    x = base.allocations[["loan_id", "funder_id", "cost"]]
    y = scenario.allocations[["loan_id", "funder_id", "cost", "unfunded_reason"]]
    m = x.merge(y, on="loan_id", how="inner", suffixes=("_base", "_scenario"))
    moved = m[m["funder_id_base"] != m["funder_id_scenario"]].copy()
    moved["cost_change"] = moved["cost_scenario"] - moved["cost_base"]
    moved["why"] = _why_moved(moved, base, scenario)
    moved = moved.rename(columns={"funder_id_base": "from", "funder_id_scenario": "to"})
    moved = moved[["loan_id", "from", "to", "cost_base", "cost_scenario", "cost_change", "why"]]
    return Comparison(summary, routes, moved.reset_index(drop=True))


def _why_moved(moved: pd.DataFrame, base: Plan, scenario: Plan) -> list[str]:
    gone = set(base.funders["funder_id"]) - set(scenario.funders["funder_id"])
    sc = scenario.constraints
    binding = sc[sc["binding"] & sc["hard"]].groupby("funder_id")["constraint"].apply(list).to_dict()
    out = []
    for frm, to, reason in zip(moved["funder_id_base"], moved["funder_id_scenario"], moved["unfunded_reason"]):
        if frm in gone:
            out.append(f"{frm} is not in the scenario")
        elif to == "":
            out.append(reason or "unfunded")
        elif frm == "":
            out.append(f"funded by {to} in the scenario")
        elif binding.get(frm):
            out.append(f"{frm} at its limit: {', '.join(binding[frm][:3])}")
        else:
            out.append(f"{to} is cheaper for it in the scenario")
    return out


def _set_path(day: Day, path: str, value: Any) -> Day:
    head, _, key = path.partition(".")
    if not key:
        raise InputError(Problem("sweep", path, "expected 'platform.<field>' or '<funder_id>.<field>'"))
    if head == "platform":
        return derive(day, platform={key: value})
    return derive(day, funders={head: {key: value}})


def sweep(day: Day, path: str, values: Sequence[Any], *, warm: Plan | None = None,
          **options: Any) -> pd.DataFrame:
    """Plan the day once per value of one parameter (``"platform.daily_capacity"``,
    ``"bank_a.daily_max"``...). Returns one row per value with cost, unfunded, gap and the shadow
    price of the swept limit where it is a constraint's limit."""
    rows = []
    head, _, key = path.partition(".")
    # every plan so far (the base's and the earlier points') is a candidate incumbent for the next
    # point: on a monotone sweep of a limit each holds at the points on its relaxed side, and one
    # already within the gap tolerance there spares the whole-loan rounds
    first = [warm.route_index] if warm is not None and warm.warm is not None else []  # the base, kept
    earlier: list[np.ndarray] = []
    for v in values:
        start = warm
        if warm is not None and warm.warm is not None and (first or earlier):
            kept = tuple(first + earlier[-(MAX_INCUMBENTS - len(first)):])
            start = replace(warm, warm=replace(warm.warm, incumbents=kept))
        p = plan(_set_path(day, path, v), warm=start, **options)
        if p.warm is not None:
            earlier.append(p.route_index)
        c = p.constraints
        kind = {"daily_capacity": "platform_capacity"}.get(key, key)
        funder = day.terms.platform.id if head == "platform" else head
        hit = c[(c["kind"] == kind) & (c["funder_id"] == funder)]
        rows.append({"value": v, "objective": p.objective, "funding_cost": p.funding_cost,
                     "unfunded_principal": p.unfunded_principal, "shortfall": p.shortfall, "gap": p.gap,
                     "shadow_price": float(hit["shadow_price"].iloc[0]) if len(hit) else np.nan,
                     "seconds": p.timings.get("solve_total", np.nan), "status": p.status.value})
        warm = p
    return pd.DataFrame(rows)


def shadow_prices(p: Plan) -> pd.DataFrame:
    """Binding limits with their shadow prices, most valuable first.

    ``shadow_price`` is d objective / d limit in the limit's own units (currency for caps, a
    share of 1.0 for concentration limits, field units for weighted averages): relaxing a cap by
    one currency unit changes the cost by about ``shadow_price`` (negative: it saves).
    """
    c = p.constraints
    out = c[c["binding"] & (c["shadow_price"] != 0)].copy()
    out["abs"] = out["shadow_price"].abs()
    return out.sort_values("abs", ascending=False).drop(columns=["abs"]).reset_index(drop=True)


def _failed_rules(day: Day, i: int, rules: dict) -> list[str]:
    row = ColumnView(day.loans.iloc[[i]].reset_index(drop=True))
    out = []
    for col, rule in rules.items():
        if not row.mask(col, rule)[0]:
            value = day.loans[col].iloc[i]
            value = value.item() if hasattr(value, "item") else value
            shown = "missing" if pd.isna(value) else repr(value)
            out.append(f"{col}={shown} fails {rule.model_dump()}")
    return out


def explain(p: Plan, day: Day, loan_id: str) -> dict[str, Any]:
    """The route a loan got, its cost there, the cheapest route it was eligible for and the limit
    that kept it out; for every route, why the loan is or is not there."""
    inst = day.instance
    idx = np.flatnonzero(inst.loans["loan_id"].astype(str).to_numpy() == str(loan_id))
    if len(idx) == 0:
        raise InputError(Problem("explain", "loan_id", f"no loan '{loan_id}' in the day"))
    i = int(idx[0])
    R = inst.R
    r_got = int(p.route_index[i])
    unit_cost = inst.unit_cost(np.array([i]))[0]
    binding = p.constraints[p.constraints["binding"] & p.constraints["hard"]]
    per_route = []
    for r in np.argsort(unit_cost, kind="stable"):
        rid = inst.route_ids[r]
        entry: dict[str, Any] = {"route": rid, "cost": float(unit_cost[r] * inst.principal[i])}
        if r == r_got:
            entry["status"] = "funds this loan"
        elif not inst.elig[i, r]:
            f = inst.funders[r] if r < R - 1 else None
            rules = f.eligibility if f else day.terms.platform.eligibility
            failed = _failed_rules(day, i, rules)
            if f is not None:
                for w in f.weighted_average:
                    if pd.isna(day.loans[w.field].iloc[i]):
                        failed.append(f"{w.field} missing (a weighted-average test reads it)")
            entry["status"] = "not eligible: " + ("; ".join(failed) if failed else
                                                    "closed today (breached limit, headroom or obligor cap)")
        else:
            limits = _limits_for(inst, binding, i, r)
            entry["status"] = "eligible, kept out by " + (", ".join(limits) if limits else
                                                          "a cheaper use of the same capacity")
        per_route.append(entry)
    cheaper = [e for e in per_route if e["cost"] < (unit_cost[r_got] * inst.principal[i] if r_got < R else np.inf)
               and not e["status"].startswith("not eligible") and e["status"] != "funds this loan"]
    return {
        "loan_id": str(loan_id),
        "route": inst.route_ids[r_got] if r_got < R else "",
        "cost": float(unit_cost[r_got] * inst.principal[i]) if r_got < R else 0.0,
        "cheapest_eligible": cheaper[0]["route"] if cheaper else (inst.route_ids[r_got] if r_got < R else None),
        "kept_out_by": cheaper[0]["status"] if cheaper else None,
        "routes": per_route,
    }


def _limits_for(inst, binding: pd.DataFrame, i: int, r: int) -> list[str]:
    """Binding limits of route r that this loan would press on."""
    rid = inst.route_ids[r]
    out = []
    for row in binding.itertuples(index=False):
        if row.kind == "platform_capacity" and inst.platform_share[r] > 0:
            out.append(row.constraint)
        elif row.funder_id != rid:
            continue
        elif row.kind in ("daily_max", "facility_headroom"):
            out.append(row.constraint)
        elif row.kind == "concentration":
            label = row.constraint.split(":", 2)[2]
            for fam in inst.conc:
                if fam.route != r:
                    continue
                for s in fam.segments:
                    if s.label == label and fam.member_code(np.array([i]))[0] == (0 if fam.per_codes is None else s.code):
                        out.append(row.constraint)
        elif row.kind.startswith("weighted_average"):
            field = row.constraint.split(":")[-1]
            w = inst.fields[field][i]
            if (row.kind.endswith("min") and w < row.limit) or (row.kind.endswith("max") and w > row.limit):
                out.append(row.constraint)
        elif row.kind == "obligor" and inst.obligor_slot[i] >= 0:
            if row.constraint.endswith(":" + inst.obligor_borrowers[inst.obligor_slot[i]]):
                out.append(row.constraint)
    return out
