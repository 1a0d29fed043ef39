"""Prices per loan: a bids file (``loan_id, funder_id, price``) where buyers quote each loan, and a
per-loan unfunded penalty (what funding each loan is worth), so a sale is planned for its value.

Plans are checked against exhaustive enumeration (``exhaustive.py``), the independent verifier,
the CLI and the API; the shipped sale fixture plans and verifies through the CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fundalloc as fa
from conftest import write_day
from exhaustive import exact_optimum
from fundalloc.errors import InputError
from fundalloc.terms import terms_from_dict
from fundalloc.verify import verify_plan

SALE = Path(__file__).resolve().parents[1] / "fixtures" / "sale"


def _loans(principal: list[float], value: list[float] | None = None) -> pd.DataFrame:
    n = len(principal)
    out = pd.DataFrame({"loan_id": [f"L{i}" for i in range(n)], "principal": principal,
                        "tenor_months": [12] * n, "apr": [0.18] * n, "risk_grade": ["B"] * n})
    if value is not None:
        out["hold_value"] = value
    return out


LOANS = _loans([1000.0, 2000.0, 1500.0, 500.0, 2500.0], [0.0, 0.01, 0.0, 0.03, 0.0])
BIDS = pd.DataFrame({"loan_id": ["L0", "L1", "L2", "L3"], "funder_id": ["buyer"] * 4,
                     "price": [1.02, 1.0, 1.01, 0.99]})


def _terms(penalty="hold_value", cap=4000.0, **extra) -> dict:
    return {"platform": {"id": "platform", "cost_of_capital": 0.12, "unfunded_penalty": penalty,
                         "daily_capacity": 0.0},
            "funders": [{"id": "buyer", "kind": "other", "funding_share": 1.0, "cost_of_funds": 0.0,
                         "daily_max": cap, **extra}]}


@pytest.mark.parametrize("solver", ["highs", "ortools", "pulp"])
def test_a_sale_takes_the_bids_worth_most_within_the_budget_at_the_exact_optimum(solver):
    plan = fa.plan(LOANS, _terms(), bids=BIDS, solver=solver)
    best, combo = exact_optimum(LOANS, terms_from_dict(_terms()), bids=BIDS)
    assert plan.objective == pytest.approx(best, abs=1e-9)
    assert plan.objective == pytest.approx(-15.0)  # L0 (-20), L1 (0), L3 (+5) sold; L2 and L4 kept at 0
    sold = set(plan.allocations.loc[plan.allocations["funder_id"] == "buyer", "loan_id"])
    assert sold == {"L0", "L1", "L3"}
    assert plan.funding_cost == pytest.approx(-15.0)  # a premium: a negative cost
    assert plan.summary()["funding_cost_gap"] == pytest.approx((plan.objective - plan.lower_bound) / 15.0)


def test_a_loan_without_a_bid_from_a_bidding_buyer_is_not_eligible_there():
    plan = fa.plan(LOANS, _terms(cap=1e9), bids=BIDS)
    row = plan.allocations.set_index("loan_id").loc["L4"]
    assert row["funder_id"] == "" and "buyer" not in row["unfunded_reason"]  # (only the platform could hold it)
    assert not fa.load_day(LOANS, _terms(cap=1e9), bids=BIDS).instance.elig[4, 0]


def test_a_loan_worth_less_than_any_route_costs_stays_unfunded_and_says_why():
    loans = _loans([1000.0, 1000.0], [0.001, 0.05])
    bids = pd.DataFrame({"loan_id": ["L0", "L1"], "funder_id": ["buyer", "buyer"], "price": [0.98, 0.98]})
    plan = fa.plan(loans, _terms(cap=1e9), bids=bids)
    alloc = plan.allocations.set_index("loan_id")
    assert alloc.loc["L1", "funder_id"] == "buyer"  # 2% discount < 5% hold cost: sold
    assert alloc.loc["L0", "funder_id"] == ""  # 2% discount > 0.1% hold cost: kept
    assert "below every eligible route's cost" in alloc.loc["L0", "unfunded_reason"]


def test_a_day_without_bids_keeps_the_digest_it_had_before_bids_existed():
    small = Path(__file__).resolve().parents[1] / "fixtures" / "small" / "cap_binds"
    files = fa.load_day(small / "originations.csv", small / "funders.yaml")
    frames = fa.load_day(pd.read_csv(small / "originations.csv"), small / "funders.yaml", bids=None)
    # the digests of this fixture as the engine computed them before the bids file was added
    assert files.instance.digest == "sha256:c7f3d5c9c0828971cf944265cffb19f6f68d8d8ecd9477946c4e7626e76d00bf"
    assert frames.instance.digest == "sha256:56b3f750ba6d7ed3cb6f0bc8bd9619fce4a7527bfc1ea3c7720248fc46a05293"
    with_bids = fa.load_day(small / "originations.csv", small / "funders.yaml",
                            bids=pd.DataFrame({"loan_id": [], "funder_id": [], "price": []}))
    assert with_bids.instance.digest != frames.instance.digest  # an (empty) bids table is an input too


@pytest.mark.parametrize("bids, where, message", [
    (pd.DataFrame({"loan_id": ["L9"], "funder_id": ["buyer"], "price": [1.0]}), "row 1", "not among the originations"),
    (pd.DataFrame({"loan_id": ["L0"], "funder_id": ["nobody"], "price": [1.0]}), "row 1", "unknown funder id"),
    (pd.DataFrame({"loan_id": ["L0"], "funder_id": ["platform"], "price": [1.0]}), "row 1", "the platform does not bid"),
    (pd.DataFrame({"loan_id": ["L0", "L0"], "funder_id": ["buyer", "buyer"], "price": [1.0, 1.1]}), "row 2",
     "second bid"),
    (pd.DataFrame({"loan_id": ["L0"], "funder_id": ["buyer"], "price": ["cheap"]}), "row 1", "finite number"),
    (pd.DataFrame({"loan_id": ["L0"], "funder_id": ["buyer"]}), "column 'price'", "missing"),
])
def test_bad_bids_are_refused_naming_the_row(bids, where, message):
    with pytest.raises(InputError) as err:
        fa.plan(LOANS, _terms(), bids=bids)
    assert any(p.source == "bids" and where in p.where and message in p.message for p in err.value.problems), \
        err.value.problems


@pytest.mark.parametrize("penalty, loans, message", [
    ("no_such_column", LOANS, "which the originations do not have"),
    ("hold_value", LOANS.assign(hold_value=[0.0, -1.0, 0.0, 0.0, 0.0]), "must be a number >= 0"),
    (0.0, LOANS, "finite and > 0"),
])
def test_a_bad_penalty_is_refused_naming_the_key_or_rows(penalty, loans, message):
    with pytest.raises(InputError) as err:
        fa.plan(loans, _terms(penalty=penalty), bids=BIDS)
    assert message in str(err.value)


def test_verify_reprices_every_loan_from_the_bids_and_catches_a_loan_sold_without_one(tmp_path):
    files = write_day(tmp_path / "in", LOANS, _terms())
    BIDS.to_csv(tmp_path / "in" / "bids.csv", index=False)
    plan = fa.plan(files["originations"], files["funders"], bids=tmp_path / "in" / "bids.csv")
    plan.write(tmp_path / "out")
    assert verify_plan(files["originations"], files["funders"], tmp_path / "out", bids=tmp_path / "in" / "bids.csv").ok
    alloc = pd.read_csv(tmp_path / "out" / "allocations.csv", keep_default_na=False)
    i = alloc.index[alloc["loan_id"] == "L4"][0]  # no bid on L4: selling it breaks eligibility
    alloc.loc[i, ["funder_id", "funder_amount", "platform_amount", "cost"]] = ["buyer", 2500.0, 0.0, 0.0]
    alloc.to_csv(tmp_path / "out" / "allocations.csv", index=False)
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out", bids=tmp_path / "in" / "bids.csv")
    assert not rep.ok
    assert any("eligibility" in line and "buyer" in line for line in rep.lines())


def test_the_shipped_sale_plans_and_verifies_through_the_cli(tmp_path):
    args = ["--originations", str(SALE / "originations.csv"), "--funders", str(SALE / "funders.yaml"),
            "--bids", str(SALE / "bids.csv")]
    run = subprocess.run([sys.executable, "-m", "fundalloc", "plan", *args, "--out", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    check = subprocess.run([sys.executable, "-m", "fundalloc", "verify", *args, "--plan", str(tmp_path / "out")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    routes = pd.read_csv(tmp_path / "out" / "funders.csv").set_index("funder_id")
    assert routes.loc["buyer_prime", "cost"] < 0  # the prime buyer pays a premium
    # without the bids file the verifier prices the buyers at their cost of funds: the costs differ
    wrong = subprocess.run([sys.executable, "-m", "fundalloc", "verify", *args[:4], "--plan", str(tmp_path / "out")],
                           capture_output=True, text=True)
    assert wrong.returncode != 0


def test_the_api_plans_a_sale_from_an_uploaded_bids_file_and_a_what_if_keeps_it(tmp_path):
    from fundalloc.service.app import create_app
    from fundalloc.service.settings import Settings
    from fundalloc.store import Store
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    store = Store(url)
    store.migrate()
    key = {"Authorization": f"Bearer {store.create_key('planner', 'test')[1]}"}
    upload = {name: (f"{name}{ext}", (SALE / f"{name}{ext}").read_bytes())
              for name, ext in (("originations", ".csv"), ("funders", ".yaml"), ("bids", ".csv"))}
    local = fa.plan(SALE / "originations.csv", SALE / "funders.yaml", bids=SALE / "bids.csv")
    with TestClient(create_app(Settings.from_env({}, database_url=url, sync_wait_seconds=120))) as client:
        r = client.post("/v1/plans", files=upload, headers=key)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["summary"]["objective"] == pytest.approx(local.objective, abs=1e-6)
        w = client.post(f"/v1/plans/{body['id']}/what-if", json={"remove": ["buyer_yield"]}, headers=key)
        assert w.status_code == 201, w.text
        assert w.json()["summary"]["objective"] > body["summary"]["objective"]  # one buyer fewer: worth less


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(principal=st.lists(st.sampled_from([400.0, 700.0, 1100.0, 1900.0]), min_size=3, max_size=6),
       prices=st.lists(st.sampled_from([None, 0.97, 0.995, 1.0, 1.01, 1.03]), min_size=6, max_size=6),
       values=st.lists(st.sampled_from([0.0, 0.005, 0.02, 0.04]), min_size=6, max_size=6),
       cap=st.floats(0.2, 1.2))
def test_every_sale_is_the_exhaustive_optimum(principal, prices, values, cap):
    """Property: random small tapes, bids and values, one capped buyer and a warehouse: the plan's
    objective is the exhaustive optimum."""
    n = len(principal)
    loans = _loans(principal, values[:n])
    bids = pd.DataFrame([{"loan_id": f"L{i}", "funder_id": "buyer", "price": p}
                         for i, p in enumerate(prices[:n]) if p is not None])
    terms = _terms(cap=round(cap * sum(principal), 2))
    terms["platform"]["daily_capacity"] = 500.0
    terms["funders"].append({"id": "warehouse", "kind": "abs_warehouse", "funding_share": 0.9,
                             "cost_of_funds": 0.05})
    bids = bids if len(bids) else None
    best, _ = exact_optimum(loans, terms_from_dict(terms), bids=bids)
    plan = fa.plan(loans, terms, bids=bids)
    assert plan.objective == pytest.approx(best, rel=1e-7, abs=1e-6)


def test_the_batch_plans_a_day_with_its_bids_and_the_outbox_verifies(tmp_path):
    """A day's ``bids.csv`` in the inbox prices it; the outbox keeps it beside the terms, so the day
    verifies from the outbox alone."""
    import os
    import shutil

    from test_batch import BIN

    day = "2026-11-20"
    inbox = tmp_path / "in"
    (inbox / day).mkdir(parents=True)
    shutil.copy(SALE / "funders.yaml", inbox / "funders.yaml")
    shutil.copy(SALE / "originations.csv", inbox / day / "originations.csv")
    shutil.copy(SALE / "bids.csv", inbox / day / "bids.csv")
    env = {**os.environ, "FUNDALLOC_DATABASE_URL": f"sqlite:///{tmp_path / 'fa.db'}"}
    run = subprocess.run([str(BIN), "batch", "--date", day, "--inbox", str(inbox), "--outbox", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env)
    assert run.returncode in (0, 6), run.stderr  # (6: a day with unfunded loans, as a sale has)
    out = tmp_path / "out" / day
    assert (out / "inputs" / "bids.csv").exists()
    local = fa.plan(SALE / "originations.csv", SALE / "funders.yaml", bids=SALE / "bids.csv")
    summary = __import__("json").loads((out / "plan.json").read_text())
    assert summary["objective"] == pytest.approx(local.objective, abs=1e-6)
    check = subprocess.run([str(BIN), "verify", "--originations", str(inbox / day / "originations.csv"),
                            "--funders", str(out / "inputs" / "funders.json"), "--bids", str(out / "inputs" / "bids.csv"),
                            "--plan", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
