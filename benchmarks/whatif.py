"""What-if re-solves on the shipped 100k-loan day: the base plan's time beside each scenario's
re-solve (warm from the base) and a 20-point sweep, in one run.

    python benchmarks/whatif.py [--points 20] [--suite-seeds 8 9]

Scenarios: a daily quota halved (a bank whose quota binds, and one the base plan does not use),
a warehouse's rate +50 bp, a new warehouse, platform capital -20% and +10%. Each is planned
cold (no warm start) and warm (``warm=base``), so the saving of the reuse is measured, not
assumed. The sweep varies the platform's daily capacity.

Then a suite of 24 single changes (rates up and down, quotas halved and raised, a funder added
and one removed, platform capital from -20% to +10%), each re-solved warm from its day's base
plan, on the shipped day and on days generated with ``--suite-seeds``: the distribution of
re-solve times and gaps, since a handful of hand-picked cases can flatter or slander a search
whose time varies several-fold with its inputs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fundalloc as fa

ROOT = Path(__file__).resolve().parents[1]
DAY = ROOT / "fixtures" / "day100k"
sys.path.insert(0, str(ROOT / "fixtures"))

from generate import write_day  # noqa: E402


def load(folder: Path) -> fa.Day:
    return fa.load_day(folder / "originations.parquet", folder / "funders.yaml", folder / "portfolio.csv",
                       folder / "exposures.csv")


def suite_scenarios(day: fa.Day) -> dict[str, tuple[str, dict]]:
    """(kind, overrides) per scenario: one change each."""
    by_id = {f.id: f for f in day.terms.funders}
    new_wh = by_id["abs_1"].model_dump(mode="json", exclude_none=True)
    new_wh.update({"id": "abs_new", "name": "new warehouse", "cost_of_funds": 0.05, "outstanding": 0.0,
                   "facility_limit": 2e8})
    cap = day.terms.platform.daily_capacity
    out: dict[str, tuple[str, dict]] = {}
    for f in ("abs_1", "abs_2", "abs_3", "trust_1", "bank_icbc", "bank_cmbc", "bank_citic"):
        out[f"{f} rate +50 bp"] = ("rate", dict(funders={f: {"cost_of_funds": by_id[f].cost_of_funds + 0.005}}))
    for f in ("abs_2", "bank_ccb", "bank_spdb"):
        out[f"{f} rate -30 bp"] = ("rate", dict(funders={f: {"cost_of_funds": by_id[f].cost_of_funds - 0.003}}))
    for f in ("bank_cmbc", "bank_spdb", "bank_icbc", "bank_boc", "trust_1"):
        out[f"{f} quota halved"] = ("quota", dict(funders={f: {"daily_max": by_id[f].daily_max / 2, "daily_min": 0}}))
    for f in ("bank_ccb", "trust_2"):
        out[f"{f} quota +20%"] = ("quota", dict(funders={f: {"daily_max": by_id[f].daily_max * 1.2}}))
    out["a new warehouse"] = ("funder in or out", dict(add=[new_wh]))
    out["abs_3 removed"] = ("funder in or out", dict(remove=["abs_3"]))
    for x in (0.8, 0.9, 0.95, 1.05, 1.1):
        out[f"platform capital x{x}"] = ("capital", dict(platform={"daily_capacity": cap * x}))
    return out


def run_suite(seeds: list[int]) -> None:
    print("\nSuite: 24 single changes, each warm from its day's base plan (s, gap)")
    days: list[tuple[str, Path]] = [("shipped", DAY)]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            folder = Path(tmp) / f"seed{seed}"
            write_day(folder, 100_000, seed, False)
            days.append((f"seed {seed}", folder))
        results: dict[str, list[tuple[str, float, float]]] = {}
        for label, folder in days:
            day = load(folder)
            t0 = time.perf_counter()
            base = fa.plan(day)
            print(f"{label} day: base plan {time.perf_counter() - t0:.2f} s (gap {base.gap:.1e})", flush=True)
            rows = []
            for name, (kind, kw) in suite_scenarios(day).items():
                sc = fa.derive(day, **kw)
                t0 = time.perf_counter()
                warm = fa.plan(sc, warm=base)
                rows.append((kind, time.perf_counter() - t0, warm.gap))
                print(f"  {name:28s} {rows[-1][1]:5.2f} s  gap {warm.gap:.1e}", flush=True)
            results[label] = rows
    tol = fa.PlanOptions().gap_tolerance
    print("\n| day | median | 75th pct | max | at most 1.2 s | gap above 1e-5 | worst gap |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, rows in [*results.items(), ("all", [r for rs in results.values() for r in rs])]:
        t = np.array([r[1] for r in rows])
        g = np.array([r[2] for r in rows])
        print(f"| {label} | {np.median(t):.2f} s | {np.percentile(t, 75):.2f} s | {t.max():.2f} s | "
              f"{int((t <= 1.2).sum())}/{len(t)} | {int((g > tol).sum())}/{len(t)} | {g.max():.1e} |")
    print("\n| kind of change | cases | median | max | gap above 1e-5 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    every = [r for rs in results.values() for r in rs]
    for kind in dict.fromkeys(r[0] for r in every):
        t = np.array([r[1] for r in every if r[0] == kind])
        g = np.array([r[2] for r in every if r[0] == kind])
        print(f"| {kind} | {len(t)} | {np.median(t):.2f} s | {t.max():.2f} s | {int((g > tol).sum())} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--suite-seeds", type=int, nargs="*", default=[8, 9],
                    help="generated 100k-loan days the suite runs on besides the shipped one")
    args = ap.parse_args()
    t0 = time.perf_counter()
    day = load(DAY)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = fa.plan(day)
    t_base = time.perf_counter() - t0
    by_id = {f.id: f for f in day.terms.funders}
    new_wh = by_id["abs_1"].model_dump(mode="json", exclude_none=True)
    new_wh.update({"id": "abs_new", "name": "new warehouse", "cost_of_funds": 0.05, "outstanding": 0.0,
                   "facility_limit": 2e8})
    cap = day.terms.platform.daily_capacity
    scenarios = {
        # bank_cmbc's quota binds in the base plan; bank_cmb funds nothing there, so halving its
        # quota changes no binding row
        "bank_cmbc daily quota halved": dict(funders={"bank_cmbc": {"daily_max": by_id["bank_cmbc"].daily_max / 2}}),
        "bank_cmb (unused) quota halved": dict(funders={"bank_cmb": {"daily_max": by_id["bank_cmb"].daily_max / 2}}),
        "abs_1 rate +50 bp": dict(funders={"abs_1": {"cost_of_funds": by_id["abs_1"].cost_of_funds + 0.005}}),
        "a new warehouse": dict(add=[new_wh]),
        "platform capital -20%": dict(platform={"daily_capacity": cap * 0.8}),
        "platform capital +10%": dict(platform={"daily_capacity": cap * 1.1}),
    }
    print(f"100k-loan day: load {t_load:.2f} s; base plan {t_base:.2f} s ({base.status.value}, gap {base.gap:.1e})")
    print("| scenario | derive s | cold plan s (gap) | warm plan s (gap) | cost change |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, kw in scenarios.items():
        t0 = time.perf_counter()
        sc = fa.derive(day, **kw)
        t_derive = time.perf_counter() - t0
        t0 = time.perf_counter()
        cold = fa.plan(sc)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = fa.plan(sc, warm=base)
        t_warm = time.perf_counter() - t0
        print(f"| {name} | {t_derive:.2f} | {t_cold:.2f} ({cold.gap:.1e}) | {t_warm:.2f} ({warm.gap:.1e}) | "
              f"{warm.objective - base.objective:+,.0f} |", flush=True)
    values = list(np.linspace(cap * 0.6, cap * 1.2, args.points))
    t0 = time.perf_counter()
    sw = fa.sweep(day, "platform.daily_capacity", values, warm=base)
    t_sweep = time.perf_counter() - t0
    print(f"\n{args.points}-point sweep of platform.daily_capacity ({values[0]:,.0f} .. {values[-1]:,.0f}): "
          f"{t_sweep:.1f} s in all, {t_sweep / args.points:.2f} s per point; worst gap {sw['gap'].max():.1e}")
    print(sw[["value", "objective", "shadow_price", "gap", "seconds", "status"]].to_string(index=False))
    run_suite(args.suite_seeds)


if __name__ == "__main__":
    main()
