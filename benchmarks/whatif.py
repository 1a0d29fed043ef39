"""What-if re-solves on the shipped 100k-loan day: the base plan's time beside each scenario's
re-solve (warm from the base) and a 20-point sweep, in one run.

    python benchmarks/whatif.py [--points 20]

Scenarios: a daily quota halved (a bank whose quota binds, and one the base plan does not use),
a warehouse's rate +50 bp, a new warehouse, platform capital -20% and +10%. Each is planned
cold (no warm start) and warm (``warm=base``), so the saving of the reuse is measured, not
assumed. The sweep varies the platform's daily capacity.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import fundalloc as fa

DAY = Path(__file__).resolve().parents[1] / "fixtures" / "day100k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=20)
    args = ap.parse_args()
    t0 = time.perf_counter()
    day = fa.load_day(DAY / "originations.parquet", DAY / "funders.yaml", DAY / "portfolio.csv", DAY / "exposures.csv")
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


if __name__ == "__main__":
    main()
