"""Invariants on random small days, checked against exhaustive enumeration and the verifier."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fundalloc as fa
from conftest import write_day
from fundalloc.verify import verify_plan
from oracle import brute_force

GRADES = ["A", "B", "C", "D"]
PROVS = ["GD", "ZJ", "CA"]


@st.composite
def days(draw):
    n = draw(st.integers(1, 5))
    loans = pd.DataFrame({
        "loan_id": [f"L{i}" for i in range(n)],
        "principal": [float(draw(st.integers(1, 40)) * 250) for _ in range(n)],
        "tenor_months": [draw(st.sampled_from([3, 6, 12, 24])) for _ in range(n)],
        "apr": [draw(st.integers(5, 35)) / 100 for _ in range(n)],
        "risk_grade": [draw(st.sampled_from(GRADES)) for _ in range(n)],
        "province": [draw(st.sampled_from(PROVS)) for _ in range(n)],
        "score": [draw(st.integers(550, 800)) for _ in range(n)],
        "borrower_id": [f"B{draw(st.integers(0, 2))}" for _ in range(n)],
    })
    funders = []
    for k in range(draw(st.integers(1, 3))):
        f = {"id": f"f{k}", "kind": draw(st.sampled_from(["bank", "trust", "abs_warehouse"])),
             "funding_share": draw(st.sampled_from([0.5, 0.7])) if k == 0 else draw(st.sampled_from([0.7, 0.9, 1.0])),
             "cost_of_funds": draw(st.integers(2, 12)) / 100}
        if f["kind"] == "bank":
            f["funding_share"] = min(f["funding_share"], 0.7)
        if draw(st.booleans()):
            f["daily_max"] = float(draw(st.integers(1, 20)) * 500)
        if draw(st.booleans()):
            f["eligibility"] = {"risk_grade": draw(st.lists(st.sampled_from(GRADES), min_size=1, max_size=3, unique=True))}
        if draw(st.booleans()):
            f["concentration"] = [draw(st.sampled_from([
                {"name": "prov", "per": "province", "max_share": 0.6, "basis": "new"},
                {"name": "sub", "where": {"risk_grade": ["C", "D"]}, "max_share": 0.3, "basis": "new"}]))]
        if draw(st.booleans()):
            f["weighted_average"] = [{"field": "score", "min": float(draw(st.integers(600, 720)))}]
        if draw(st.booleans()):
            f["obligor_limit"] = float(draw(st.integers(2, 10)) * 1000)
        if draw(st.booleans()):
            f["daily_min"] = min(float(draw(st.integers(1, 10)) * 500), f.get("daily_max", math.inf))
            f["shortfall_fee"] = draw(st.sampled_from([0.01, 0.2]))
        funders.append(f)
    platform = {"id": "platform", "cost_of_capital": draw(st.integers(8, 15)) / 100}
    if draw(st.booleans()):
        platform["daily_capacity"] = float(draw(st.integers(0, 30)) * 500)
    return loans, {"platform": platform, "funders": funders}


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(days())
def test_plan_is_feasible_and_bracketed_by_the_true_optimum(tmp_path_factory, day):
    loans, terms = day
    plan = fa.plan(loans, terms)
    best, _ = brute_force(loans, fa.Terms.model_validate(terms))
    # every loan exactly once
    assert sorted(plan.allocations["loan_id"]) == sorted(loans["loan_id"])
    # the bound is valid and the plan is never better than the true whole-loan optimum
    assert plan.lower_bound <= best + 1e-6
    assert plan.objective >= best - 1e-6
    assert plan.gap >= 0
    # every limit held, checked by the independent verifier from the written files
    tmp = tmp_path_factory.mktemp("p")
    files = write_day(tmp / "in", loans, terms)
    plan.write(tmp / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp / "out")
    assert rep.ok, rep.lines()
    assert rep.objective == pytest.approx(plan.objective, rel=1e-9, abs=1e-6)


@SETTINGS
@given(days(), st.booleans())
def test_lazy_obligor_rows_give_a_feasible_plan_and_a_valid_bound(tmp_path_factory, day, table):
    # every obligor row left out of the LP: the plan must still hold each one, and the bound
    # (of a relaxation) must stay below the true optimum. ``table``: the MIPs' fixed loans come
    # from the big days' incrementally kept table, with the lazy rows' borrowers kept apart
    loans, terms = day
    plan = fa.plan(loans, terms, eager_obligor_rows=0, fixed_table_loans=0 if table else 500_000)
    best, _ = brute_force(loans, fa.Terms.model_validate(terms))
    assert sorted(plan.allocations["loan_id"]) == sorted(loans["loan_id"])
    assert plan.lower_bound <= best + 1e-6
    assert plan.objective >= best - 1e-6
    tmp = tmp_path_factory.mktemp("p")
    files = write_day(tmp / "in", loans, terms)
    plan.write(tmp / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp / "out")
    assert rep.ok, rep.lines()
    assert rep.objective == pytest.approx(plan.objective, rel=1e-9, abs=1e-6)


@SETTINGS
@given(days(), st.integers(0, 2), st.sampled_from(["daily_max", "platform"]))
def test_more_capacity_never_raises_cost(day, which, field):
    loans, terms = day
    base = fa.plan(loans, terms)
    more = copy.deepcopy(terms)
    if field == "platform":
        cap = more["platform"].get("daily_capacity")
        if cap is None:
            return
        more["platform"]["daily_capacity"] = cap * 2 + 1000
    else:
        f = more["funders"][which % len(more["funders"])]
        if "daily_max" not in f:
            return
        f["daily_max"] = f["daily_max"] * 2 + 1000
    bigger = fa.plan(loans, more)
    # the LP bound is monotone exactly; the whole-loan plan within its reported gap
    assert bigger.lower_bound <= base.lower_bound + 1e-6 * max(1.0, abs(base.lower_bound))
    assert bigger.objective <= base.objective * (1 + base.gap + bigger.gap) + 1e-6
    best_base, _ = brute_force(loans, fa.Terms.model_validate(terms))
    best_more, _ = brute_force(loans, fa.Terms.model_validate(more))
    assert best_more <= best_base + 1e-9
