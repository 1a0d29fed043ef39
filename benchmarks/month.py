"""A month of day-end batches: look-ahead pacing against even pacing, no pacing and the greedy
cheapest-first router, on the same 30 seeded days with a mid-month promotion spike, in one run.

    python benchmarks/month.py [--loans 20000] [--days 30] [--strategies lookahead lookahead-recent even none greedy]

Each strategy runs `fundalloc batch` (the library's `run_day`) day by day on its own fresh store,
so every day sees the state the strategy's earlier days left. Month totals: funding cost, unfunded
principal (charged at the platform's unfunded penalty), the shortfall below each `monthly_min` at
month end (charged at the funder's shortfall fee), the month's total, the cheap quota used, the
spike days' cost, broken limits (the greedy router's), and the time per day.

- lookahead: the rest of the month enters the LP as the treasury's forecast (inbox forecast.csv);
- lookahead-recent: the same, with the recent days' volume as the forecast (no forecast file);
- even: the remaining quota divided by the days left;
- none: every day may use all the quota that remains;
- greedy: the cheapest-first router, each day capped by the quota that remains.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fixtures"))

from month import SPIKE, write_month  # noqa: E402

from fundalloc.api import load_day  # noqa: E402
from fundalloc.batch import (BatchOptions, Inbox, day_positions, day_terms, delta_from_plan, fold, pace,  # noqa: E402
                             run_day)
from fundalloc.solve import PlanOptions  # noqa: E402
from fundalloc.evaluate import amounts, evaluate  # noqa: E402
from fundalloc.greedy import greedy_route  # noqa: E402
from fundalloc.io import read_exposures, read_portfolio  # noqa: E402
from fundalloc.store import Store  # noqa: E402
from fundalloc.terms import load_terms  # noqa: E402


def run_optimiser(inbox: Path, days: list[dt.date], pacing: str, work: Path, hide_forecast: bool) -> list[dict]:
    box = inbox
    if hide_forecast:  # the same inbox without the treasury's forecast
        box = work / "inbox-no-forecast"
        if not box.exists():
            shutil.copytree(inbox, box, ignore=shutil.ignore_patterns("forecast.csv"))
    store = Store(f"sqlite:///{work / f'{pacing}-{hide_forecast}.db'}")
    store.migrate()
    rows = []
    opts = BatchOptions(pacing=pacing)
    for d in days:
        t0 = time.perf_counter()
        r = run_day(store, d, box, work / f"out-{pacing}-{hide_forecast}", opts)[0]
        rows.append(_row(d, r.plan.allocations, r.plan.funding_cost, r.plan.unfunded_principal, 0,
                         time.perf_counter() - t0, r.plan.gap))
    return rows


def run_greedy(inbox: Path, days: list[dt.date]) -> list[dict]:
    """The greedy router day by day, with the state and quotas carried like the batch does."""
    ib = Inbox(inbox)
    terms = load_terms(inbox / "funders.yaml")
    start_port = read_portfolio(inbox / "portfolio.csv")
    start_expo = read_exposures(inbox / "exposures.csv")
    port_cols = [c for c in start_port.columns if c not in ("funder_id", "outstanding")]
    deltas, rows = [], []
    for d in days:
        t0 = time.perf_counter()
        base = load_day(ib.originations(d), terms)
        state = fold(d, deltas, terms.as_of)
        port, expo = day_positions(start_port, start_expo, state)
        pacing = pace("none", d, terms, state, base.loans, port, expo, base.loans, None, [], PlanOptions())
        day = load_day(base.loans, day_terms(terms, state, pacing), port, expo)
        inst = day.instance
        route = greedy_route(inst)
        funder, platform, cost = amounts(inst, route)
        ids = np.array(inst.route_ids + ("",), dtype=object)
        alloc = pd.DataFrame({"loan_id": inst.loans["loan_id"].astype(str).to_numpy(), "funder_id": ids[route],
                              "funder_amount": funder, "platform_amount": platform, "cost": cost})
        ev = evaluate(inst, route)
        broken = int((ev["hard"] & (ev["excess"] > 0.01)).sum())
        deltas.append((d, delta_from_plan(base.loans, alloc, port_cols)))
        rows.append(_row(d, alloc, float(cost.sum()), float(inst.principal[route == inst.R].sum()), broken,
                         time.perf_counter() - t0, float("nan")))
    return rows


def _row(d, alloc, funding_cost, unfunded, broken, seconds, gap) -> dict:
    used = alloc.groupby("funder_id")["funder_amount"].sum()
    return {"date": d, "funding_cost": funding_cost, "unfunded_principal": unfunded, "broken": broken,
            "seconds": seconds, "gap": gap, "used": used.to_dict()}


def summarise(name: str, rows: list[dict], terms) -> dict:
    quota = {f.id: f for f in terms.funders if f.monthly_max is not None or f.monthly_min is not None}
    used = {fid: sum(r["used"].get(fid, 0.0) for r in rows) for fid in quota}
    shortfall_fee = sum(max((f.monthly_min or 0) - used[fid], 0.0) * f.shortfall_fee for fid, f in quota.items())
    over = sum(max(used[fid] - f.monthly_max, 0.0) for fid, f in quota.items() if f.monthly_max is not None)
    funding = sum(r["funding_cost"] for r in rows)
    unfunded = sum(r["unfunded_principal"] for r in rows)
    total = funding + terms.platform.unfunded_penalty * unfunded + shortfall_fee
    cap = sum(f.monthly_max for f in quota.values() if f.monthly_max is not None)
    spike = sum(r["funding_cost"] + terms.platform.unfunded_penalty * r["unfunded_principal"]
                for r in rows if r["date"].day in SPIKE)
    return {"strategy": name, "month_total": total, "funding_cost": funding, "unfunded_principal": unfunded,
            "monthly_min_shortfall_fee": shortfall_fee, "quota_used_share": sum(used.values()) / cap if cap else np.nan,
            "quota_overrun": over, "spike_days_cost": spike, "broken_limits": sum(r["broken"] for r in rows),
            "seconds_per_day": float(np.mean([r["seconds"] for r in rows])),
            "worst_gap": float(np.nanmax([r["gap"] for r in rows])) if any(np.isfinite(r["gap"]) for r in rows)
            else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loans", type=int, default=20_000, help="loans on a normal day")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--start", default="2026-11-01")
    ap.add_argument("--strategies", nargs="+", default=["lookahead", "lookahead-recent", "even", "none", "greedy"])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fundalloc-month-"))
    inbox = write_month(work / "inbox", args.loans, args.days, args.start)
    first = dt.date.fromisoformat(args.start)
    days = [first + dt.timedelta(days=k) for k in range(args.days)]
    terms = load_terms(inbox / "funders.yaml")
    vols = [pd.read_parquet(inbox / d.isoformat() / "originations.parquet", columns=["principal"])["principal"].sum()
            for d in days]
    print(f"{args.days} days from {first}, {args.loans:,} loans on a normal day; volume {sum(vols):,.0f} in all, "
          f"spike days {sorted(SPIKE)} at {max(vols) / np.median(vols):.1f}x the median day; work folder {work}")
    results = []
    for s in args.strategies:
        t0 = time.perf_counter()
        if s == "greedy":
            rows = run_greedy(inbox, days)
        else:
            rows = run_optimiser(inbox, days, s.split("-")[0], work, hide_forecast=s.endswith("-recent"))
        results.append(summarise(s, rows, terms))
        print(f"  {s}: {time.perf_counter() - t0:.0f} s", flush=True)
    df = pd.DataFrame(results)
    best = df.loc[df["strategy"] == "lookahead", "month_total"]
    base = float(best.iloc[0]) if len(best) else float(df["month_total"].min())
    df["vs_lookahead"] = df["month_total"] / base - 1
    print()
    print("| strategy | month total | funding cost | unfunded principal | monthly_min shortfall fee | cheap quota used "
          "| spike days' cost | broken limits | vs look-ahead | s/day | worst gap |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in df.itertuples(index=False):
        print(f"| {r.strategy} | {r.month_total:,.0f} | {r.funding_cost:,.0f} | {r.unfunded_principal:,.0f} | "
              f"{r.monthly_min_shortfall_fee:,.0f} | {r.quota_used_share:.1%} | {r.spike_days_cost:,.0f} | "
              f"{r.broken_limits} | {r.vs_lookahead:+.2%} | {r.seconds_per_day:.1f} | {r.worst_gap:.1e} |")


if __name__ == "__main__":
    main()
