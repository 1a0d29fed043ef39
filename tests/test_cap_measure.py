"""Caps measured on another amount (``cap_measure: column``): a funder's daily maximum, monthly
quota and facility headroom count each loan's ``funding_share x column`` (e.g. principal plus
accrued interest, or price x principal) instead of its funder amount."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fundalloc as fa
from conftest import reroute_every_loan, write_day
from exhaustive import exact_optimum
from fundalloc.errors import InputError
from fundalloc.terms import terms_from_dict
from fundalloc.verify import verify_plan


def _loans(principal, accrued) -> pd.DataFrame:
    n = len(principal)
    return pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)], "principal": principal,
                         "tenor_months": [12] * n, "apr": [0.18] * n, "accrued": accrued})


LOANS = _loans([1000.0, 2000.0, 1500.0, 500.0, 2500.0, 1200.0], [1050.0, 2300.0, 1510.0, 600.0, 2510.0, 1390.0])


def _terms(measure: str | None = "accrued", **wh) -> dict:
    warehouse = {"id": "wh", "kind": "abs_warehouse", "funding_share": 0.9, "cost_of_funds": 0.03,
                 "facility_limit": 5000.0, **wh}
    if measure:
        warehouse["cap_measure"] = measure
    return {"platform": {"id": "platform", "cost_of_capital": 0.12},
            "funders": [warehouse, {"id": "trust", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.07}]}


@pytest.mark.parametrize("solver", ["highs", "ortools", "pulp"])
def test_the_facility_counts_the_measured_amounts_at_the_exact_optimum(solver):
    plan = fa.plan(LOANS, _terms(), solver=solver)
    best, _ = exact_optimum(LOANS, terms_from_dict(_terms()))
    assert plan.objective == pytest.approx(best, rel=1e-9)
    on = plan.allocations["funder_id"] == "wh"
    counted = 0.9 * LOANS.loc[on.to_numpy(), "accrued"].sum()
    row = plan.constraints.set_index("constraint").loc["facility_headroom:wh"]
    assert row["value"] == pytest.approx(counted) and counted <= 5000.0 + 0.01
    unmeasured = fa.plan(LOANS, _terms(measure=None))
    assert unmeasured.objective < plan.objective  # counting more per loan leaves less room


def test_a_daily_maximum_counts_it_too_and_funders_csv_says_what_was_counted():
    terms = _terms(daily_max=3000.0)
    terms["funders"][0].pop("facility_limit")
    plan = fa.plan(LOANS, terms)
    assert plan.objective == pytest.approx(exact_optimum(LOANS, terms_from_dict(terms))[0], rel=1e-9)
    routes = plan.funders.set_index("funder_id")
    assert routes.loc["wh", "cap_counted"] <= 3000.0 + 0.01
    assert routes.loc["wh", "cap_counted"] > routes.loc["wh", "funder_amount"]


@pytest.mark.parametrize("column, message", [
    ("no_such", "which the originations do not have"),
    ("bad", "must be a number >= 0"),
])
def test_a_bad_measure_column_is_refused_naming_it(column, message):
    loans = LOANS.assign(bad=[1.0, -2.0, 1.0, 1.0, 1.0, 1.0])
    with pytest.raises(InputError) as err:
        fa.plan(loans, _terms(measure=column))
    assert message in str(err.value)


def test_verify_counts_the_measure_and_catches_a_facility_over_it(tmp_path):
    files = write_day(tmp_path / "in", LOANS, _terms())
    plan = fa.plan(files["originations"], files["funders"])
    plan.write(tmp_path / "out")
    assert verify_plan(files["originations"], files["funders"], tmp_path / "out").ok
    # every loan to the warehouse: 0.9 x 9360 measured > 5000
    reroute_every_loan(tmp_path / "out", LOANS, "wh", 0.9, (0.9 * 0.03 + 0.1 * 0.12) * (13 / 24))
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert any("facility_headroom" in line and "wh" in line for line in rep.lines())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(principal=st.lists(st.sampled_from([300.0, 800.0, 1500.0, 2200.0]), min_size=3, max_size=6),
       markup=st.lists(st.floats(0.8, 1.4), min_size=6, max_size=6), limit=st.floats(0.2, 1.0))
def test_every_measured_plan_is_the_exhaustive_optimum(principal, markup, limit):
    n = len(principal)
    loans = _loans(principal, [round(p * m, 2) for p, m in zip(principal, markup[:n])])
    terms = _terms(facility_limit=round(limit * sum(principal), 2))
    best, _ = exact_optimum(loans, terms_from_dict(terms))
    plan = fa.plan(loans, terms)
    assert plan.objective == pytest.approx(best, rel=1e-7, abs=1e-6)
