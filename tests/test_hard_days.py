"""Hard days: every limit held, the bound below the plan, the same bytes under load, and the
exact optimum on small tight days (found by enumerating every assignment)."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fundalloc as fa
from conftest import write_day
from exhaustive import exact_optimum
from fundalloc.cli import main
from fundalloc.verify import verify_plan

import hard


def _plan_and_verify(tmp_path, day, **options):
    loans, terms, port, expo = day
    files = write_day(tmp_path / "in", loans, terms, port, expo)
    plan = fa.plan(fa.load_day(loans, terms, port, expo), **options)
    plan.write(tmp_path / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out", files.get("portfolio"),
                      files.get("exposures"))
    return plan, rep


@pytest.mark.parametrize("kind,n", [("starved", 2000), ("tight", 2000), ("minimum_heavy", 2000),
                                    ("single_route", 441)])
def test_a_hard_day_holds_every_limit_with_a_valid_bound(tmp_path, kind, n):
    plan, rep = _plan_and_verify(tmp_path, hard.KINDS[kind](n, 3))
    assert rep.ok, rep.lines()
    assert rep.objective == pytest.approx(plan.objective, rel=1e-9)
    assert plan.lower_bound <= plan.objective + 1e-6
    assert plan.whole_loan_bound >= plan.lower_bound - 1e-9
    assert plan.status in (fa.PlanStatus.OPTIMAL, fa.PlanStatus.FEASIBLE)  # never the clock on these


@pytest.mark.parametrize("day", [hard.subset_sum(6, 30, 1), hard.triplets(8, 2)], ids=["subset-sum", "triplets"])
def test_packing_days_fund_at_least_what_first_fit_decreasing_does(tmp_path, day):
    """Identical funders whose caps whole loans can fill exactly (a packing of every loan exists
    by construction): the plan holds every limit and leaves no more principal unfunded than
    first-fit decreasing."""
    from fundalloc.greedy import first_fit_decreasing
    plan, rep = _plan_and_verify(tmp_path, day)
    assert rep.ok, rep.lines()
    loans, terms, _, _ = day
    inst = fa.load_day(loans, terms).instance
    ffd = first_fit_decreasing(inst)
    assert plan.unfunded_principal <= float(inst.principal[ffd == inst.R].sum()) + 1e-6


def test_the_ten_loan_day_is_proven_optimal_and_matches_enumeration():
    """Two banks' caps and the platform's capital bind; every loan can be funded, but only by
    filling them exactly. The exact whole-loan MIP proves its plan optimal (its whole-loan bound
    is its objective, though the LP's bound is below: the LP funds parts of loans)."""
    loans, terms, _, _ = hard.ten_loans()
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms))
    plan = fa.plan(loans, terms)
    assert plan.objective == pytest.approx(best, rel=1e-9, abs=1e-6)
    assert plan.unfunded_count == 0
    assert plan.status == fa.PlanStatus.OPTIMAL and plan.whole_loan_gap <= 1e-9
    assert plan.lower_bound < plan.objective


def _burn(stop) -> None:
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2147483647


def test_the_same_day_gives_the_same_bytes_on_a_busy_machine(tmp_path):
    """A hard day planned twice, the second time with a CPU-bound process on every core beside
    it: the allocation files are byte-identical (no decision of the solve depends on the clock)."""
    loans, terms, port, expo = hard.tight(3000, 5)
    files = write_day(tmp_path / "in", loans, terms, port, expo)
    args = ["plan", "--originations", files["originations"], "--funders", files["funders"],
            "--portfolio", files["portfolio"], "--exposures", files["exposures"], "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "idle")]) == 0
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    hogs = [ctx.Process(target=_burn, args=(stop,)) for _ in range(2)]
    for h in hogs:
        h.start()
    try:
        time.sleep(0.5)  # the hogs are running before the solve starts
        assert main(args + ["--out", str(tmp_path / "busy")]) == 0
    finally:
        stop.set()
        for h in hogs:
            h.join()
    for name in ("allocations.csv", "constraints.csv", "funders.csv"):
        assert (tmp_path / "busy" / name).read_bytes() == (tmp_path / "idle" / name).read_bytes(), name


@st.composite
def tight_days(draw):
    """Up to 12 loans and up to 4 routes (platform included), with caps drawn below what the
    loans would need, so that they bind; (routes + unfunded) ** loans stays enumerable."""
    routes = draw(st.integers(1, 3))  # funders, plus the platform
    limit = {1: 12, 2: 10, 3: 8}[routes]
    n = draw(st.integers(2, limit))
    principal = [float(draw(st.integers(2, 40)) * 50) for _ in range(n)]
    loans = pd.DataFrame({
        "loan_id": [f"L{i}" for i in range(n)],
        "principal": principal,
        "tenor_months": [draw(st.sampled_from([3, 6, 12, 24])) for _ in range(n)],
        "apr": [draw(st.integers(8, 30)) / 100 for _ in range(n)],
        "risk_grade": [draw(st.sampled_from(["A", "B", "C"])) for _ in range(n)],
        "province": [draw(st.sampled_from(["GD", "ZJ"])) for _ in range(n)],
        "score": [draw(st.integers(600, 800)) for _ in range(n)],
    })
    total = sum(principal)
    funders = []
    for k in range(routes):
        share = draw(st.sampled_from([0.5, 0.7])) if k == 0 else draw(st.sampled_from([0.7, 1.0]))
        f = {"id": f"f{k}", "kind": "bank" if share <= 0.7 else "trust", "funding_share": share,
             "cost_of_funds": draw(st.integers(2, 9)) / 100,
             "daily_max": round(share * total * draw(st.floats(0.15, 0.6)), 2)}
        if draw(st.booleans()):
            f["concentration"] = [{"name": "prov", "per": "province", "max_share": 0.7, "basis": "new"}]
        if draw(st.booleans()):
            f["weighted_average"] = [{"field": "score", "min": float(draw(st.integers(620, 720)))}]
        funders.append(f)
    platform = {"id": "platform", "cost_of_capital": draw(st.integers(10, 15)) / 100,
                "daily_capacity": round(total * draw(st.floats(0.1, 0.5)), 2)}
    return loans, {"platform": platform, "funders": funders}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tight_days())
def test_small_tight_days_match_the_enumerated_optimum(day):
    loans, terms = day
    plan = fa.plan(loans, terms)
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms))
    assert plan.objective == pytest.approx(best, rel=1e-9, abs=1e-6)
    assert plan.lower_bound <= best + 1e-6
    assert plan.status == fa.PlanStatus.OPTIMAL
