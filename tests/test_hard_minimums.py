"""Hard daily minimums (``daily_min_hard``): a funder that must receive at least an amount.

Plans are checked against exhaustive enumeration (``exhaustive.py``, written from the model
alone) and the independent verifier; a day no plan can meet fails with the conflicting limits
named, as an irreducible infeasible set, through the library, the CLI (exit 2) and the API (422).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fundalloc as fa
from conftest import reroute_every_loan, write_day
from exhaustive import exact_optimum
from fundalloc.errors import InputError
from fundalloc.solve.conflict import InfeasibleTerms
from fundalloc.terms import terms_from_dict
from fundalloc.verify import verify_plan


def _loans(principal: list[float], grades: list[str] | None = None) -> pd.DataFrame:
    n = len(principal)
    return pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)], "principal": principal,
                         "tenor_months": [12] * n, "apr": [0.18] * n,
                         "risk_grade": grades or ["B"] * n, "province": ["GD"] * n})


LOANS = _loans([1000.0, 2000.0, 1500.0, 500.0, 2500.0, 1200.0], ["A", "B", "C", "A", "B", "C"])


def _terms(**dear) -> dict:
    return {"platform": {"id": "platform", "cost_of_capital": 0.12},
            "funders": [{"id": "cheap", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.02},
                        {"id": "dear", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.09, **dear}]}


def _problems(exc: InputError) -> set[str]:
    return {p.where for p in exc.problems}


@pytest.mark.parametrize("solver", ["highs", "ortools", "pulp"])
def test_a_hard_minimum_moves_loans_to_a_dearer_funder_at_the_exact_optimum(solver):
    free = fa.plan(LOANS, _terms())
    assert "dear" not in set(free.allocations["funder_id"])
    terms = _terms(daily_min_hard=3000.0)
    plan = fa.plan(LOANS, terms, solver=solver)
    best, _ = exact_optimum(LOANS, terms_from_dict(terms))
    assert plan.objective == pytest.approx(best, rel=1e-9)
    assert plan.funders.set_index("funder_id").loc["dear", "funder_amount"] >= 3000.0 - 0.005
    row = plan.constraints.set_index("constraint").loc["daily_min_hard:dear"]
    assert row["kind"] == "daily_min_hard" and row["hard"]
    assert row["limit"] == 3000.0 and row["slack"] == pytest.approx(row["value"] - 3000.0)
    assert row["binding"] and row["shadow_price"] > 0  # what one more unit of the minimum costs


def test_two_minimums_that_the_day_cannot_carry_are_named_together():
    terms = _terms(daily_max=6000.0, daily_min_hard=5000.0)
    terms["funders"][0]["daily_min_hard"] = 4000.0  # 4000/0.7 + 5000 of principal > the day's 8700
    with pytest.raises(InfeasibleTerms) as err:
        fa.plan(LOANS, terms)
    assert _problems(err.value) == {"daily_min_hard:cheap", "daily_min_hard:dear"}
    assert "irreducible infeasible set" in str(err.value)


def test_a_minimum_above_what_the_eligible_loans_give_names_itself_and_their_supply():
    terms = _terms(eligibility={"risk_grade": ["A"]}, daily_min_hard=1600.0)
    with pytest.raises(InfeasibleTerms) as err:
        fa.plan(LOANS, terms)
    assert _problems(err.value) == {"daily_min_hard:dear"}
    assert "1,500.00" in str(err.value)  # the grade A loans: 1000 + 500


def test_a_bank_minimum_that_needs_more_platform_capital_than_there_is_names_both():
    terms = _terms()
    terms["platform"]["daily_capacity"] = 1000.0
    terms["funders"][0]["daily_min_hard"] = 4200.0  # 6000 of principal: 1800 of platform money
    with pytest.raises(InfeasibleTerms) as err:
        fa.plan(LOANS, terms)
    assert _problems(err.value) == {"daily_min_hard:cheap", "platform_capacity:platform"}


def test_a_minimum_that_only_split_loans_can_meet_is_refused_not_broken():
    loans = _loans([600.0] * 5)
    terms = _terms(daily_max=1100.0, daily_min_hard=1000.0)  # whole loans give 600 or 1200
    assert exact_optimum(loans, terms_from_dict(terms))[0] == float("inf")
    with pytest.raises(InfeasibleTerms) as err:
        fa.plan(loans, terms)
    assert _problems(err.value) == {"daily_min_hard:dear"}
    assert "whole-loan" in str(err.value)


def test_a_minimum_above_the_daily_maximum_is_an_input_error_naming_the_key():
    with pytest.raises(InputError) as err:
        fa.plan(LOANS, _terms(daily_max=1000.0, daily_min_hard=2000.0))
    assert "daily_min_hard 2000.0 is above" in str(err.value)


def test_terms_without_it_keep_their_canonical_form():
    assert "daily_min_hard" not in terms_from_dict(_terms()).canonical_json()
    assert "daily_min_hard" in terms_from_dict(_terms(daily_min_hard=1.0)).canonical_json()


def test_verify_catches_a_plan_below_the_hard_minimum(tmp_path):
    terms = _terms(daily_min_hard=3000.0)
    files = write_day(tmp_path / "in", LOANS, terms)
    plan = fa.plan(files["originations"], files["funders"])
    plan.write(tmp_path / "out")
    assert verify_plan(files["originations"], files["funders"], tmp_path / "out").ok
    # every loan to the cheap bank: the trust gets nothing
    reroute_every_loan(tmp_path / "out", LOANS, "cheap", 0.7, (0.7 * 0.02 + 0.3 * 0.12) * (13 / 24))
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert not rep.ok
    assert any("daily_min_hard" in line and "dear" in line for line in rep.lines())


def test_the_cli_exits_2_naming_the_conflict_and_writes_nothing(tmp_path):
    terms = _terms(daily_max=6000.0, daily_min_hard=5000.0)
    terms["funders"][0]["daily_min_hard"] = 4000.0
    files = write_day(tmp_path / "in", LOANS, terms)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "fundalloc", "plan", "--originations", files["originations"],
                          "--funders", files["funders"], "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "daily_min_hard:cheap" in run.stderr and "daily_min_hard:dear" in run.stderr
    assert not out.exists() or not any(out.iterdir())


def test_the_api_answers_422_naming_the_conflict_and_stores_nothing(tmp_path):
    from fundalloc.service.app import create_app
    from fundalloc.service.settings import Settings
    from fundalloc.store import Store
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    store = Store(url)
    store.migrate()
    key = store.create_key("planner", "test")[1]
    terms = _terms(daily_max=6000.0, daily_min_hard=5000.0)
    terms["funders"][0]["daily_min_hard"] = 4000.0
    files = write_day(tmp_path / "in", LOANS, terms)
    upload = {"originations": ("originations.csv", open(files["originations"], "rb").read()),
              "funders": ("funders.yaml", open(files["funders"], "rb").read())}
    with TestClient(create_app(Settings.from_env({}, database_url=url, sync_wait_seconds=120))) as client:
        r = client.post("/v1/plans", files=upload, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 422, r.text
        wheres = {p["where"] for p in r.json()["problems"]}
        assert wheres == {"daily_min_hard:cheap", "daily_min_hard:dear"}
        listed = client.get("/v1/plans", headers={"Authorization": f"Bearer {key}"}).json()
    assert not [p for p in (listed["items"] if isinstance(listed, dict) else listed) if p.get("status") == "succeeded"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(principal=st.lists(st.sampled_from([300.0, 500.0, 800.0, 1300.0, 2100.0]), min_size=3, max_size=6),
       need=st.floats(min_value=0.05, max_value=0.9), cap=st.one_of(st.none(), st.floats(0.3, 1.0)),
       capital=st.one_of(st.none(), st.floats(0.05, 0.6)))
def test_every_plan_meets_its_hard_minimum_at_the_exact_optimum_or_the_day_is_refused(principal, need, cap, capital):
    """Property: on random small days, either the plan is the exhaustive optimum (and holds the
    minimum), or no whole-loan plan exists and the solve refuses the day with the minimum named."""
    loans = _loans(principal)
    total = float(loans["principal"].sum())
    dear = {"daily_min_hard": round(need * total, 2)}
    if cap is not None:
        dear["daily_max"] = round(max(cap * total, dear["daily_min_hard"]), 2)
    terms = _terms(**dear)
    if capital is not None:
        terms["platform"]["daily_capacity"] = round(capital * total, 2)
    best, _ = exact_optimum(loans, terms_from_dict(terms))
    if best == float("inf"):
        with pytest.raises(InfeasibleTerms) as err:
            fa.plan(loans, terms)
        assert any(p.where.startswith("daily_min_hard:") for p in err.value.problems)
        return
    plan = fa.plan(loans, terms)
    assert plan.objective == pytest.approx(best, rel=1e-7, abs=1e-6)
    amount = plan.funders.set_index("funder_id").loc["dear", "funder_amount"]
    assert amount >= dear["daily_min_hard"] - 0.005
