"""Real originations (LendingClub 2018Q1, Prosper 2005-2014) under US-style funders: the rules
work on any column and any values (grades A-G and AA-HR, US states, missing values)."""

from __future__ import annotations

import pandas as pd
import pytest

import fundalloc as fa
from conftest import SHARED_DATA, write_day
from fundalloc.verify import verify_plan


def lendingclub() -> pd.DataFrame:
    raw = pd.read_csv(SHARED_DATA / "lendingclub_2018q1.csv")
    return pd.DataFrame({
        "loan_id": [f"LC{i:05d}" for i in range(len(raw))],
        "principal": raw["loan_amount"].astype(float),
        "tenor_months": raw["term"].astype(int),
        "apr": raw["interest_rate"] / 100,
        "risk_grade": raw["grade"], "sub_grade": raw["sub_grade"], "state": raw["state"],
        "purpose": raw["loan_purpose"], "dti": raw["debt_to_income"], "income": raw["annual_income"],
        "homeownership": raw["homeownership"],
    })


def us_funders(volume: float) -> dict:
    return {
        "platform": {"id": "platform", "cost_of_capital": 0.11, "daily_capacity": round(0.12 * volume, 2),
                     "eligibility": {"risk_grade": {"not_in": ["F", "G"]}}},
        "funders": [
            {"id": "bank_chase", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.035,
             "daily_max": round(0.25 * volume, 2),
             "eligibility": {"risk_grade": ["A", "B"], "tenor_months": {"max": 36}, "homeownership": {"not_in": ["RENT"]}},
             "concentration": [{"name": "state_cap", "per": "state", "max_share": 0.15, "basis": "new"}],
             "weighted_average": [{"field": "dti", "max": 18}]},
            {"id": "bank_texas", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.028,
             "daily_max": round(0.06 * volume, 2), "eligibility": {"state": ["TX", "OK", "LA", "NM"]}},
            {"id": "abs_wh1", "kind": "abs_warehouse", "funding_share": 0.88, "cost_of_funds": 0.055,
             "facility_limit": round(5 * volume, 2), "outstanding": round(4.55 * volume, 2),
             "eligibility": {"risk_grade": {"not_in": ["G"]}},
             "concentration": [{"name": "low_grades", "where": {"risk_grade": ["D", "E", "F"]}, "max_share": 0.2},
                               {"name": "long", "where": {"tenor_months": {"min": 60}}, "max_share": 0.3},
                               {"name": "state_cap", "per": "state", "max_share": 0.12}],
             "weighted_average": [{"field": "apr", "min": 0.12}, {"field": "income", "min": 70000}]},
            {"id": "credit_fund", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.09,
             "daily_max": round(0.3 * volume, 2)},
        ],
    }


def test_lendingclub_day_plans_verifies_and_is_near_optimal(tmp_path):
    loans = lendingclub()
    vol = float(loans["principal"].sum())
    terms = us_funders(vol)
    files = write_day(tmp_path / "in", loans, terms)
    plan = fa.plan(files["originations"], files["funders"])
    plan.write(tmp_path / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert rep.ok, rep.lines()
    assert rep.objective == pytest.approx(plan.objective, rel=1e-12)
    assert plan.gap <= 1e-4
    used = plan.funders.set_index("funder_id")["loan_count"]
    assert (used > 0).sum() >= 4
    # Texas-only bank funds Texas-area loans only; no grade F or G on the platform
    m = plan.allocations.merge(loans, on="loan_id")
    assert set(m.loc[m["funder_id"] == "bank_texas", "state"]) <= {"TX", "OK", "LA", "NM"}
    assert not m.loc[m["funder_id"] == "platform", "risk_grade"].isin(["F", "G"]).any()
    assert plan.constraints["binding"].any()


def test_prosper_grades_aa_to_hr_and_missing_states(tmp_path):
    raw = pd.read_csv(SHARED_DATA / "prosper_sample.csv")
    loans = pd.DataFrame({
        "loan_id": raw["ListingKey"] + "-" + raw.index.astype(str),  # the sample repeats three keys
        "principal": raw["LoanOriginalAmount"].astype(float), "tenor_months": raw["Term"].astype(int),
        "apr": raw["BorrowerAPR"].astype(float), "rating": raw["ProsperRating (Alpha)"],
        "state": raw["BorrowerState"], "score": raw["CreditScoreRangeLower"], "borrower_id": raw["MemberKey"],
    })
    loans = loans[loans["apr"].notna()]
    vol = float(loans["principal"].sum())
    terms = {
        "platform": {"cost_of_capital": 0.12, "daily_capacity": round(0.1 * vol, 2)},
        "funders": [
            {"id": "prime_bank", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.04, "daily_max": round(0.3 * vol, 2),
             "eligibility": {"rating": ["AA", "A", "B"]}, "weighted_average": [{"field": "score", "min": 700}],
             "concentration": [{"name": "state", "per": "state", "max_share": 0.2, "basis": "new"}],
             "obligor_limit": 15000},
            {"id": "sub_fund", "kind": "other", "funding_share": 0.9, "cost_of_funds": 0.08,
             "eligibility": {"rating": ["C", "D", "E", "HR"], "state": {"not_in": ["NY"]}}},
        ],
    }
    files = write_day(tmp_path / "in", loans, terms)
    plan = fa.plan(files["originations"], files["funders"])
    plan.write(tmp_path / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert rep.ok, rep.lines()
    m = plan.allocations.merge(loans, on="loan_id")
    # loans without a state or a rating fail the rules that read those columns
    assert not m.loc[m["state"].isna(), "funder_id"].isin(["prime_bank", "sub_fund"]).any()
    assert set(m.loc[m["funder_id"] == "prime_bank", "rating"]) <= {"AA", "A", "B"}
    # pre-2009 loans have no rating: only the platform may fund them
    assert set(m.loc[m["rating"].isna(), "funder_id"]) <= {"platform", ""}
    assert plan.gap <= 1e-3
