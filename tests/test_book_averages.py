"""Weighted averages on the portfolio basis: the funder's existing book plus today's loans.

The book's outstanding and its ``<field>_sum`` (outstanding x field) come from the portfolio file;
a book already outside the limit holds today's loans to it on their own (like a concentration
segment the book breaches). Checked against exhaustive enumeration, the verifier and the batch.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fundalloc as fa
from conftest import write_day
from exhaustive import exact_optimum
from fundalloc.errors import InputError
from fundalloc.terms import terms_from_dict
from fundalloc.verify import verify_plan


def _day(book_average: float | None, basis: str = "portfolio"):
    loans = pd.DataFrame({"loan_id": [f"L{i}" for i in range(6)],
                          "principal": [4000.0, 3000.0, 2500.0, 2000.0, 1500.0, 1000.0],
                          "tenor_months": 12, "apr": 0.18, "score": [680, 680, 690, 680, 690, 680]})
    terms = {"platform": {"id": "platform", "cost_of_capital": 0.15},
             "funders": [{"id": "bank", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.03,
                          "weighted_average": [{"field": "score", "min": 700.0, "basis": basis}]},
                         {"id": "trust", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.10}]}
    portfolio = None
    if book_average is not None:
        portfolio = pd.DataFrame({"funder_id": ["bank", "bank", "trust"], "outstanding": [6000.0, 4000.0, 5000.0],
                                  "score_sum": [6000.0 * book_average, 4000.0 * book_average, 5000.0 * 650]})
    return loans, terms, portfolio


def _amount(plan: fa.Plan, fid: str) -> float:
    a = plan.allocations
    return float(a.loc[a["funder_id"] == fid, "funder_amount"].sum())


def test_on_the_new_basis_no_loan_below_the_floor_goes_to_the_bank():
    loans, terms, portfolio = _day(720.0, basis="new")
    plan = fa.plan(loans, terms, portfolio)
    assert _amount(plan, "bank") == 0.0


def test_a_book_above_the_floor_makes_room_for_loans_below_it(tmp_path):
    loans, terms, portfolio = _day(720.0)
    plan = fa.plan(loans, terms, portfolio)
    bank = plan.allocations[plan.allocations["funder_id"] == "bank"]
    # room: 10,000 x (720 - 700) = 200,000 score-units of amount; 680-score loans use 20 each
    used = float((bank["funder_amount"] * (700 - loans.set_index("loan_id").loc[bank["loan_id"], "score"].to_numpy())).sum())
    assert 0 < used <= 200_000 + 1e-6
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms), portfolio)
    assert plan.objective == pytest.approx(best, rel=1e-9)
    row = plan.constraints.set_index("constraint").loc["weighted_average_min:bank:score"]
    combined = (10_000 * 720 + float((bank["funder_amount"] * loans.set_index("loan_id").loc[bank["loan_id"], "score"]
                                      .to_numpy()).sum())) / (10_000 + float(bank["funder_amount"].sum()))
    assert row["value"] == pytest.approx(combined)  # the book plus today's loans, in score units
    assert row["value"] >= 700 - 1e-9
    files = write_day(tmp_path / "in", loans, terms, portfolio=portfolio)
    plan.write(tmp_path / "out")
    assert verify_plan(files["originations"], files["funders"], tmp_path / "out", portfolio=files["portfolio"]).ok


def test_a_book_below_the_floor_holds_todays_loans_to_it_and_is_reported():
    loans, terms, portfolio = _day(690.0)
    plan = fa.plan(loans, terms, portfolio)
    assert _amount(plan, "bank") == 0.0  # every loan today is below 700 on its own
    assert any(b["kind"] == "weighted_average_min" and b["funder_id"] == "bank" for b in plan.breaches)
    row = plan.constraints.set_index("constraint").loc["weighted_average_min:bank:score"]
    assert "already outside the limit" in row["note"]


def test_the_verifier_catches_a_plan_that_spends_more_than_the_books_room(tmp_path):
    loans, terms, portfolio = _day(702.0)  # room 20,000: one 680 loan of up to 1,000 funder amount
    files = write_day(tmp_path / "in", loans, terms, portfolio=portfolio)
    plan = fa.plan(loans, terms, portfolio)
    plan.write(tmp_path / "out")
    assert verify_plan(files["originations"], files["funders"], tmp_path / "out", portfolio=files["portfolio"]).ok
    alloc = pd.read_csv(tmp_path / "out" / "allocations.csv", keep_default_na=False)
    p = loans["principal"].to_numpy()
    alloc["funder_id"], alloc["funder_amount"], alloc["platform_amount"] = "bank", 0.7 * p, 0.3 * p
    alloc["cost"] = p * (0.7 * 0.03 + 0.3 * 0.15) * (13 / 24)
    alloc.to_csv(tmp_path / "out" / "allocations.csv", index=False)
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out", portfolio=files["portfolio"])
    assert any("weighted_average_min" in line and "bank" in line for line in rep.lines())


def test_the_portfolio_basis_needs_the_book(tmp_path):
    loans, terms, portfolio = _day(None)
    with pytest.raises(InputError, match=r"funders\[bank\]\.weighted_average\[0\]\.basis.*portfolio file"):
        fa.plan(loans, terms)
    _, _, portfolio = _day(720.0)
    with pytest.raises(InputError, match="column 'score_sum'.*missing"):
        fa.plan(loans, terms, portfolio.drop(columns=["score_sum"]))
    bad = portfolio.copy()
    bad["score_sum"] = bad["score_sum"].astype(object)
    bad.loc[1, "score_sum"] = "lots"
    with pytest.raises(InputError, match="column 'score_sum', rows 3"):
        fa.plan(loans, terms, bad)


def test_terms_without_a_basis_keep_their_canonical_form():
    _, terms, _ = _day(None, basis="new")
    del terms["funders"][0]["weighted_average"][0]["basis"]
    canon = json.loads(terms_from_dict(terms).canonical_json())
    assert "basis" not in canon["funders"][0]["weighted_average"][0]


@st.composite
def book_days(draw):
    n = draw(st.integers(2, 7))
    loans = pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)],
                          "principal": [float(draw(st.integers(2, 40)) * 100) for _ in range(n)],
                          "tenor_months": [draw(st.sampled_from([3, 12])) for _ in range(n)], "apr": 0.18,
                          "score": [draw(st.integers(640, 760)) for _ in range(n)]})
    funders, rows = [], []
    for k in range(draw(st.integers(1, 2))):
        w = {"field": "score", "basis": "portfolio"}
        if draw(st.booleans()):
            w["min"] = float(draw(st.integers(670, 720)))
        if draw(st.booleans()) or "min" not in w:
            w["max"] = float(draw(st.integers(max(int(w.get("min", 0)), 690), 760)))
        f = {"id": f"f{k}", "kind": "trust", "funding_share": draw(st.sampled_from([0.7, 1.0])),
             "cost_of_funds": draw(st.integers(2, 9)) / 100, "weighted_average": [w]}
        if draw(st.booleans()):
            f["daily_max"] = float(draw(st.integers(5, 60)) * 100)
        funders.append(f)
        book = float(draw(st.integers(0, 30)) * 1000)
        rows.append({"funder_id": f["id"], "outstanding": book, "score_sum": book * draw(st.integers(650, 760))})
    terms = {"platform": {"id": "platform", "cost_of_capital": draw(st.integers(10, 15)) / 100,
                          "daily_capacity": float(draw(st.integers(0, 10)) * 500)}, "funders": funders}
    return loans, terms, pd.DataFrame(rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(book_days())
def test_small_days_with_book_averages_match_the_enumerated_optimum(day):
    loans, terms, portfolio = day
    plan = fa.plan(loans, terms, portfolio)
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms), portfolio)
    assert plan.objective == pytest.approx(best, rel=1e-9, abs=1e-6)
    assert plan.lower_bound <= best + 1e-6


def test_the_batch_carries_the_books_weighted_sum_into_the_next_day(tmp_path):
    from test_batch import BIN, D1, make_inbox, month_terms

    t = month_terms()
    t["funders"][1]["weighted_average"] = [{"field": "apr", "max": 0.2, "basis": "portfolio"}]
    inbox = make_inbox(tmp_path / "in", days=2, terms=t)
    start = pd.DataFrame({"funder_id": ["bank_b"], "risk_grade": ["C"], "outstanding": [2_000_000.0],
                          "apr_sum": [2_000_000.0 * 0.15]})
    start.to_csv(inbox / "portfolio.csv", index=False)
    env = {**os.environ, "FUNDALLOC_DATABASE_URL": f"sqlite:///{tmp_path / 'fa.db'}"}
    dates = [D1.isoformat(), (D1 + dt.timedelta(days=1)).isoformat()]
    for d in dates:
        r = subprocess.run([str(BIN), "batch", "--date", d, "--inbox", str(inbox), "--outbox", str(tmp_path / "out")],
                           capture_output=True, text=True, env=env)
        assert r.returncode in (0, 6), r.stderr
        out = tmp_path / "out" / d
        check = subprocess.run([str(BIN), "verify", "--originations", str(inbox / d / "originations.csv"),
                                "--funders", str(out / "inputs" / "funders.json"),
                                "--portfolio", str(out / "inputs" / "portfolio.csv"), "--plan", str(out)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    # day 2's book: the start plus day 1's loans at bank_b, their amounts x apr in apr_sum
    day1 = pd.read_csv(tmp_path / "out" / dates[0] / "allocations.csv", keep_default_na=False)
    loans1 = pd.read_csv(inbox / dates[0] / "originations.csv")
    mine = day1[day1["funder_id"] == "bank_b"].merge(loans1, on="loan_id")
    book2 = pd.read_csv(tmp_path / "out" / dates[1] / "inputs" / "portfolio.csv")
    b = book2[book2["funder_id"] == "bank_b"]
    assert float(b["outstanding"].sum()) == pytest.approx(2_000_000 + float(mine["funder_amount"].sum()), abs=0.02)
    assert float(b["apr_sum"].sum()) == pytest.approx(300_000 + float((mine["funder_amount"] * mine["apr"]).sum()),
                                                      rel=1e-9)
    assert np.isfinite(b["apr_sum"]).all()


def test_the_book_may_be_given_in_the_terms_instead_of_the_portfolio_file():
    """``weighted_average_base: {outstanding, <field>}`` is the same book as the portfolio file's
    ``outstanding`` and ``<field>_sum`` (= outstanding x average): the same plan, at the exhaustive optimum."""
    loans, terms, port = _day(720.0)
    mine = port["funder_id"] == "bank"
    E, EW = float(port.loc[mine, "outstanding"].sum()), float(port.loc[mine, "score_sum"].sum())
    in_terms = json.loads(json.dumps(terms))
    bank = next(f for f in in_terms["funders"] if f["id"] == "bank")
    bank["weighted_average_base"] = {"outstanding": E, "score": EW / E}
    from_file = fa.plan(loans, terms, port)
    from_terms = fa.plan(loans, in_terms)
    assert _amount(from_terms, "bank") > 0  # the book's room takes loans below the floor, as from the file
    assert from_terms.objective == pytest.approx(from_file.objective, rel=1e-9)
    assert from_terms.objective == pytest.approx(exact_optimum(loans, terms_from_dict(in_terms))[0], rel=1e-9)
    bank["weighted_average_base"] = {"outstanding": E}
    with pytest.raises(InputError) as err:
        fa.plan(loans, in_terms)
    assert "has no average of 'score'" in str(err.value)


def _group_day():
    loans = pd.DataFrame({"loan_id": [f"L{i}" for i in range(6)],
                          "principal": [1000.0, 2000.0, 1500.0, 500.0, 2500.0, 1200.0], "tenor_months": 12,
                          "apr": 0.18, "score": [650, 720, 690, 640, 700, 710]})
    terms = {"platform": {"id": "platform", "cost_of_capital": 0.12},
             "funders": [{"id": "b1", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.02, "daily_max": 2500},
                         {"id": "b2", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.025},
                         {"id": "trust", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.07}],
             "groups": [{"name": "banks", "members": ["b1", "b2"],
                         "weighted_average": [{"field": "score", "min": 700}]}]}
    return loans, terms


@pytest.mark.parametrize("solver", ["highs", "ortools", "pulp"])
def test_a_groups_weighted_average_holds_over_its_members_loans_at_the_exact_optimum(solver):
    loans, terms = _group_day()
    plan = fa.plan(loans, terms, solver=solver)
    assert plan.objective == pytest.approx(exact_optimum(loans, terms_from_dict(terms))[0], rel=1e-9)
    banks = plan.allocations[plan.allocations["funder_id"].isin(["b1", "b2"])]
    score = loans.set_index("loan_id").loc[banks["loan_id"], "score"].to_numpy()
    assert float((banks["funder_amount"].to_numpy() * (score - 700)).sum()) >= -1e-6
    row = plan.constraints.set_index("constraint").loc["group_weighted_average_min:banks:score"]
    assert row["limit"] == 700 and row["value"] >= 700 - 1e-9
    assert row["shadow_price"] > 0  # raising the floor would cost


def test_verify_catches_a_group_below_its_floor(tmp_path):
    loans, terms = _group_day()
    files = write_day(tmp_path / "in", loans, terms)
    fa.plan(files["originations"], files["funders"]).write(tmp_path / "out")
    assert verify_plan(files["originations"], files["funders"], tmp_path / "out").ok
    from conftest import reroute_every_loan
    reroute_every_loan(tmp_path / "out", loans, "b2", 0.7, (0.7 * 0.025 + 0.3 * 0.12) * (13 / 24))  # mean score 685
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert any("group_weighted_average_min" in line and "banks" in line for line in rep.lines())
