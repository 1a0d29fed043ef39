"""One test per constraint family: rows, coefficients and bounds as model.md writes them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fundalloc as fa
from fundalloc.backends import SolveOptions, get_backend
from fundalloc.solve.classes import loan_classes
from fundalloc.formulation import RowKind, Units, formulate


def day(loans: pd.DataFrame, funders: list[dict], platform: dict | None = None, **tables) -> fa.Day:
    terms = {"platform": {"id": "platform", "cost_of_capital": 0.10, **(platform or {})}, "funders": funders}
    return fa.load_day(loans, terms, **tables)


def loans_df(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({
        "loan_id": [f"L{i}" for i in range(n)],
        "principal": [1000.0 * (i + 1) for i in range(n)],
        "tenor_months": [11] * n, "apr": [0.1 + 0.02 * i for i in range(n)],
        "risk_grade": list("ABCDEA"[:n]), "province": ["GD", "ZJ", "GD", "CA", "ZJ", "GD"][:n],
        "score": [700, 650, 720, 600, 680, 710][:n], "borrower_id": ["B1", "B1", "B2", "B3", "B4", "B5"][:n],
    })


def loan_level(d: fa.Day):
    inst = d.instance
    units = Units.build(inst, np.arange(inst.n), inst.n)
    return inst, units, formulate(inst, units)


def rows_of(prob, kind: RowKind) -> np.ndarray:
    return np.flatnonzero(prob.rows["kind"].to_numpy() == kind.value)


def test_eligibility_lists_ranges_not_in_and_missing_values():
    df = loans_df()
    df.loc[2, "province"] = None
    d = day(df, [
        {"id": "a", "funding_share": 1.0, "cost_of_funds": 0.05,
         "eligibility": {"risk_grade": ["A", "C"], "apr": {"max": 0.15}}},
        {"id": "b", "funding_share": 1.0, "cost_of_funds": 0.05, "eligibility": {"province": {"not_in": ["GD"]}}},
        {"id": "c", "funding_share": 1.0, "cost_of_funds": 0.05, "eligibility": {"tenor_months": [11, 12]}},
    ])
    el = d.instance.elig
    assert el[:, 0].tolist() == [True, False, True, False, False, False]  # L5 is A but apr 0.20
    assert el[:, 1].tolist() == [False, True, False, True, True, False]  # missing province fails not_in too
    assert el[:, 2].all()


def test_totals_and_daily_max_rows():
    d = day(loans_df(), [{"id": "a", "funding_share": 0.7, "kind": "bank", "cost_of_funds": 0.05, "daily_max": 5000}])
    inst, units, prob = loan_level(d)
    (t,) = rows_of(prob, RowKind.TOTAL)
    A = prob.A.tocsr()
    row = A[t].toarray().ravel()
    pairs = (prob.pair_route == 0)
    assert np.allclose(row[:prob.n_pairs][pairs], 0.7 * inst.principal[prob.pair_unit[pairs]])
    assert row[prob.total_col[0]] == -1
    (m,) = rows_of(prob, RowKind.DAILY_MAX)
    assert prob.row_hi[m] == 5000 and A[m, prob.total_col[0]] == 1


def test_concentration_per_value_and_where():
    d = day(loans_df(), [{"id": "a", "funding_share": 0.5, "cost_of_funds": 0.05, "concentration": [
        {"name": "prov", "per": "province", "max_share": 0.4, "basis": "new"},
        {"name": "sub", "where": {"risk_grade": ["D", "E"]}, "max_share": 0.2, "basis": "new"}]}])
    inst, units, prob = loan_level(d)
    idx = rows_of(prob, RowKind.CONCENTRATION)
    labels = prob.rows["label"].to_numpy()[idx].tolist()
    assert labels == ["concentration:a:prov[CA]", "concentration:a:prov[GD]", "concentration:a:prov[ZJ]",
                      "concentration:a:sub"]
    A = prob.A.tocsr()
    gd = A[idx[1]].toarray().ravel()
    members = [i for i, p in enumerate(inst.loans["province"]) if p == "GD"]
    cols = [j for j in range(prob.n_pairs) if prob.pair_unit[j] in members and prob.pair_route[j] == 0]
    assert np.allclose(gd[cols], 0.5 * inst.principal[members])
    assert gd[prob.total_col[0]] == -0.4
    assert np.all(prob.row_hi[idx] == 0)  # new basis


def test_portfolio_basis_rhs_and_breached_segment_closed():
    port = pd.DataFrame({"funder_id": ["a", "a", "a"], "risk_grade": ["A", "D", "E"], "province": ["GD", "ZJ", "CA"],
                         "outstanding": [8000.0, 1500.0, 500.0]})
    d = day(loans_df(), [{"id": "a", "funding_share": 1.0, "cost_of_funds": 0.05, "concentration": [
        {"name": "sub", "where": {"risk_grade": ["D", "E"]}, "max_share": 0.25},
        {"name": "tight", "where": {"risk_grade": ["D"]}, "max_share": 0.1}]}], portfolio=port)
    inst, units, prob = loan_level(d)
    idx = rows_of(prob, RowKind.CONCENTRATION)
    assert prob.rows["label"].to_numpy()[idx].tolist() == ["concentration:a:sub"]
    assert prob.row_hi[idx[0]] == pytest.approx(0.25 * 10000 - 2000)
    # 'tight' is breached (1500 > 10% of 10000): D loans are closed at a, and the breach is reported
    assert not inst.elig[inst.loans["risk_grade"].to_numpy() == "D", 0].any()
    assert [b["constraint"] for b in inst.breaches] == ["concentration:tight"]
    plan = fa.plan(d)
    assert plan.breaches and plan.breaches[0]["funder_id"] == "a"


def test_weighted_average_rows():
    d = day(loans_df(), [{"id": "a", "funding_share": 0.8, "cost_of_funds": 0.05,
                          "weighted_average": [{"field": "score", "min": 690, "max": 715}]}])
    inst, units, prob = loan_level(d)
    A = prob.A.tocsr()
    (lo,) = rows_of(prob, RowKind.WA_MIN)
    (hi,) = rows_of(prob, RowKind.WA_MAX)
    p, w = inst.principal, inst.fields["score"]
    on = prob.pair_route == 0
    u = prob.pair_unit[on]
    r = A[lo].toarray().ravel()[:prob.n_pairs]
    assert np.allclose(r[on], 0.8 * p[u] * (w[u] - 690)) and not r[~on].any()
    assert prob.row_lo[lo] == 0 and np.isposinf(prob.row_hi[lo])
    r = A[hi].toarray().ravel()[:prob.n_pairs]
    assert np.allclose(r[on], 0.8 * p[u] * (w[u] - 715))
    assert prob.row_hi[hi] == 0


def test_obligor_prereduction_and_rows():
    expo = pd.DataFrame({"funder_id": ["a", "a"], "borrower_id": ["B2", "B3"], "outstanding": [2500.0, 0.0]})
    d = day(loans_df(), [{"id": "a", "funding_share": 1.0, "cost_of_funds": 0.05, "obligor_limit": 3500}],
            exposures=expo)
    inst, units, prob = loan_level(d)
    # B2's single loan (3000) does not fit 3500 - 2500; B1's two loans (1000 + 2000) fit: no row
    assert not inst.elig[2, 0]
    assert inst.elig[0, 0] and inst.elig[1, 0]
    assert len(inst.obligor_rows) == 0
    d2 = day(loans_df(), [{"id": "a", "funding_share": 1.0, "cost_of_funds": 0.05, "obligor_limit": 2500}])
    inst2, _, prob2 = loan_level(d2)
    (o,) = rows_of(prob2, RowKind.OBLIGOR)  # B1: 1000 + 2000 > 2500, each fits alone
    assert prob2.rows["label"].iloc[o] == "obligor:a:B1" and prob2.row_hi[o] == 2500


def test_platform_capacity_coefficients():
    d = day(loans_df(), [{"id": "a", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.05}],
            platform={"daily_capacity": 1e6})
    inst, units, prob = loan_level(d)
    (k,) = rows_of(prob, RowKind.PLATFORM_CAPACITY)
    r = prob.A.tocsr()[k].toarray().ravel()[:prob.n_pairs]
    expect = np.where(prob.pair_route == 0, 0.3, 1.0) * inst.principal[prob.pair_unit]
    assert np.allclose(r, expect)


def test_costs_use_expected_life_when_given():
    df = loans_df(2)
    df["expected_life_years"] = [2.0, None]
    d = day(df, [{"id": "a", "funding_share": 1.0, "cost_of_funds": 0.05}])
    assert d.instance.life.tolist() == [2.0, 0.5]
    inst, units, prob = loan_level(d)
    j = np.flatnonzero((prob.pair_unit == 0) & (prob.pair_route == 0))[0]
    assert prob.c[j] == pytest.approx(1000 * 0.05 * 2.0)


def test_lagrangian_bound_equals_the_loan_by_loan_lp(tmp_path):
    from generate import make_loans, make_terms, make_portfolio, make_exposures
    loans = make_loans(3000, seed=3)
    terms = make_terms(3000, seed=3)
    d = fa.load_day(loans, terms, make_portfolio(terms, 3), make_exposures(loans, terms, 3))
    plan = fa.plan(d, lp_tolerance=1e-9)
    inst, units, prob = loan_level(d)
    lp = get_backend("highs").solve(prob, SolveOptions())
    # the bound is valid, and tight: refined to 1e-9, the bins reach the loan-level LP optimum
    assert plan.lower_bound <= lp.objective + 1e-6 * lp.objective
    assert plan.lower_bound == pytest.approx(lp.objective, rel=1e-8)
    assert plan.objective >= lp.objective - 1e-6
    assert plan.gap <= 1e-4


def test_classes_group_interchangeable_loans_only():
    df = pd.concat([loans_df()] * 3, ignore_index=True)
    df["loan_id"] = [f"X{i}" for i in range(len(df))]
    d = day(df, [{"id": "a", "funding_share": 1.0, "cost_of_funds": 0.05,
                  "eligibility": {"risk_grade": ["A", "B"]}, "concentration": [
                      {"name": "prov", "per": "province", "max_share": 0.5, "basis": "new"}]}])
    cls, k, cont = loan_classes(d.instance)
    # same grade-eligibility, same province segment (only where eligible) -> same class
    for c in range(k):
        members = np.flatnonzero(cls == c)
        assert len({tuple(d.instance.elig[i]) for i in members}) == 1
    assert "score" not in cont  # no weighted-average test reads it here


@pytest.mark.parametrize("stop", ["work", "clock"])
def test_a_stopped_search_returns_a_feasible_plan_with_an_honest_status(tmp_path, stop):
    """No work budget: the LP's rounding, labelled by its gap. A time limit already past when the
    first LP ends (the safety stop): labelled ``time_limit``, whatever the machine's speed."""
    from generate import make_loans, make_terms
    from conftest import write_day
    from fundalloc.verify import verify_plan
    loans, terms = make_loans(2000, seed=5), make_terms(2000, seed=5)
    plan = fa.plan(loans, terms, **({"work_limit": 0} if stop == "work" else {"time_limit": 1e-4}))
    if stop == "clock":
        assert plan.status == fa.PlanStatus.TIME_LIMIT
    else:
        want = fa.PlanStatus.OPTIMAL if plan.gap <= 1e-5 else fa.PlanStatus.FEASIBLE
        assert plan.status == want
    files = write_day(tmp_path / "in", loans, terms)
    plan.write(tmp_path / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert rep.ok, rep.lines()
    assert plan.gap >= 0 and plan.lower_bound <= plan.objective


def test_a_mip_without_total_columns_has_the_same_optimum_and_holds_every_row():
    """The HiGHS backend substitutes each funder's total column by its defining sum in a MIP;
    the solution it maps back must hold every row of the model as given, totals included, and
    reach the same optimum as the LP-free check by CBC."""
    from dataclasses import replace
    from generate import make_loans, make_terms, make_portfolio, make_exposures
    from fundalloc.backends.highs import _without_totals
    loans = make_loans(25, seed=5)
    terms = make_terms(25, seed=5)
    d = fa.load_day(loans, terms, make_portfolio(terms, 5), make_exposures(loans, terms, 5))
    inst, units, _ = loan_level(d)
    units = replace(units, integer=np.ones(units.U, dtype=bool))
    prob = formulate(inst, units)
    small, totals = _without_totals(prob)
    assert totals is not None and small.n_cols == prob.n_cols - len(prob.total_col)
    sol = get_backend("highs").solve(prob, SolveOptions(mip_rel_gap=0.0))
    x = sol.x
    act = prob.A @ x
    scale = np.maximum(1.0, np.abs(act))
    assert (act >= prob.row_lo - 1e-6 * scale).all() and (act <= prob.row_hi + 1e-6 * scale).all()
    assert np.allclose(x[:prob.n_pairs], np.round(x[:prob.n_pairs]), atol=1e-6)
    assert sol.objective == pytest.approx(float(prob.c @ x) + prob.offset, rel=1e-9)
    ref = get_backend("pulp").solve(prob, SolveOptions(mip_rel_gap=0.0))
    assert sol.objective == pytest.approx(ref.objective, rel=1e-7)
