"""Scale benchmark: seeded days of 100k / 1M / 5M / 10M loans, end to end, in one run.

    python benchmarks/scale.py [--sizes 100000 1000000] [--naive-sizes 10000 100000]

For each size it prints the I/O floor (reading the needed columns of the originations and
writing one allocation row per loan), every phase of `fundalloc plan` run as a separate process,
its total time and peak memory, the gap to the LP bound, and, on the same day, the greedy
cheapest-first router's time, cost and broken limits. A naive per-variable PuLP model (one
LpVariable per eligible loan-route pair, solved as an LP by CBC) is built and solved at the
sizes given by --naive-sizes, with a time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fixtures"))

from generate import write_day  # noqa: E402

import fundalloc as fa  # noqa: E402
from fundalloc.evaluate import evaluate, amounts  # noqa: E402
from fundalloc.greedy import greedy_route  # noqa: E402


def io_floor(day: Path, tmp: Path) -> float:
    t0 = time.perf_counter()
    cols = ["loan_id", "principal", "tenor_months", "apr", "borrower_id", "product", "risk_grade", "score",
            "province"]
    table = pq.read_table(day / "originations.parquet", columns=cols)
    n = table.num_rows
    out = pa.table({"loan_id": table.column("loan_id"), "funder_id": pa.array(np.full(n, "bank_x")),
                    "funder_amount": table.column("principal"), "platform_amount": table.column("principal"),
                    "cost": table.column("principal")})
    pacsv.write_csv(out, tmp / "floor.csv")
    return time.perf_counter() - t0


def run_plan(day: Path, out: Path) -> tuple[dict, float, float]:
    cmd = [sys.executable, "-m", "fundalloc.cli", "plan", "--originations", str(day / "originations.parquet"),
           "--funders", str(day / "funders.yaml"), "--portfolio", str(day / "portfolio.csv"),
           "--exposures", str(day / "exposures.csv"), "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads((out / "plan.json").read_text()), wall, max(peak, before) / 1024


def run_greedy(day: Path) -> dict:
    d = fa.load_day(day / "originations.parquet", day / "funders.yaml", day / "portfolio.csv", day / "exposures.csv")
    inst = d.instance
    t0 = time.perf_counter()
    route = greedy_route(inst)
    secs = time.perf_counter() - t0
    _, _, cost = amounts(inst, route)
    unfunded = float(inst.principal[route == inst.R].sum())
    ev = evaluate(inst, route)
    broken = int((ev["hard"] & (ev["excess"] > 0.01)).sum())
    short = float((np.maximum(inst.daily_min - np.bincount(route, weights=amounts(inst, route)[0],
                                                          minlength=inst.R + 1)[:inst.R], 0) * inst.shortfall_fee).sum())
    return {"seconds": secs, "objective": float(cost.sum()) + inst.penalty * unfunded + short, "broken": broken}


def run_naive(day: Path, time_limit: float) -> dict:
    """One PuLP variable per eligible (loan, route) pair: the textbook model."""
    import warnings
    import pulp
    warnings.simplefilter("ignore", DeprecationWarning)
    d = fa.load_day(day / "originations.parquet", day / "funders.yaml", day / "portfolio.csv", day / "exposures.csv")
    inst = d.instance
    t0 = time.perf_counter()
    prob = pulp.LpProblem("naive", pulp.LpMinimize)
    x = {}
    cost_terms = []
    for i in range(inst.n):
        for r in np.flatnonzero(inst.elig[i]):
            v = pulp.LpVariable(f"x_{i}_{r}", 0, 1)
            x[i, r] = v
            cost_terms.append(inst.principal[i] * (inst.k1[r] * inst.life[i] + inst.k0[r]) * v)
        u = pulp.LpVariable(f"u_{i}", 0, 1)
        x[i, inst.R] = u
        cost_terms.append(inst.penalty * inst.principal[i] * u)
        prob += pulp.lpSum(v for (ii, _), v in [((i, r), x[i, r]) for r in list(np.flatnonzero(inst.elig[i])) + [inst.R]]) == 1
    prob += pulp.lpSum(cost_terms)
    for r in range(inst.R - 1):
        cap = min(inst.daily_max[r], max(inst.headroom[r], 0))
        if np.isfinite(cap):
            prob += pulp.lpSum(inst.share[r] * inst.principal[i] * x[i, r]
                               for i in np.flatnonzero(inst.elig[:, r])) <= cap
        for t in [t for t in inst.wa if t.route == r]:
            w = inst.fields[t.field]
            if t.min is not None:
                prob += pulp.lpSum(inst.share[r] * inst.principal[i] * (w[i] - t.min) * x[i, r]
                                   for i in np.flatnonzero(inst.elig[:, r])) >= 0
    if np.isfinite(inst.platform_capacity):
        prob += pulp.lpSum(inst.platform_share[r] * inst.principal[i] * v for (i, r), v in x.items()
                           if r < inst.R) <= inst.platform_capacity
    build = time.perf_counter() - t0
    t1 = time.perf_counter()
    status = prob.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit))
    return {"build": build, "solve": time.perf_counter() - t1, "status": pulp.LpStatus[status],
            "variables": len(x), "note": "caps, score floors and platform capacity only"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--naive-sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--naive-time-limit", type=float, default=300)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        for n in sorted(set(args.sizes) | set(args.naive_sizes)):
            day = write_day(tmp / f"day{n}", n, args.seed)
            row = {"loans": n}
            if n in args.sizes:
                row["io_floor_s"] = io_floor(day, tmp)
                summary, wall, peak_mb = run_plan(day, tmp / f"out{n}")
                t = summary["timings"]
                row.update({"total_s": wall, "peak_mb": peak_mb, "gap": summary["gap"], "status": summary["status"],
                            "objective": summary["objective"],
                            **{f"{k}_s": v for k, v in t.items() if k not in ("solve_total",)}})
                g = run_greedy(day)
                row.update({"greedy_s": g["seconds"], "greedy_objective": g["objective"],
                            "greedy_broken_limits": g["broken"],
                            "greedy_extra_cost": g["objective"] / summary["objective"] - 1})
            if n in args.naive_sizes:
                nv = run_naive(day, args.naive_time_limit)
                row.update({"naive_build_s": nv["build"], "naive_solve_s": nv["solve"],
                            "naive_status": nv["status"], "naive_vars": nv["variables"]})
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "loans"))
    head = "| measure | " + " | ".join(f"{r['loans']:,} loans" for r in rows) + " |"
    lines = [head, "|" + " --- |" * (len(rows) + 1)]
    for k in keys:
        cells = []
        for r in rows:
            v = r.get(k, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
