"""Prices by the loan: ``cost_of_funds`` and ``upfront_fee`` as rate grids (first matching line,
else the default), checked against exhaustive enumeration and the independent verifier."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fundalloc as fa
from conftest import FIXTURES, write_day
from exhaustive import exact_optimum
from fundalloc.errors import InputError
from fundalloc.verify import verify_plan
from oracle import brute_force

TENOR_GRID = [{"where": {"tenor_months": {"max": 6}}, "rate": 0.02},
              {"where": {"risk_grade": ["A"]}, "rate": 0.04},
              {"default": 0.09}]


def _loans(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)],
                         "principal": [1000.0 + 250 * i for i in range(n)],
                         "tenor_months": [3, 12, 6, 24, 12, 3][:n] + [12] * max(0, n - 6),
                         "apr": 0.18, "risk_grade": ["B", "A", "C", "A", "C", "B"][:n] + ["B"] * max(0, n - 6)})


def _terms(grid=TENOR_GRID, fee=0.0) -> dict:
    return {"platform": {"id": "platform", "cost_of_capital": 0.10},
            "funders": [{"id": "bank", "kind": "bank", "funding_share": 0.7, "cost_of_funds": grid, "upfront_fee": fee},
                        {"id": "trust", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.06}]}


def test_the_grid_prices_each_loan_and_sends_it_where_it_is_cheapest(tmp_path):
    loans, terms = _loans(), _terms()
    plan = fa.plan(loans, terms)
    got = dict(zip(plan.allocations["loan_id"], plan.allocations["funder_id"]))
    # short tenors at 2% and grade A at 4% beat the trust's 6%; the rest (9%) go to the trust
    assert [got[f"L{i}"] for i in range(6)] == ["bank", "bank", "bank", "bank", "trust", "bank"]
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms))
    assert plan.objective == pytest.approx(best, rel=1e-12)
    life = (loans["tenor_months"] + 1) / 24
    bank = plan.allocations.set_index("loan_id")
    expected = loans["principal"] * (0.7 * 0.02 + 0.3 * 0.10) * life  # L0: tenor 3, the first line
    assert bank.loc["L0", "cost"] == pytest.approx(float(expected[0]))
    files = write_day(tmp_path / "in", loans, terms)
    plan.write(tmp_path / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert rep.ok, rep.lines()


def test_the_verifier_prices_by_the_grid_and_catches_a_cost_at_the_default(tmp_path):
    loans, terms = _loans(), _terms()
    files = write_day(tmp_path / "in", loans, terms)
    fa.plan(loans, terms).write(tmp_path / "out")
    alloc = pd.read_csv(tmp_path / "out" / "allocations.csv", keep_default_na=False)
    i = alloc.index[alloc["loan_id"] == "L0"][0]
    alloc.loc[i, "cost"] = 1000.0 * (0.7 * 0.09 + 0.3 * 0.10) * (4 / 24)  # the default rate, not the line's
    alloc.to_csv(tmp_path / "out" / "allocations.csv", index=False)
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert not rep.ok and any("cost differs" in line for line in rep.lines())


def test_an_upfront_fee_grid_and_a_rate_grid_together():
    loans = _loans()
    terms = _terms(fee=[{"where": {"risk_grade": ["C"]}, "rate": 0.03}, {"default": 0.0}])
    plan = fa.plan(loans, terms)
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms))
    assert plan.objective == pytest.approx(best, rel=1e-12)
    slow, _ = brute_force(loans, fa.Terms.model_validate(terms))
    assert slow == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("grid, message", [
    ([{"where": {"tenor_months": {"max": 6}}, "rate": 0.02}], "ending with {default: r}"),
    ([{"default": 0.1}, {"where": {"tenor_months": {"max": 6}}, "rate": 0.02}], "ending with {default: r}"),
    ([{"where": {}, "rate": 0.02}, {"default": 0.1}], "grid line 1: a grid line needs at least one rule"),
    ([{"where": {"tenor_months": {"max": 6}}, "rat": 0.02}, {"default": 0.1}], "grid line 1: expected"),
    ([{"where": {"tenor_months": {"min": 9, "max": 6}}, "rate": 0.02}, {"default": 0.1}], "grid line 1: "),
])
def test_a_malformed_grid_is_refused_with_its_key(grid, message):
    with pytest.raises(InputError) as err:
        fa.plan(_loans(), _terms(grid))
    assert "funders[bank].cost_of_funds" in str(err.value) and message in str(err.value)


def test_a_grid_rule_on_a_missing_column_names_the_line():
    grid = [{"where": {"segment": ["prime"]}, "rate": 0.02}, {"default": 0.09}]
    with pytest.raises(InputError, match=r"funders\[bank\]\.cost_of_funds\[1\]\.where\.segment.*'segment'"):
        fa.plan(_loans(), _terms(grid))


def test_the_unfunded_penalty_must_exceed_the_dearest_line():
    grid = [{"where": {"tenor_months": {"min": 24}}, "rate": 3.0}, {"default": 0.05}]
    with pytest.raises(InputError, match="platform.unfunded_penalty"):
        fa.plan(_loans(), _terms(grid))


@st.composite
def graded_days(draw):
    n = draw(st.integers(2, 7))
    loans = pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)],
                          "principal": [float(draw(st.integers(2, 40)) * 100) for _ in range(n)],
                          "tenor_months": [draw(st.sampled_from([3, 6, 12, 24])) for _ in range(n)],
                          "apr": 0.18, "risk_grade": [draw(st.sampled_from(["A", "B", "C"])) for _ in range(n)],
                          "score": [draw(st.integers(640, 760)) for _ in range(n)]})
    total = float(loans["principal"].sum())
    funders = []
    for k in range(draw(st.integers(1, 2))):
        lines = [{"where": draw(st.sampled_from([{"tenor_months": {"max": 6}}, {"risk_grade": ["A", "B"]},
                                                  {"tenor_months": {"min": 12}, "risk_grade": ["C"]}])),
                  "rate": draw(st.integers(1, 12)) / 100} for _ in range(draw(st.integers(1, 3)))]
        f = {"id": f"f{k}", "kind": "trust", "funding_share": draw(st.sampled_from([0.7, 1.0])),
             "cost_of_funds": lines + [{"default": draw(st.integers(2, 12)) / 100}]}
        if draw(st.booleans()):
            f["upfront_fee"] = [{"where": {"risk_grade": ["C"]}, "rate": 0.01}, {"default": 0.0}]
        if draw(st.booleans()):
            f["daily_max"] = round(total * draw(st.floats(0.2, 0.8)), 2)
        if draw(st.booleans()):
            f["weighted_average"] = [{"field": "score", "min": float(draw(st.integers(660, 720)))}]
        funders.append(f)
    platform = {"id": "platform", "cost_of_capital": draw(st.integers(8, 15)) / 100,
                "daily_capacity": round(total * draw(st.floats(0.1, 0.7)), 2)}
    return loans, {"platform": platform, "funders": funders}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(graded_days())
def test_small_graded_days_match_the_enumerated_optimum(tmp_path_factory, day):
    loans, terms = day
    plan = fa.plan(loans, terms)
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms))
    assert plan.objective == pytest.approx(best, rel=1e-9, abs=1e-6)
    assert plan.lower_bound <= best + 1e-6
    tmp = tmp_path_factory.mktemp("g")
    files = write_day(tmp / "in", loans, terms)
    plan.write(tmp / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp / "out")
    assert rep.ok, rep.lines()


@pytest.mark.slow
def test_a_generated_day_with_a_tenor_and_grade_grid_holds_every_limit(tmp_path):
    """Loans of different tiers are never aggregated together: the LP bound stays valid and the
    plan verifies, with the grid's lines priced into each loan's cost."""
    sys.path.insert(0, str(FIXTURES))
    import generate
    import hard

    loans = generate.make_loans(3000, seed=5)
    terms = hard.grade_banks(generate.make_terms(3000, seed=5), under=0.01, over=0.02)
    files = write_day(tmp_path / "in", loans, terms, loans_name="loans.parquet")
    plan = fa.plan(files["originations"], files["funders"])
    plan.write(tmp_path / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert rep.ok, rep.lines()
    assert plan.lower_bound <= plan.objective + 1e-6 and plan.gap < 1e-3
    # the lines price the banks' loans: short tenors 1% under the default, grades D and E 2% over
    a = plan.allocations.merge(loans, on="loan_id")
    bank = a[a["funder_id"].str.startswith("bank_")]
    short = bank[bank["tenor_months"] <= 6]
    assert len(short) and len(bank) > len(short)
    by_id = {f["id"]: f for f in terms["funders"]}
    life = (short["tenor_months"] + 1) / 24
    line = np.array([by_id[f]["cost_of_funds"][0]["rate"] for f in short["funder_id"]])
    share = np.array([by_id[f]["funding_share"] for f in short["funder_id"]])
    fee = np.array([by_id[f].get("upfront_fee", 0.0) for f in short["funder_id"]])
    cap = terms["platform"]["cost_of_capital"]
    expected = short["principal"] * (share * (line * life + fee) + (1 - share) * cap * life)
    assert np.allclose(short["cost"], expected, rtol=1e-9)
