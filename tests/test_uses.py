"""All-or-nothing funders: ``min_if_used`` (nothing, or at least the minimum) and ``fixed_cost``
(charged once when a funder takes any loan), real integer decisions over the funders' use.

Plans are checked against exhaustive enumeration (``exhaustive.py``), the independent verifier
and the CLI; a generated day checks the search over use patterns at scale.
"""

from __future__ import annotations

import subprocess
import sys

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


def _loans(principal: list[float]) -> pd.DataFrame:
    n = len(principal)
    return pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)], "principal": principal,
                         "tenor_months": [12] * n, "apr": [0.18] * n})


LOANS = _loans([1000.0, 2000.0, 1500.0, 500.0, 2500.0, 1200.0])


def _terms(pool_min=6000.0, wh_fixed=30.0) -> dict:
    return {"platform": {"id": "platform", "cost_of_capital": 0.12},
            "funders": [{"id": "bank", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.05, "daily_max": 3000},
                        {"id": "pool", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.03,
                         "min_if_used": pool_min, "daily_max": 7000},
                        {"id": "wh", "kind": "abs_warehouse", "funding_share": 0.9, "cost_of_funds": 0.04,
                         "fixed_cost": wh_fixed}]}


@pytest.mark.parametrize("solver", ["highs", "ortools", "pulp"])
def test_the_pool_takes_its_minimum_or_nothing_and_the_warehouse_is_left_for_its_fee(solver):
    plan = fa.plan(LOANS, _terms(), solver=solver)
    best, _ = exact_optimum(LOANS, terms_from_dict(_terms()))
    assert plan.objective == pytest.approx(best, rel=1e-9)
    assert plan.status.value == "optimal"  # every use pattern solved exactly on a day this small
    amount = plan.funders.set_index("funder_id")["funder_amount"]
    assert amount["pool"] >= 6000.0 - 0.005 and amount["wh"] == 0.0  # the fee is worth more than its rate
    row = plan.constraints.set_index("constraint").loc["min_if_used:pool"]
    assert row["kind"] == "min_if_used" and row["limit"] == 6000.0
    cheap_fee = fa.plan(LOANS, _terms(wh_fixed=0.5))
    assert cheap_fee.funders.set_index("funder_id").loc["wh", "funder_amount"] > 0  # a small fee: used
    assert cheap_fee.funders.set_index("funder_id").loc["wh", "fixed_cost"] == 0.5
    assert cheap_fee.objective == pytest.approx(exact_optimum(LOANS, terms_from_dict(_terms(wh_fixed=0.5)))[0])


def test_a_minimum_the_pool_cannot_reach_leaves_it_closed():
    terms = _terms(pool_min=6850.0)
    terms["funders"][1]["daily_max"] = 6900.0  # no set of these loans sums to 6850..6900
    plan = fa.plan(LOANS, terms)
    assert plan.funders.set_index("funder_id").loc["pool", "funder_amount"] == 0.0
    assert plan.objective == pytest.approx(exact_optimum(LOANS, terms_from_dict(terms))[0])


def test_a_minimum_above_the_cap_is_refused():
    terms = _terms(pool_min=8000.0)
    with pytest.raises(InputError) as err:
        fa.plan(LOANS, terms)
    assert "min_if_used 8000.0 is above" in str(err.value)


def test_verify_checks_the_minimum_and_charges_the_fee(tmp_path):
    files = write_day(tmp_path / "in", LOANS, _terms(wh_fixed=0.5))
    plan = fa.plan(files["originations"], files["funders"])
    plan.write(tmp_path / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert rep.ok and rep.objective == pytest.approx(plan.objective)  # the fee is in both
    alloc = pd.read_csv(tmp_path / "out" / "allocations.csv", keep_default_na=False)
    on_pool = alloc["funder_id"] == "pool"
    first = alloc.index[on_pool][0]
    alloc.loc[on_pool & (alloc.index != first), ["funder_id", "funder_amount", "platform_amount", "cost"]] = \
        ["", 0.0, 0.0, 0.0]  # the pool keeps one loan: below its minimum, not nothing
    alloc.to_csv(tmp_path / "out" / "allocations.csv", index=False)
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert any("min_if_used" in line and "pool" in line for line in rep.lines())


def test_the_cli_plans_and_verifies_a_day_with_uses(tmp_path):
    files = write_day(tmp_path / "in", LOANS, _terms())
    args = ["--originations", files["originations"], "--funders", files["funders"]]
    run = subprocess.run([sys.executable, "-m", "fundalloc", "plan", *args, "--out", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    check = subprocess.run([sys.executable, "-m", "fundalloc", "verify", *args, "--plan", str(tmp_path / "out")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert {"min_if_used", "fixed_cost"} <= set(pd.read_csv(tmp_path / "out" / "funders.csv").columns)


def test_terms_without_them_keep_their_canonical_form():
    plain = _terms()
    for f in plain["funders"]:
        f.pop("min_if_used", None)
        f.pop("fixed_cost", None)
    doc = terms_from_dict(plain).canonical_json()
    assert "min_if_used" not in doc and "fixed_cost" not in doc


def test_a_generated_day_with_pools_and_draw_fees_holds_every_rule(tmp_path):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures"))
    import hard
    loans, terms, port, expo = hard.pooled(3_000, 3)
    plan = fa.plan(loans, terms, port, expo)
    amount = plan.funders.set_index("funder_id")["funder_amount"]
    for f in terms["funders"]:
        if f.get("min_if_used"):
            assert amount[f["id"]] == 0.0 or amount[f["id"]] >= f["min_if_used"] - 0.005
    charged = plan.funders.set_index("funder_id")["fixed_cost"]
    assert all(charged[f["id"]] == (f["fixed_cost"] if amount[f["id"]] > 0 else 0.0)
               for f in terms["funders"] if f.get("fixed_cost"))
    assert plan.lower_bound <= plan.objective
    assert plan.stats["use_patterns_solved"] >= 1


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(principal=st.lists(st.sampled_from([400.0, 900.0, 1300.0, 2100.0]), min_size=3, max_size=6),
       need=st.floats(0.1, 0.9), fee=st.sampled_from([0.0, 1.0, 5.0, 40.0]))
def test_every_plan_with_uses_is_the_exhaustive_optimum(principal, need, fee):
    """Property: random small days with an all-or-nothing pool and a warehouse's fee."""
    total = sum(principal)
    terms = _terms(pool_min=round(need * total, 2), wh_fixed=fee)
    terms["funders"][1]["daily_max"] = round(total, 2)
    if not fee:
        terms["funders"][2].pop("fixed_cost")
    best, _ = exact_optimum(_loans(principal), terms_from_dict(terms))
    plan = fa.plan(_loans(principal), terms)
    assert plan.objective == pytest.approx(best, rel=1e-7, abs=1e-6)
    assert plan.status.value == "optimal"
