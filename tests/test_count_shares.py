"""Shares of the loan count (``measure: count``): a segment's share of the number of loans a
funder, or a group of funders, takes today, as well as of the amount."""

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


def _loans(principal, grades) -> pd.DataFrame:
    n = len(principal)
    return pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)], "principal": principal,
                         "tenor_months": [12] * n, "apr": [0.18] * n, "risk_grade": grades})


LOANS = _loans([1000.0, 2000.0, 1500.0, 500.0, 2500.0, 1200.0], ["D", "A", "D", "D", "B", "A"])


def _terms(measure="count", share=0.34) -> dict:
    return {"platform": {"id": "platform", "cost_of_capital": 0.12},
            "funders": [{"id": "bank", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.02,
                         "concentration": [{"name": "sub", "where": {"risk_grade": ["D"]}, "max_share": share,
                                            **({"measure": measure} if measure else {})}]},
                        {"id": "trust", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.07}]}


@pytest.mark.parametrize("solver", ["highs", "ortools", "pulp"])
def test_a_count_share_holds_at_the_exact_optimum_and_differs_from_the_amount_share(solver):
    plan = fa.plan(LOANS, _terms(), solver=solver)
    best, _ = exact_optimum(LOANS, terms_from_dict(_terms()))
    assert plan.objective == pytest.approx(best, rel=1e-9)
    on = plan.allocations["funder_id"] == "bank"
    grades = LOANS.loc[on.to_numpy(), "risk_grade"]
    row = plan.constraints.set_index("constraint").loc["concentration:bank:sub"]
    assert row["value"] == pytest.approx((grades == "D").sum() / len(grades))  # a share of the count
    assert row["value"] <= 0.34
    by_amount = fa.plan(LOANS, _terms(measure=None))
    assert by_amount.objective != pytest.approx(plan.objective)  # the two measures plan differently


def test_a_groups_count_share_holds_over_its_members_loans():
    terms = _terms(measure=None, share=1.0)
    terms["funders"][0].pop("concentration")
    terms["funders"].append({"id": "bank_two", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.03})
    terms["groups"] = [{"name": "banks", "members": ["bank", "bank_two"],
                        "concentration": [{"name": "sub", "where": {"risk_grade": ["D"]}, "max_share": 0.25,
                                           "measure": "count"}]}]
    plan = fa.plan(LOANS, terms)
    best, _ = exact_optimum(LOANS, terms_from_dict(terms))
    assert plan.objective == pytest.approx(best, rel=1e-9)
    on = plan.allocations["funder_id"].isin(["bank", "bank_two"]).to_numpy()
    assert (LOANS.loc[on, "risk_grade"] == "D").sum() <= 0.25 * on.sum()


def test_a_count_share_on_the_portfolio_basis_is_refused():
    terms = _terms()
    terms["funders"][0]["concentration"][0]["basis"] = "portfolio"
    with pytest.raises(InputError) as err:
        fa.plan(LOANS, terms)
    assert "basis new" in str(err.value)


def test_terms_without_it_keep_their_canonical_form():
    assert "measure" not in terms_from_dict(_terms(measure=None)).canonical_json()


def test_verify_counts_the_loans(tmp_path):
    files = write_day(tmp_path / "in", LOANS, _terms())
    plan = fa.plan(files["originations"], files["funders"])
    plan.write(tmp_path / "out")
    assert verify_plan(files["originations"], files["funders"], tmp_path / "out").ok
    # every loan to the bank: 3 of 6 are grade D, above 34%
    reroute_every_loan(tmp_path / "out", LOANS, "bank", 0.7, (0.7 * 0.02 + 0.3 * 0.12) * (13 / 24))
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert any("concentration" in line and "3 loans" in line for line in rep.lines())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(principal=st.lists(st.sampled_from([300.0, 800.0, 1500.0, 2200.0]), min_size=3, max_size=6),
       grades=st.lists(st.sampled_from(["A", "D"]), min_size=6, max_size=6), share=st.floats(0.0, 0.8))
def test_every_count_share_plan_is_the_exhaustive_optimum(principal, grades, share):
    loans = _loans(principal, grades[:len(principal)])
    terms = _terms(share=round(share, 3))
    best, _ = exact_optimum(loans, terms_from_dict(terms))
    plan = fa.plan(loans, terms)
    assert plan.objective == pytest.approx(best, rel=1e-7, abs=1e-6)
