"""Hard days: whole-loan plans when many limits bind, against the bound and the simple alternatives.

    python benchmarks/hard.py [--quick] [--cases NAME ...] [--whatif/--no-whatif] [--month-days 12]
                              [--save results.json] [--baseline benchmarks/hard_baseline.json]

Seeded days from ``fixtures/hard.py``: capacity-starved (2k and 20k loans), tight (20k and 100k),
minimum-heavy (20k), diversified days (funder and group shares of the day, a group cap; 20k
and 100k, beside the same 100k day without them), single-route sales (441 and 20k loans), identical funders whose caps whole
loans can fill exactly (subset-sum days and Falkenauer-style triplets), the 10-loan day, and the
paced days of the month benchmark (``fixtures/month.py``, run through the batch with look-ahead
pacing). Per case: time, gap to the LP bound, status, the share of the gap that is slack left in
binding rows at their shadow prices, and the greedy router's and first-fit decreasing's extra
cost and broken limits on the same day. With ``--whatif`` every day (but the month's) also runs
a suite of 24 single changes, each warm from the day's base plan.

``--baseline`` prints the figures of a saved run beside this one (the README keeps the table of
the version before the hard-days search as ``benchmarks/hard_baseline.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fixtures"))

import hard  # noqa: E402
from month import write_month  # noqa: E402

import fundalloc as fa  # noqa: E402
from fundalloc.evaluate import evaluate, whole_objective  # noqa: E402
from fundalloc.greedy import first_fit_decreasing, greedy_route  # noqa: E402


def cases(quick: bool) -> dict[str, callable]:
    out = {
        "starved 2k": lambda: hard.starved(2_000, 3),
        "starved 20k": lambda: hard.starved(20_000, 3),
        "tight 20k": lambda: hard.tight(20_000, 3),
        "tight 100k": lambda: hard.tight(100_000, 3),
        "minimum-heavy 20k": lambda: hard.minimum_heavy(20_000, 3),
        "committed 20k": lambda: hard.committed(20_000, 3),
        "counted 20k": lambda: hard.counted(20_000, 3),
        "counted 100k": lambda: hard.counted(100_000, 3),
        "measured 20k": lambda: hard.measured(20_000, 3),
        "measured 100k": lambda: hard.measured(100_000, 3),
        "pooled 20k": lambda: hard.pooled(20_000, 3),
        "pooled 100k": lambda: hard.pooled(100_000, 3),
        "sale 441": lambda: hard.sale(441, 5),
        "sale 20k": lambda: hard.sale(20_000, 5),
        "sale 100k": lambda: hard.sale(100_000, 5),
        "committed 100k": lambda: hard.committed(100_000, 3),
        "single route 441": lambda: hard.single_route(441, 3),
        "single route 20k": lambda: hard.single_route(20_000, 3),
        "subset-sum 8x250": lambda: hard.subset_sum(8, 250, 3),
        "subset-sum 20x40": lambda: hard.subset_sum(20, 40, 4),
        "triplets 20": lambda: hard.triplets(20, 3),
        "triplets 100": lambda: hard.triplets(100, 5),
        "ten loans": lambda: hard.ten_loans(),
        "realistic 100k": lambda: hard.realistic(100_000, 3),
        "diversified 20k": lambda: hard.diversified(20_000, 3),
        "diversified 100k": lambda: hard.diversified(100_000, 3),
        "graded 20k": lambda: hard.graded(20_000, 3),
        "graded 100k": lambda: hard.graded(100_000, 3),
    }
    if quick:
        for k in ("tight 100k", "single route 20k", "triplets 100", "realistic 100k", "diversified 100k", "committed 100k", "sale 100k", "pooled 100k", "measured 100k", "counted 100k",
                  "graded 100k"):
            out.pop(k)
    return out


def slack_share(plan: fa.Plan) -> float:
    """The share of the plan's gap that is slack in binding rows, valued at their shadow prices."""
    c = plan.constraints
    c = c[(c["shadow_price"] != 0) & c["hard"]]
    cost = float((c["shadow_price"].abs() * c["slack"].clip(lower=0).fillna(0)).sum())
    gap = plan.objective - plan.lower_bound
    return cost / gap if gap > 1e-9 else float("nan")


def alternatives(day: fa.Day, plan: fa.Plan) -> dict[str, tuple[float, int]]:
    """Extra cost over the plan and broken limits of the greedy router and first-fit decreasing."""
    inst = day.instance
    out = {}
    for name, fn in (("greedy", greedy_route), ("ffd", first_fit_decreasing)):
        route = fn(inst)
        ev = evaluate(inst, route)
        broken = int((ev["hard"] & (ev["excess"] > 0.01)).sum())
        out[name] = (whole_objective(inst, route) / plan.objective - 1, broken)
    return out


def suite(day: fa.Day, base: fa.Plan) -> dict[str, dict]:
    """24 single changes built from the day's own funders: rates, quotas, a funder in and out, capital."""
    funders = list(day.terms.funders)
    used = base.funders.set_index("funder_id")["funder_amount"]
    by_use = sorted(funders, key=lambda f: (-float(used.get(f.id, 0.0)), f.id))
    out: dict[str, dict] = {}
    for k in range(10):
        f = by_use[k % len(by_use)]
        step = (0.005 if k < 7 else -0.003) * (1 + k // len(by_use))
        out[f"{f.id} rate {step * 1e4:+.0f} bp"] = dict(funders={f.id: {"cost_of_funds": f.cost_of_funds + step}})
    capped = [f for f in by_use if f.daily_max is not None] or by_use
    for k in range(7):
        f = capped[k % len(capped)]
        x = 0.5 if k < 5 else 1.2
        x = x ** (1 + k // len(capped)) if len(capped) < 7 else x
        if f.daily_max is None:
            out[f"{f.id} quota {x:g}x"] = dict(funders={f.id: {"daily_max": float(used.get(f.id, 0.0)) * x + 1.0}})
        else:
            out[f"{f.id} quota {x:g}x"] = dict(funders={f.id: {"daily_max": f.daily_max * x, "daily_min": 0}})
    new = by_use[0].model_dump(mode="json", exclude_none=True)
    new.update({"id": "new_funder", "name": "new funder", "cost_of_funds": by_use[0].cost_of_funds + 0.002})
    out["a funder added"] = dict(add=[new])
    out[f"{by_use[0].id} removed" if len(funders) > 1 else "its only funder's quota 0.8x"] = (
        dict(remove=[by_use[0].id]) if len(funders) > 1
        else dict(funders={by_use[0].id: {"daily_max": (by_use[0].daily_max or float(used.sum())) * 0.8}}))
    cap = day.terms.platform.daily_capacity
    for x in (0.8, 0.9, 0.95, 1.05, 1.1):
        if cap:
            out[f"platform capital x{x}"] = dict(platform={"daily_capacity": cap * x})
        else:  # no platform capital on this day: every funder's quota instead
            out[f"every quota x{x}"] = dict(funders={f.id: {"daily_max": (f.daily_max or float(used.get(f.id, 0.0)) + 1.0) * x}
                                                     for f in funders})
    return out


def run_case(name: str, make, whatif: bool) -> dict:
    loans, terms, port, expo, *bids = make()
    day = fa.load_day(loans, terms, port, expo, bids[0] if bids else None)
    t0 = time.perf_counter()
    plan = fa.plan(day)
    seconds = time.perf_counter() - t0
    alt = alternatives(day, plan)
    row = {"case": name, "loans": len(loans), "seconds": seconds, "gap": plan.gap, "status": plan.status.value,
           "slack_share": slack_share(plan), "unfunded": plan.unfunded_count,
           "greedy_extra": alt["greedy"][0], "greedy_broken": alt["greedy"][1],
           "ffd_extra": alt["ffd"][0], "ffd_broken": alt["ffd"][1], "whatif": []}
    print(f"{name:20s} {len(loans):7,d} loans {seconds:7.2f} s  gap {plan.gap:.1e}  {plan.status.value:10s} "
          f"slack {row['slack_share']:.0%}  greedy {alt['greedy'][0]:+.2%} ({alt['greedy'][1]} broken)  "
          f"ffd {alt['ffd'][0]:+.2%} ({alt['ffd'][1]} broken)", flush=True)
    if whatif:
        for label, kw in suite(day, plan).items():
            sc = fa.derive(day, **kw)
            t0 = time.perf_counter()
            w = fa.plan(sc, warm=plan)
            row["whatif"].append({"change": label, "seconds": time.perf_counter() - t0, "gap": w.gap,
                                  "status": w.status.value})
        t = np.array([w["seconds"] for w in row["whatif"]])
        g = np.array([w["gap"] for w in row["whatif"]])
        print(f"{'':20s} what-ifs: median {np.median(t):.2f} s, max {t.max():.2f} s, "
              f"{int((g > 1e-5).sum())}/{len(g)} above 1e-5, worst {g.max():.1e}", flush=True)
    return row


def run_month(days: int, loans: int) -> list[dict]:
    from fundalloc.batch import BatchOptions, run_day
    from fundalloc.store import Store

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inbox = write_month(work / "inbox", loans, 30, "2026-11-01")
        store = Store(f"sqlite:///{work / 'month.db'}")
        store.migrate()
        first = dt.date(2026, 11, 1)
        for k in range(days):
            d = first + dt.timedelta(days=k)
            t0 = time.perf_counter()
            r = run_day(store, d, inbox, work / "out", BatchOptions(pacing="lookahead"))[0]
            rows.append({"case": f"month {d:%m-%d}", "loans": len(r.plan.allocations),
                         "seconds": time.perf_counter() - t0, "gap": r.plan.gap, "status": r.plan.status.value,
                         "slack_share": slack_share(r.plan), "unfunded": r.plan.unfunded_count})
            print(f"{rows[-1]['case']:20s} {rows[-1]['loans']:7,d} loans {rows[-1]['seconds']:7.2f} s  "
                  f"gap {r.plan.gap:.1e}  {r.plan.status.value:10s} slack {rows[-1]['slack_share']:.0%}", flush=True)
        store.dispose()
    return rows


def table(rows: list[dict], baseline: dict[str, dict] | None) -> str:
    head = "| case | loans | time | gap | status | gap that is slack | what-ifs: median, max, above 1e-5, worst |"
    if baseline:
        head += " before: time, gap, status | before: what-ifs |"
    head += " greedy | ffd |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        wi = "-"
        if r.get("whatif"):
            t = np.array([w["seconds"] for w in r["whatif"]])
            g = np.array([w["gap"] for w in r["whatif"]])
            wi = f"{np.median(t):.2f} s, {t.max():.2f} s, {int((g > 1e-5).sum())}/{len(g)}, {g.max():.1e}"
        share = "-" if not np.isfinite(r["slack_share"]) else f"{r['slack_share']:.0%}"
        cells = [r["case"], f"{r['loans']:,}", f"{r['seconds']:.2f} s", f"{r['gap']:.1e}", r["status"], share, wi]
        if baseline:
            b = baseline.get(r["case"])
            if b:
                bw = "-"
                if b.get("whatif"):
                    t = np.array([w["seconds"] for w in b["whatif"]])
                    g = np.array([w["gap"] for w in b["whatif"]])
                    bw = f"{np.median(t):.2f} s, {t.max():.2f} s, {int((g > 1e-5).sum())}/{len(g)}, {g.max():.1e}"
                cells += [f"{b['seconds']:.2f} s, {b['gap']:.1e}, {b['status']}", bw]
            else:
                cells += ["-", "-"]
        if "greedy_extra" in r:
            cells += [f"{r['greedy_extra']:+.2%}, {r['greedy_broken']} broken", f"{r['ffd_extra']:+.2%}, {r['ffd_broken']} broken"]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="leave out the 100k day and the biggest sales and packings")
    ap.add_argument("--cases", nargs="*", help="run only these cases (names as in the table)")
    ap.add_argument("--whatif", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--month-days", type=int, default=12, help="paced batch days of the month benchmark (0: none)")
    ap.add_argument("--month-loans", type=int, default=20_000)
    ap.add_argument("--save", help="write the results as JSON")
    ap.add_argument("--baseline", help="a saved run to print beside this one")
    a = ap.parse_args()
    rows = []
    for name, make in cases(a.quick).items():
        if a.cases and name not in a.cases:
            continue
        rows.append(run_case(name, make, a.whatif))
    if a.month_days and (not a.cases or "month" in a.cases):
        rows += run_month(a.month_days, a.month_loans)
    baseline = None
    if a.baseline and Path(a.baseline).exists():
        baseline = {r["case"]: r for r in json.loads(Path(a.baseline).read_text())}
    print()
    print(table(rows, baseline))
    tol = 1e-5
    wi = [w for r in rows for w in r.get("whatif", [])]
    if wi:
        t = np.array([w["seconds"] for w in wi])
        g = np.array([w["gap"] for w in wi])
        print(f"\nall {len(wi)} what-ifs: median {np.median(t):.2f} s, 75th percentile {np.percentile(t, 75):.2f} s, "
              f"max {t.max():.2f} s, {int((t <= 1.0).sum())} at most 1 s, {int((g > tol).sum())} above {tol:g}, "
              f"worst gap {g.max():.1e}")
    if a.save:
        Path(a.save).write_text(json.dumps(rows, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
