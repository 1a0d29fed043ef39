"""The analysts' API: scenarios, comparisons, sweeps, explanations, and shadow prices that
predict what a re-solve actually gives."""

from __future__ import annotations

import numpy as np
import pytest

import fundalloc as fa
from generate import make_exposures, make_loans, make_portfolio, make_terms

FAST = dict()


@pytest.fixture(scope="module")
def day():
    loans, terms = make_loans(6000, seed=21), make_terms(6000, seed=21)
    return fa.load_day(loans, terms, make_portfolio(terms, 21), make_exposures(loans, terms, 21))


@pytest.fixture(scope="module")
def base(day):
    return fa.plan(day, **FAST)


def test_derive_applies_overrides_and_validates(day):
    f0 = day.terms.funders[0]
    sc = fa.derive(day, funders={f0.id: {"daily_max": f0.daily_max / 2, "daily_min": 0}},
                   platform={"cost_of_capital": 0.15}, remove=["trust_2"], scale=1.1)
    assert sc.terms.funders[0].daily_max == f0.daily_max / 2
    assert sc.terms.platform.cost_of_capital == 0.15
    assert "trust_2" not in sc.terms.route_ids
    assert sc.loans["principal"].sum() == pytest.approx(day.loans["principal"].sum() * 1.1)
    with pytest.raises(fa.InputError, match="no funder 'nobody'"):
        fa.derive(day, funders={"nobody": {"daily_max": 1}})
    with pytest.raises(fa.InputError, match="daily_min"):
        fa.derive(day, funders={f0.id: {"daily_max": 1.0}})  # below its daily_min
    small = fa.derive(day, where="risk_grade == 'A'")
    assert set(small.loans["risk_grade"]) == {"A"}


def test_a_new_warehouse_is_used_when_cheap(day, base):
    new = {"id": "abs_new", "kind": "abs_warehouse", "funding_share": 0.9, "cost_of_funds": 0.02,
           "facility_limit": 5e6, "outstanding": 0}
    p = fa.plan(fa.derive(day, add=[new]), **FAST)
    row = p.funders.set_index("funder_id").loc["abs_new"]
    assert row["loan_count"] > 0
    assert p.lower_bound <= base.lower_bound + 1e-6


def test_compare_reports_cost_routes_and_moved_loans(day, base):
    f0 = day.terms.funders[0]
    cut = fa.plan(fa.derive(day, funders={f0.id: {"daily_max": f0.daily_max / 2, "daily_min": 0}}), warm=base, **FAST)
    c = fa.compare(base, cut)
    assert c.summary.loc["lower_bound", "change"] >= -1e-6  # less capacity never lowers the bound
    r = c.routes.loc[f0.id]
    assert r["funder_amount_scenario"] <= f0.daily_max / 2 + 0.01
    assert (c.moved["from"] == f0.id).any()
    assert c.moved["why"].str.len().gt(0).all()
    moved_from = c.moved[c.moved["from"] == f0.id]
    assert moved_from["why"].str.contains(f0.id).all()


def test_a_warm_plan_still_within_tolerance_is_reused_without_a_mip():
    from conftest import FIXTURES
    d = FIXTURES / "day100k"
    day = fa.load_day(d / "originations.parquet", d / "funders.yaml", d / "portfolio.csv", d / "exposures.csv")
    base = fa.plan(day)
    assert base.gap <= 1e-5
    slack = base.constraints.query("kind == 'daily_max' and not binding").iloc[0]
    p = fa.plan(fa.derive(day, funders={slack["funder_id"]: {"daily_max": slack["limit"] * 2}}), warm=base)
    assert p.stats["incumbent_source"] == "warm_start"
    assert [o["source"] for o in p.stats["offers"]] == ["warm_start"]  # nothing else was searched
    assert p.objective == pytest.approx(base.objective, rel=1e-12)
    assert (p.allocations["funder_id"].to_numpy() == base.allocations["funder_id"].to_numpy()).all()
    assert p.gap <= 1e-5 and p.status == fa.PlanStatus.OPTIMAL


def test_a_warm_plan_that_breaks_the_new_limits_is_not_reused(day, base):
    top = base.constraints.query("kind == 'daily_max' and binding").iloc[0]
    sc = fa.derive(day, funders={top["funder_id"]: {"daily_max": top["value"] * 0.8, "daily_min": 0}})
    p = fa.plan(sc, warm=base, **FAST)
    offers = {o["source"]: o for o in p.stats["offers"]}
    assert not offers["warm_start"]["kept"]  # it breaks the new cap
    assert p.stats["incumbent_source"] != "warm_start"
    row = p.constraints.set_index("constraint").loc[top["constraint"]]
    assert row["value"] <= top["value"] * 0.8 + 0.01


@pytest.mark.slow
def test_sweep_is_monotone_in_platform_capital(day, base):
    cap = day.terms.platform.daily_capacity
    table = fa.sweep(day, "platform.daily_capacity", [cap * 0.8, cap, cap * 1.2], warm=base, **FAST)
    assert list(table["value"]) == [cap * 0.8, cap, cap * 1.2]
    bounds = [fa.plan(fa.derive(day, platform={"daily_capacity": v}), **FAST).lower_bound for v in table["value"]]
    assert bounds[0] >= bounds[1] - 1e-6 >= bounds[2] - 2e-6
    assert (table["shadow_price"] <= 1e-9).all()


@pytest.mark.slow
def test_a_sweep_point_is_never_dearer_than_an_earlier_plan_that_holds_there(day, base):
    # capital rising: every earlier plan (and the base, planned at cap) holds every limit of the
    # later points, so each point costs at most what the cheapest of them costs
    cap = day.terms.platform.daily_capacity
    values = [cap * 0.7, cap * 0.85, cap, cap * 1.1, cap * 1.3]
    table = fa.sweep(day, "platform.daily_capacity", values, warm=base, **FAST)
    objective = table["objective"].to_numpy()
    for j in range(1, len(values)):
        assert objective[j] <= objective[:j].min() + 1e-6
        if values[j] >= cap:
            assert objective[j] <= base.objective + 1e-6


def test_a_warm_resolve_of_an_unchanged_problem_settles_on_the_warm_plan(day, base):
    # a limit that does not bind, raised: the same LP, and no better plan than the warm one, so
    # the rounds would only repeat the search that made it
    c = base.constraints
    idle = c[(c["kind"] == "daily_max") & (c["shadow_price"] == 0) & (c["slack"] > 0)]
    assert len(idle), "the generated day has a daily cap that does not bind"
    funder = idle["funder_id"].iloc[0]
    limit = float(idle["limit"].iloc[0])
    again = fa.plan(fa.derive(day, funders={funder: {"daily_max": limit * 1.1}}), warm=base, **FAST)
    assert again.stats.get("settled_by_warm_start") == 1
    assert [o["source"] for o in again.stats["offers"]] == ["warm_start"]
    assert again.stats["lp_objective"] == pytest.approx(base.stats["lp_objective"], rel=1e-12)
    assert again.objective <= base.objective * (1 + 1e-12)
    # a change that moves the LP is searched again
    cap = day.terms.platform.daily_capacity
    tighter = fa.plan(fa.derive(day, platform={"daily_capacity": cap * 0.9}), warm=base, **FAST)
    assert tighter.stats["settled_by_warm_start"] == 0


def test_shadow_prices_table(base):
    t = fa.shadow_prices(base)
    assert len(t) > 0 and t["binding"].all()
    assert (t["shadow_price"].abs().diff().dropna() <= 1e-12).all()  # most valuable first


def test_explain_a_funded_and_an_unfunded_loan(day, base):
    i = int(np.flatnonzero(base.route_index < day.instance.R)[0])
    e = fa.explain(base, day, day.loans["loan_id"].iloc[i])
    assert e["route"] == base.allocations["funder_id"].iloc[i]
    assert e["cost"] == pytest.approx(base.allocations["cost"].iloc[i])
    assert len(e["routes"]) == day.instance.R
    assert any(r["status"] == "funds this loan" for r in e["routes"])
    # a loan no route may take: every route says why
    loans = day.loans.copy()
    loans.loc[0, "apr"] = 0.4
    loans.loc[0, "risk_grade"] = "E"
    loans["score"] = loans["score"].astype(float)
    loans.loc[0, "score"] = np.nan  # trust_2's weighted-average test reads it
    d2 = fa.load_day(loans, day.terms)
    p2 = fa.plan(d2, **FAST)
    e2 = fa.explain(p2, d2, loans["loan_id"].iloc[0])
    assert e2["route"] == ""
    assert all(r["status"].startswith("not eligible") for r in e2["routes"])
    assert any("apr=0.4" in r["status"] for r in e2["routes"])
    assert any("score missing" in r["status"] for r in e2["routes"])
    assert "eligible for no route" in p2.allocations["unfunded_reason"].iloc[0]


def _lp_bound(day, **changes) -> float:
    sc = fa.derive(day, **changes) if changes else day
    p = fa.plan(sc, lp_tolerance=1e-13, work_limit=0)
    return p.lower_bound


def test_shadow_prices_match_finite_differences(day):
    """Relax and tighten each binding cap a little, re-solve, and compare with the shadow price."""
    p = fa.plan(day, lp_tolerance=1e-13, work_limit=0)
    c = p.constraints
    caps = c[c["binding"] & c["kind"].isin(["daily_max", "facility_headroom", "platform_capacity"])
             & (c["shadow_price"].abs() > 1e-6)]
    assert len(caps) >= 3
    checked = 0
    for row in caps.head(4).itertuples(index=False):
        delta = 200.0
        if row.kind == "platform_capacity":
            up = {"platform": {"daily_capacity": row.limit + delta}}
            down = {"platform": {"daily_capacity": row.limit - delta}}
        elif row.kind == "daily_max":
            f = next(f for f in day.terms.funders if f.id == row.funder_id)
            up = {"funders": {f.id: {"daily_max": row.limit + delta}}}
            down = {"funders": {f.id: {"daily_max": row.limit - delta, "daily_min": min(f.daily_min or 0, row.limit - delta)}}}
        else:
            f = next(f for f in day.terms.funders if f.id == row.funder_id)
            up = {"funders": {f.id: {"outstanding": f.outstanding - delta}}}
            down = {"funders": {f.id: {"outstanding": f.outstanding + delta}}}
        slope = (_lp_bound(day, **up) - _lp_bound(day, **down)) / (2 * delta)
        assert slope == pytest.approx(row.shadow_price, rel=0.02, abs=1e-6), row.constraint
        checked += 1
    assert checked >= 3
