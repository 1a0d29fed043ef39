"""The allocation plan: an immutable value, and its four files.

A plan is never ``None`` for failure: it carries its status, objective, lower bound, gap,
timings, the breaches it worked around and, for each unfunded loan, the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .solve import Solved
from .evaluate import amounts, evaluate, platform_used
from .instance import Instance
from .io import write_csv


class PlanStatus(StrEnum):
    # holds every limit; gap to the LP bound within the tolerance, or proven optimal among
    # whole-loan plans (then ``whole_loan_gap`` is 0)
    OPTIMAL = "optimal"
    FEASIBLE = "feasible"  # holds every limit; the search used its work budget and ended above the tolerance
    TIME_LIMIT = "time_limit"  # holds every limit; the time limit (a safety stop) cut the search short


ALLOCATION_COLUMNS = ["loan_id", "funder_id", "funder_amount", "platform_amount", "cost"]


def _frozen(df: pd.DataFrame) -> pd.DataFrame:
    for c in df.columns:
        if not isinstance(df[c].dtype, np.dtype):
            continue  # Arrow-backed text: immutable already (and to_numpy would copy it)
        arr = df[c].to_numpy()
        if isinstance(arr, np.ndarray):
            try:
                arr.flags.writeable = False
            except ValueError:
                pass
    return df


@dataclass(frozen=True, eq=False)
class Plan:
    status: PlanStatus
    objective: float
    lower_bound: float
    gap: float
    whole_loan_bound: float
    whole_loan_gap: float
    funding_cost: float
    unfunded_count: int
    unfunded_principal: float
    shortfall: float
    breaches: tuple[dict[str, Any], ...]
    inputs_digest: str
    solver: dict[str, str]
    timings: dict[str, float]
    allocations: pd.DataFrame
    funders: pd.DataFrame
    constraints: pd.DataFrame
    route_index: np.ndarray = field(repr=False)
    stats: dict[str, Any] = field(default_factory=dict)
    warm: Any = field(default=None, repr=False)  # solve.WarmStart: what a similar solve can reuse

    def summary(self) -> dict[str, Any]:
        """The ``plan.json`` document."""
        return {
            "status": self.status.value,
            "objective": self.objective,
            "lower_bound": self.lower_bound,
            "gap": self.gap,
            "whole_loan_bound": self.whole_loan_bound,
            "whole_loan_gap": self.whole_loan_gap,
            "funding_cost": self.funding_cost,
            # the distance to the bound over the funding cost: a sale's gap in its own terms
            "funding_cost_gap": _gap_over(self.objective - self.lower_bound, self.funding_cost),
            "unfunded_count": self.unfunded_count,
            "unfunded_principal": self.unfunded_principal,
            "shortfall": self.shortfall,
            "loan_count": int(len(self.allocations)),
            "principal": float(self.funders["principal"].sum()) + self.unfunded_principal,
            "breaches": list(self.breaches),
            "binding_constraints": int(self.constraints["binding"].sum()) if len(self.constraints) else 0,
            "inputs_digest": self.inputs_digest,
            "solver": self.solver,
            "timings": self.timings,
            "stats": self.stats,
        }

    def write(self, out_dir: str | Path) -> Path:
        """Write the four files atomically: into a sibling temp folder, then renamed into place."""
        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            t0 = time.perf_counter()
            write_csv(self.allocations, tmp / "allocations.csv")
            write_csv(self.funders, tmp / "funders.csv")
            write_csv(self.constraints, tmp / "constraints.csv")
            summary = self.summary()
            # plan.json is written once, inside the temporary folder, and carries the write time
            summary["timings"] = {**summary["timings"], "write": round(time.perf_counter() - t0, 4)}
            (tmp / "plan.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
            out.mkdir(parents=True, exist_ok=True)
            for name in ("allocations.csv", "funders.csv", "constraints.csv", "plan.json"):
                os.replace(tmp / name, out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _text(codes: np.ndarray, labels: list[str]) -> pd.arrays.ArrowStringArray:
    """Arrow-backed text column ``labels[codes]``, built in Arrow (no Python string per row)."""
    dictionary = pa.array(labels, type=pa.string())
    return pd.arrays.ArrowStringArray(
        pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), dictionary).cast(pa.string()))


def _reasons(inst: Instance, route: np.ndarray, constraints: pd.DataFrame) -> pd.arrays.ArrowStringArray:
    """Why each unfunded loan is unfunded, computed once per distinct eligibility pattern."""
    R = inst.R
    codes = np.zeros(inst.n, dtype=np.int32)  # 0: funded, no reason
    unf = np.flatnonzero(route == R)
    if len(unf) == 0:
        return _text(codes, [""])
    binding = constraints[constraints["binding"] & constraints["hard"]] if len(constraints) else constraints
    by_route: dict[int, list[str]] = {}
    for r, grp in binding.groupby("route"):
        by_route[int(r)] = list(grp["constraint"])
    for row in binding.itertuples(index=False):  # a group's limit binds on each of its members
        if row.kind in ("group_share", "group_max", "group_concentration") or row.kind.startswith("group_weighted"):
            group = (inst.group_segments[int(row.ref)][0] if row.kind == "group_concentration" else
                     inst.group_wa[int(row.ref)] if row.kind.startswith("group_weighted") else inst.groups[int(row.ref)])
            for m in group.members:
                by_route.setdefault(int(m), []).append(row.constraint)
    el = inst.elig[unf]
    keys, inverse = np.unique(np.packbits(el, axis=1), axis=0, return_inverse=True)
    texts = [""]
    for k in range(len(keys)):
        routes = np.flatnonzero(el[np.flatnonzero(inverse.ravel() == k)[0]])
        if len(routes) == 0:
            texts.append("eligible for no route")
            continue
        parts = []
        for r in routes:
            lim = [c for c in by_route.get(int(r), [])] + (
                by_route.get(R - 1, []) if r != R - 1 and inst.platform_share[r] > 0 else [])
            lim = [c for c in lim if c.startswith(("daily_max", "facility", "concentration", "weighted",
                                                    "obligor", "platform", "funder_share", "group"))]
            parts.append(f"{inst.route_ids[r]} ({', '.join(lim) if lim else 'no capacity left at optimum'})")
        texts.append("eligible routes at binding limits: " + "; ".join(parts))
    codes[unf] = 1 + inverse.ravel()
    if inst.loan_penalty is not None:  # a loan worth less than any route costs stays unfunded by choice
        unit = np.where(el, inst.unit_cost(unf), np.inf)
        cheaper = inst.loan_penalty[unf] < unit.min(axis=1) - 1e-12
        texts.append("its own value (the unfunded penalty) is below every eligible route's cost")
        codes[unf[cheaper & el.any(axis=1)]] = len(texts) - 1
    return _text(codes, texts)


def build_plan(inst: Instance, solved: Solved, extra_timings: dict[str, float] | None = None) -> Plan:
    R = inst.R
    route = solved.route
    funder_amt, platform_amt, cost = amounts(inst, route)
    # the text columns stay in Arrow: 10M Python strings each would cost seconds to make and to write
    allocations = pd.DataFrame({
        "loan_id": inst.loans["loan_id"].astype("string[pyarrow]").array,
        "funder_id": _text(route, list(inst.route_ids) + [""]),
        "funder_amount": funder_amt,
        "platform_amount": platform_amt,
        "cost": cost,
    })
    ev = evaluate(inst, route)
    # shadow prices from the LP: d objective / d limit, in the limit's own units
    duals = solved.lp_duals
    dual_of = dict(zip(duals["label"], duals["dual"])) if len(duals) else {}
    A_lp = solved.totals_lp
    shadow = np.zeros(len(ev))
    binding = np.zeros(len(ev), dtype=bool)
    for i, row in enumerate(ev.itertuples(index=False)):
        label = row.constraint
        y = dual_of.get(label, 0.0)
        r = row.route
        if row.kind == "concentration":
            fam, seg = inst.segment_of(row.ref)
            if fam.counts:  # per unit of share of the loan count
                base = float(solved.counts_lp[r]) if solved.counts_lp is not None else 0.0
            else:
                base = A_lp[r] + (seg.existing_total if seg.basis.value == "portfolio" else 0.0)
            shadow[i] = y * base
        elif row.kind.startswith("weighted_average"):
            t = inst.wa[int(row.ref)]
            shadow[i] = y * (A_lp[r] + (t.existing_total if t.portfolio and not row.note else 0.0))
        elif row.kind in ("funder_share", "group_share"):  # per unit of share of the day's principal
            shadow[i] = y * solved.funded_lp
        elif row.kind.startswith("group_weighted_average"):  # d objective / d bound, per unit of the average
            t = inst.group_wa[int(row.ref)]
            shadow[i] = t.sign * y * float(sum(A_lp[m] for m in t.members))
        elif row.kind == "group_concentration":  # per unit of share of the group's total
            gc = inst.group_segments[int(row.ref)][0]
            per = solved.counts_lp if gc.counts and solved.counts_lp is not None else A_lp
            shadow[i] = y * float(sum(per[m] for m in gc.members))
        else:
            shadow[i] = y
        binding[i] = abs(y) > 1e-12 or _tight(row)
    ev["shadow_price"] = shadow
    ev["binding"] = binding & ev["hard"].to_numpy() | (binding & (ev["kind"] == "daily_min").to_numpy())
    constraints = ev[["constraint", "funder_id", "kind", "value", "limit", "slack", "binding", "shadow_price",
                      "hard", "note", "route", "ref"]]
    reasons = _reasons(inst, route, constraints)
    allocations["unfunded_reason"] = reasons

    # per-route table
    A = np.bincount(route, weights=funder_amt, minlength=R + 1)[:R]
    Bp = np.bincount(route, weights=platform_amt, minlength=R + 1)[:R]
    P = np.bincount(route, weights=inst.principal, minlength=R + 1)[:R]
    N = np.bincount(route, minlength=R + 1)[:R]
    C = np.bincount(route, weights=cost, minlength=R + 1)[:R]
    kinds = [f.kind.value for f in inst.funders] + ["platform"]
    shortfall = np.maximum(inst.daily_min - A, 0.0)
    shortfall[-1] = 0.0
    def util(v, lim):
        return np.where(np.isfinite(lim) & (lim > 0), v / np.where(lim > 0, lim, 1.0), np.nan)
    counted = A.copy()  # what the caps count (a funder's measured amounts where it has a cap_measure)
    for r in inst.measured:
        counted[r] = float(inst.cap_amount(r, np.flatnonzero(route == r)).sum())
    funders = pd.DataFrame({
        "funder_id": list(inst.route_ids), "kind": kinds, "funding_share": inst.share,
        "loan_count": N, "principal": P, "funder_amount": A, "platform_amount": Bp, "cost": C,
        "daily_max": np.where(np.isfinite(inst.daily_max), inst.daily_max, np.nan),
        "daily_max_utilisation": util(counted, inst.daily_max),
        "facility_headroom": np.where(np.isfinite(inst.headroom), inst.headroom, np.nan),
        "facility_headroom_utilisation": util(counted, np.maximum(inst.headroom, 0)),
        "daily_min": inst.daily_min, "shortfall": shortfall,
        "shortfall_cost": shortfall * inst.shortfall_fee,
    })
    if (inst.daily_min_hard > 0).any():
        funders["daily_min_hard"] = np.where(inst.daily_min_hard > 0, inst.daily_min_hard, np.nan)
    if inst.measured:
        funders["cap_counted"] = counted  # the amount the caps count
    if inst.use_min is not None:
        funders["min_if_used"] = np.where(inst.use_min > 0, inst.use_min, np.nan)
    if inst.fixed_cost is not None:  # charged where the route takes any loan
        funders["fixed_cost"] = np.where(A > 0, inst.fixed_cost, 0.0)
    if np.isfinite(inst.platform_capacity):
        plat = platform_used(inst, route)
        funders["platform_capacity_utilisation"] = [np.nan] * (R - 1) + [plat / inst.platform_capacity if inst.platform_capacity > 0 else np.nan]

    funding_cost = float(cost.sum())
    unf = route == R
    unfunded_principal = float(inst.principal[unf].sum())
    short_cost = float((shortfall * inst.shortfall_fee).sum())
    lost = float(np.dot(np.broadcast_to(inst.penalty_of(None), (inst.n,))[unf], inst.principal[unf]))
    fixed = inst.fixed_charged(A[:R - 1])
    objective = funding_cost + lost + short_cost + fixed
    lb = min(solved.lower_bound, objective)
    gap = _gap(objective, lb)
    whole_lb = min(max(solved.whole_loan_bound, lb), objective)
    status = PlanStatus(solved.status.value)
    timings = {**(extra_timings or {}), **{k: round(v, 4) for k, v in solved.timings.items()}}
    return Plan(
        status=status, objective=objective, lower_bound=float(lb), gap=float(gap),
        whole_loan_bound=float(whole_lb), whole_loan_gap=float(_gap(objective, whole_lb)),
        funding_cost=funding_cost, unfunded_count=int(unf.sum()), unfunded_principal=unfunded_principal,
        shortfall=float(shortfall.sum()), breaches=inst.breaches, inputs_digest=inst.digest,
        solver={"name": solved.solver, "version": solved.solver_version},
        timings=timings, allocations=_frozen(allocations), funders=_frozen(funders),
        constraints=_frozen(constraints.drop(columns=["route", "ref"]).reset_index(drop=True)),
        route_index=route, stats={**solved.stats, "lp_objective": solved.lp_objective},
        warm=replace(solved.warm, objective=objective, lp_objective=solved.lp_objective) if solved.warm else None,
    )


def _gap_over(distance: float, scale: float) -> float:
    return max(distance, 0.0) / abs(scale) if abs(scale) > 1e-12 else (0.0 if distance <= 1e-9 else float("inf"))


def _gap(objective: float, bound: float) -> float:
    gap = (objective - bound) / abs(bound) if abs(bound) > 1e-12 else (0.0 if abs(objective) <= 1e-9 else float("inf"))
    return max(gap, 0.0)


def _tight(row) -> bool:
    if not row.hard or row.note:
        return False
    lim = row.limit
    slack = row.slack
    if slack != slack:  # NaN
        return False
    scale = max(1.0, abs(lim))
    return slack <= 1e-7 * scale
