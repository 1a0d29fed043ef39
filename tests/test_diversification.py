"""Funder diversification (风险分散): no funder, and no group of funders, above its share of the
day's funded principal, and a group's total within its daily maximum.

Plans are checked against exhaustive enumeration (``exhaustive.py`` and ``oracle.py``, both
written from the model alone), against the independent verifier, and through the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fundalloc as fa
from conftest import write_day
from exhaustive import exact_optimum
from fundalloc.errors import InputError
from fundalloc.terms import terms_from_dict
from fundalloc.verify import verify_plan
from oracle import brute_force


def _loans(principal: list[float]) -> pd.DataFrame:
    n = len(principal)
    return pd.DataFrame({
        "loan_id": [f"L{i}" for i in range(n)],
        "principal": principal,
        "tenor_months": [12] * n,
        "apr": [0.18] * n,
        "risk_grade": ["B"] * n,
        "province": ["GD"] * n,
        "score": [700] * n,
    })


def _cheap_bank_day() -> tuple[pd.DataFrame, dict]:
    """One bank far cheaper than the rest: without diversification it takes every loan."""
    loans = _loans([1000.0, 2000.0, 1500.0, 500.0, 2500.0, 1200.0])
    terms = {
        "platform": {"id": "platform", "cost_of_capital": 0.12},
        "funders": [
            {"id": "bank_cheap", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.02},
            {"id": "bank_two", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.05},
            {"id": "trust", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.07},
        ],
    }
    return loans, terms


def test_without_a_share_limit_the_cheapest_bank_takes_the_day_and_with_one_it_does_not():
    loans, terms = _cheap_bank_day()
    free = fa.plan(loans, terms)
    assert set(free.allocations["funder_id"]) == {"bank_cheap"}

    terms["platform"]["max_funder_share"] = 0.4
    capped = fa.plan(loans, terms)
    day = float(loans["principal"].sum())
    amount = capped.allocations.groupby("funder_id")["funder_amount"].sum().drop(["platform", ""], errors="ignore")
    assert amount.max() <= 0.4 * day + 1e-6
    assert capped.objective > free.objective  # the limit costs something
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms))
    assert capped.objective == pytest.approx(best, rel=1e-9)
    c = capped.constraints.set_index("constraint")
    row = c.loc["funder_share:bank_cheap"]
    assert row["kind"] == "funder_share"
    assert row["limit"] == pytest.approx(0.4)
    assert 0.0 <= row["value"] <= 0.4 + 1e-9  # a share, in the limit's own units
    assert bool(row["binding"])


def test_a_group_share_and_a_group_cap_hold_and_name_the_group():
    loans, terms = _cheap_bank_day()
    terms["groups"] = [{"name": "banks", "members": ["bank_cheap", "bank_two"], "max_share_of_day": 0.5},
                       {"name": "cheap_alone", "members": ["bank_cheap"], "daily_max": 1500.0}]
    plan = fa.plan(loans, terms)
    amount = plan.allocations.groupby("funder_id")["funder_amount"].sum()
    funded = float(loans["principal"][plan.allocations["funder_id"].to_numpy() != ""].sum())
    banks = float(amount.get("bank_cheap", 0.0) + amount.get("bank_two", 0.0))
    assert banks <= 0.5 * funded + 1e-6
    assert float(amount.get("bank_cheap", 0.0)) <= 1500.0 + 1e-6
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms))
    assert plan.objective == pytest.approx(best, rel=1e-9)
    c = plan.constraints.set_index("constraint")
    assert c.loc["group_share:banks", "funder_id"] == "banks"
    assert c.loc["group_max:cheap_alone", "limit"] == pytest.approx(1500.0)
    assert c.loc["group_max:cheap_alone", "kind"] == "group_max"


def test_the_verifier_catches_a_plan_over_a_funders_share(tmp_path):
    loans, terms = _cheap_bank_day()
    terms["platform"]["max_funder_share"] = 0.4
    files = write_day(tmp_path / "in", loans, terms)
    plan = fa.plan(loans, terms)
    plan.write(tmp_path / "out")
    assert verify_plan(files["originations"], files["funders"], tmp_path / "out").ok
    # the same loans all on the cheap bank: a plan that breaks the share
    alloc = pd.read_csv(tmp_path / "out" / "allocations.csv", keep_default_na=False)
    alloc["funder_id"] = "bank_cheap"
    alloc["funder_amount"] = 0.7 * loans["principal"].to_numpy()
    alloc["platform_amount"] = 0.3 * loans["principal"].to_numpy()
    alloc["cost"] = loans["principal"].to_numpy() * (0.7 * 0.02 + 0.3 * 0.12) * (13 / 24)
    alloc.to_csv(tmp_path / "out" / "allocations.csv", index=False)
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert not rep.ok
    assert any("funder_share" in line and "bank_cheap" in line for line in rep.lines())


def test_the_cli_plans_and_verifies_a_day_with_groups(tmp_path):
    loans, terms = _cheap_bank_day()
    terms["platform"]["max_funder_share"] = 0.45
    terms["groups"] = [{"name": "banks", "members": ["bank_cheap", "bank_two"], "max_share_of_day": 0.6}]
    files = write_day(tmp_path / "in", loans, terms)
    args = ["--originations", files["originations"], "--funders", files["funders"]]
    run = subprocess.run([sys.executable, "-m", "fundalloc", "plan", *args, "--out", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    check = subprocess.run([sys.executable, "-m", "fundalloc", "verify", *args, "--plan", str(tmp_path / "out")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    cons = pd.read_csv(tmp_path / "out" / "constraints.csv")
    assert {"funder_share:bank_cheap", "group_share:banks"} <= set(cons["constraint"])


@pytest.mark.parametrize("group, message", [
    ({"name": "g", "members": ["nobody"], "daily_max": 1.0}, "not funders: ['nobody']"),
    ({"name": "g", "members": ["platform"], "daily_max": 1.0}, "the platform cannot be a member"),
    ({"name": "g", "members": ["bank_two"]}, "needs 'daily_max', 'max_share_of_day', 'concentration' and/or 'weighted_average'"),
    ({"name": "g", "members": ["bank_two"], "concentration": [{"name": "c", "max_share": 0.5, "basis": "portfolio"}]},
     "basis new"),
    ({"name": "g", "members": ["bank_two", "bank_two"], "daily_max": 1.0}, "members repeat"),
    ({"name": "g", "members": [], "daily_max": 1.0}, "groups[g].members"),
    ({"name": "g", "members": ["bank_two"], "max_share_of_day": 1.5}, "groups[g].max_share_of_day"),
    ({"name": "../g", "members": ["bank_two"], "daily_max": 1.0}, "not a plain name"),
    ({"name": "g", "members": ["bank_two"], "daily_maxx": 1.0}, "unknown key 'daily_maxx'"),
])
def test_a_bad_group_is_refused_with_its_key(group, message):
    _, terms = _cheap_bank_day()
    terms["groups"] = [group]
    with pytest.raises(InputError) as err:
        terms_from_dict(terms, "funders.yaml")
    assert message in str(err.value)


def test_duplicate_group_names_and_a_bad_platform_share_are_refused():
    _, terms = _cheap_bank_day()
    terms["groups"] = [{"name": "g", "members": ["bank_two"], "daily_max": 1.0}] * 2
    with pytest.raises(InputError, match="duplicate group names"):
        terms_from_dict(terms)
    _, terms = _cheap_bank_day()
    terms["platform"]["max_funder_share"] = 0.0
    with pytest.raises(InputError, match="platform.max_funder_share"):
        terms_from_dict(terms)


def test_terms_without_the_new_keys_keep_their_canonical_form():
    """A terms file written before diversification existed has the same canonical JSON (and so
    the same input digest) as before: the new keys appear only when set."""
    _, terms = _cheap_bank_day()
    canon = json.loads(terms_from_dict(terms).canonical_json())
    assert "groups" not in canon and "max_funder_share" not in canon["platform"]
    terms["platform"]["max_funder_share"] = 0.5
    terms["groups"] = [{"name": "g", "members": ["bank_two"], "daily_max": 1.0}]
    doc = terms_from_dict(terms).document()
    assert doc["platform"]["max_funder_share"] == 0.5 and doc["groups"][0]["members"] == ["bank_two"]
    assert terms_from_dict(yaml.safe_load(yaml.safe_dump(doc))) == terms_from_dict(terms)


@st.composite
def diversified_days(draw):
    """Up to 8 loans and 4 routes, with a funder share and groups drawn so that they bind."""
    routes = draw(st.integers(2, 3))
    n = draw(st.integers(2, {2: 8, 3: 7}[routes]))
    principal = [float(draw(st.integers(2, 40)) * 50) for _ in range(n)]
    loans = _loans(principal)
    loans["tenor_months"] = [draw(st.sampled_from([3, 6, 12, 24])) for _ in range(n)]
    loans["risk_grade"] = [draw(st.sampled_from(["A", "B", "C"])) for _ in range(n)]
    total = sum(principal)
    funders = []
    for k in range(routes):
        share = draw(st.sampled_from([0.5, 0.7])) if k == 0 else draw(st.sampled_from([0.7, 0.9, 1.0]))
        f = {"id": f"f{k}", "kind": "bank" if share <= 0.7 else "trust", "funding_share": share,
             "cost_of_funds": draw(st.integers(2, 9)) / 100}
        if draw(st.booleans()):
            f["daily_max"] = round(share * total * draw(st.floats(0.2, 0.9)), 2)
        if draw(st.booleans()):
            f["eligibility"] = {"risk_grade": draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=1,
                                                            max_size=2, unique=True))}
        if draw(st.integers(0, 3)) == 0:
            f["max_share_of_day"] = draw(st.sampled_from([0.25, 0.4, 0.6]))
        funders.append(f)
    platform = {"id": "platform", "cost_of_capital": draw(st.integers(10, 15)) / 100}
    if draw(st.booleans()):
        platform["daily_capacity"] = round(total * draw(st.floats(0.1, 0.6)), 2)
    if draw(st.booleans()):
        platform["max_funder_share"] = draw(st.sampled_from([0.2, 0.35, 0.5, 0.65]))
    groups = []
    ids = [f["id"] for f in funders]
    for j in range(draw(st.integers(0, 2))):
        members = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids), unique=True))
        g = {"name": f"g{j}", "members": members}
        if draw(st.booleans()):
            g["max_share_of_day"] = draw(st.sampled_from([0.3, 0.5, 0.8]))
        if draw(st.booleans()):
            g["concentration"] = [draw(st.sampled_from([
                {"name": "grade_c", "where": {"risk_grade": ["C"]}, "max_share": 0.3},
                {"name": "by_grade", "per": "risk_grade", "max_share": 0.6}]))]
        if (draw(st.booleans()) or "max_share_of_day" not in g) and "concentration" not in g:
            g["daily_max"] = round(total * draw(st.floats(0.1, 0.7)), 2)
        groups.append(g)
    terms = {"platform": platform, "funders": funders}
    if groups:
        terms["groups"] = groups
    return loans, terms


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(diversified_days())
def test_small_diversified_days_match_the_enumerated_optimum(day):
    loans, terms = day
    plan = fa.plan(loans, terms)
    model = fa.Terms.model_validate(terms)
    best, _ = exact_optimum(loans, model)
    assert plan.objective == pytest.approx(best, rel=1e-9, abs=1e-6)
    assert plan.lower_bound <= best + 1e-6
    assert plan.status == fa.PlanStatus.OPTIMAL
    if len(loans) <= 5:  # the loop-by-loop oracle agrees with the vectorised one
        slow, _ = brute_force(loans, model)
        assert slow == pytest.approx(best, rel=1e-9, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11])
def test_a_generated_day_with_diversification_holds_every_limit(tmp_path, seed):
    sys.path.insert(0, str(__import__("conftest").FIXTURES))
    import generate

    loans = generate.make_loans(3000, seed=seed)
    terms = generate.make_terms(3000, seed=seed)
    kinds = {f["id"]: f["kind"] for f in terms["funders"]}
    terms["platform"]["max_funder_share"] = 0.12
    terms["groups"] = [
        {"name": "banks", "members": [i for i, k in kinds.items() if k == "bank"], "max_share_of_day": 0.45},
        {"name": "abs", "members": [i for i, k in kinds.items() if k == "abs_warehouse"],
         "daily_max": round(0.2 * float(loans["principal"].sum()), 2)},
    ]
    files = write_day(tmp_path / "in", loans, terms, loans_name="loans.parquet")
    plan = fa.plan(files["originations"], files["funders"])
    plan.write(tmp_path / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert rep.ok, rep.lines()
    assert plan.lower_bound <= plan.objective + 1e-6
    assert plan.gap < 1e-3
    c = plan.constraints
    assert (c.loc[c["kind"] == "funder_share", "value"] <= 0.12 + 1e-9).all()


def test_a_what_if_that_removes_a_member_keeps_the_group_of_the_rest():
    loans, terms = _cheap_bank_day()
    terms["groups"] = [{"name": "banks", "members": ["bank_cheap", "bank_two"], "max_share_of_day": 0.5},
                       {"name": "solo", "members": ["bank_cheap"], "daily_max": 1000.0}]
    day = fa.load_day(loans, terms)
    gone = fa.derive(day, remove=["bank_cheap"])
    assert [(g.name, g.members) for g in gone.terms.groups] == [("banks", ("bank_two",))]
    plan = fa.plan(gone)
    best, _ = exact_optimum(loans, gone.terms)
    assert plan.objective == pytest.approx(best, rel=1e-9)
    capped = fa.plan(fa.derive(day, platform={"max_funder_share": 0.3}))
    amount = capped.allocations.groupby("funder_id")["funder_amount"].sum().drop(["platform", ""], errors="ignore")
    assert amount.max() <= 0.3 * float(loans["principal"].sum()) + 1e-6


@pytest.mark.slow
def test_the_batch_plans_two_days_with_groups_and_every_day_verifies(tmp_path):
    """The day-end batch carries groups into each day's terms (a group's cap scaled with the days
    its look-ahead plans as one) and every day's plan holds them."""
    import os

    from test_batch import BIN, D1, make_inbox, month_terms

    t = month_terms()
    t["platform"]["max_funder_share"] = 0.5
    t["groups"] = [{"name": "banks", "members": ["bank_a", "bank_b"], "max_share_of_day": 0.6, "daily_max": 300_000}]
    inbox = make_inbox(tmp_path / "in", days=2, terms=t)
    env = {**os.environ, "FUNDALLOC_DATABASE_URL": f"sqlite:///{tmp_path / 'fa.db'}"}
    for k in range(2):
        d = (D1 + __import__("datetime").timedelta(days=k)).isoformat()
        r = subprocess.run([str(BIN), "batch", "--date", d, "--inbox", str(inbox), "--outbox", str(tmp_path / "out")],
                           capture_output=True, text=True, env=env)
        assert r.returncode in (0, 6), r.stderr
        day_out = tmp_path / "out" / d
        cons = pd.read_csv(day_out / "constraints.csv").set_index("constraint")
        assert cons.loc["group_max:banks", "value"] <= 300_000 + 0.01
        assert cons.loc["group_share:banks", "value"] <= 0.6 + 1e-9
        check = subprocess.run([str(BIN), "verify", "--originations", str(inbox / d / "originations.csv"),
                                "--funders", str(day_out / "inputs" / "funders.json"), "--plan", str(day_out)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_a_funders_own_share_of_day_is_its_limit_over_the_platforms():
    loans, terms = _cheap_bank_day()
    terms["platform"]["max_funder_share"] = 0.6
    terms["funders"][0]["max_share_of_day"] = 0.25
    plan = fa.plan(loans, terms)
    c = plan.constraints.set_index("constraint")
    assert c.loc["funder_share:bank_cheap", "limit"] == pytest.approx(0.25)
    assert c.loc["funder_share:bank_two", "limit"] == pytest.approx(0.6)
    assert c.loc["funder_share:bank_cheap", "value"] <= 0.25 + 1e-9
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms))
    assert plan.objective == pytest.approx(best, rel=1e-9)


def test_a_groups_concentration_holds_over_its_members_loans(tmp_path):
    """No grade above 40% of the two banks' total today, whichever bank holds the loans."""
    loans, terms = _cheap_bank_day()
    loans["risk_grade"] = ["A", "A", "B", "A", "C", "A"]
    terms["groups"] = [{"name": "banks", "members": ["bank_cheap", "bank_two"],
                        "concentration": [{"name": "grade", "per": "risk_grade", "max_share": 0.4}]}]
    plan = fa.plan(loans, terms)
    a = plan.allocations.merge(loans, on="loan_id")
    banks = a[a["funder_id"].isin(["bank_cheap", "bank_two"])]
    share = banks.groupby("risk_grade")["funder_amount"].sum() / banks["funder_amount"].sum()
    assert share.max() <= 0.4 + 1e-9
    best, _ = exact_optimum(loans, fa.Terms.model_validate(terms))
    assert plan.objective == pytest.approx(best, rel=1e-9)
    c = plan.constraints.set_index("constraint")
    assert c.loc["group_concentration:banks:grade[A]", "funder_id"] == "banks"
    assert c.loc["group_concentration:banks:grade[A]", "value"] == pytest.approx(float(share.get("A", 0.0)))
    files = write_day(tmp_path / "in", loans, terms)
    plan.write(tmp_path / "out")
    assert verify_plan(files["originations"], files["funders"], tmp_path / "out").ok
    # all grade-A loans on the banks break it, and the verifier says so
    alloc = pd.read_csv(tmp_path / "out" / "allocations.csv", keep_default_na=False)
    p = loans["principal"].to_numpy()
    alloc["funder_id"], alloc["funder_amount"], alloc["platform_amount"] = "bank_cheap", 0.7 * p, 0.3 * p
    alloc["cost"] = p * (0.7 * 0.02 + 0.3 * 0.12) * (13 / 24)
    alloc.to_csv(tmp_path / "out" / "allocations.csv", index=False)
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert any("group_concentration" in line and "grade[A]" in line for line in rep.lines())
