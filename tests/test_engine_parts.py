"""The engine's vectorised helpers against plain reference implementations, on random inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fundalloc as fa
from fundalloc.solve.classes import combine_keys, loan_classes
from fundalloc.solve.obligor import restrict_obligor
from fundalloc.solve.restricted import FixedSums, restricted
from fundalloc.evaluate import obligor_values
from fundalloc.formulation import Units

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from conftest import write_day  # noqa: E402
from fundalloc.verify import verify_plan  # noqa: E402
from generate import make_exposures, make_loans, make_portfolio, make_terms  # noqa: E402


@pytest.mark.parametrize("seed", range(6))
def test_combine_keys_gives_one_dense_id_per_distinct_tuple(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    keys = [rng.integers(-3, 4, n), rng.integers(0, 2, n).astype(bool).astype(np.int8),
            rng.choice(np.array([0.5, 1.5, np.nan]), n), rng.integers(0, 1 << 40, n) % 7 * (1 << 33)]
    if seed % 2:  # many wide keys: the radix product overflows and is factorised midway
        keys += [rng.integers(0, 1 << 20, n) for _ in range(5)]
    ids, k = combine_keys(keys, n)
    tuples = pd.MultiIndex.from_arrays([pd.Series(x).fillna(-99) for x in keys])
    ref, uniq = pd.factorize(tuples)
    assert k == len(uniq) and ids.min() == 0 and ids.max() == k - 1
    # the same partition: a bijection between the ids and the reference ids
    pairs = pd.DataFrame({"a": ids, "b": ref}).drop_duplicates()
    assert len(pairs) == k and pairs["a"].is_unique and pairs["b"].is_unique


@pytest.fixture(scope="module")
def day():
    loans = make_loans(4000, seed=5)
    terms = make_terms(4000, seed=5)
    return fa.load_day(loans, terms, make_portfolio(terms, 5), make_exposures(loans, terms, 5)).instance


def test_obligor_values_match_a_groupby_over_every_loan(day):
    inst = day
    assert inst.obligor_rows, "the generated day has obligor rows"
    rng = np.random.default_rng(1)
    route = rng.integers(0, inst.R + 1, inst.n)
    got = obligor_values(inst, route)
    funded = route < inst.R
    df = pd.DataFrame({"slot": inst.obligor_slot[funded], "route": route[funded],
                       "amt": inst.share[route[funded]] * inst.principal[funded]})
    used = df[df["slot"] >= 0].groupby(["slot", "route"])["amt"].sum()
    want = np.array([o.existing + used.get((o.slot, o.route), 0.0) for o in inst.obligor_rows])
    assert np.allclose(got, want, rtol=1e-12, atol=1e-9)


def test_units_sum_their_loans_whether_or_not_every_loan_is_in_one(day):
    inst = day
    rng = np.random.default_rng(2)
    unit = rng.integers(-1, 50, inst.n)
    for lu in (unit, np.where(unit < 0, 0, unit)):
        u = Units.build(inst, lu, 50)
        inside = lu >= 0
        for j in range(50):
            m = lu == j
            assert u.count[j] == m.sum()
            assert u.P[j] == pytest.approx(inst.principal[m].sum())
            assert u.PL[j] == pytest.approx((inst.principal * inst.life)[m].sum())
            for name, v in inst.fields.items():
                assert u.PW[name][j] == pytest.approx(np.nansum(inst.principal[m] * v[m]), nan_ok=True) \
                    or np.isnan(u.PW[name][j])
            if m.any():
                assert lu[u.rep[j]] == j
        assert inside.sum() == u.count.sum()


def test_combine_keys_takes_unsigned_keys_after_the_first():
    # eligibility words are uint64; with more than 64 routes the second word is one of them
    rng = np.random.default_rng(4)
    keys = [rng.integers(0, 3, 500), rng.integers(0, 4, 500).astype(np.uint64),
            rng.integers(0, 2, 500).astype(np.uint8)]
    ids, k = combine_keys(keys, 500)
    ref, uniq = pd.factorize(pd.MultiIndex.from_arrays(keys))
    assert k == len(uniq) and np.array_equal(ids, ref)


def test_combine_keys_numbers_ids_by_first_appearance():
    rng = np.random.default_rng(9)
    keys = [rng.integers(0, 5, 1000), rng.integers(0, 3, 1000)]
    ids, k = combine_keys(keys, 1000)
    ref, _ = pd.factorize(pd.MultiIndex.from_arrays(keys))
    assert np.array_equal(ids, ref)
    # composing the same partition from other keys gives the same ids
    merged, _ = combine_keys([keys[0] * 3 + keys[1]], 1000)
    assert np.array_equal(merged, ids)


def _fixed_reference(inst, cls, route):
    """Sums of the fixed loans of ``route`` by (class, obligor slot, route), with a groupby."""
    fixed = route >= 0
    df = pd.DataFrame({"cls": cls[fixed], "slot": inst.obligor_slot[fixed], "route": route[fixed],
                       "P": inst.principal[fixed], "PL": inst.principal_life[fixed],
                       **{k: inst.principal_fields[k][fixed] for k in inst.fields}, "count": 1.0})
    return df.groupby(["cls", "slot", "route"]).sum(min_count=1)


@pytest.mark.parametrize("table", [True, False])
def test_fixed_sums_follow_the_plan_and_the_obligor_rows(day, table):
    """The MIPs' fixed sums, kept up to date as loans move, are freed and obligor rows join,
    equal a fresh groupby over the fixed loans at every step."""
    full = day
    cls, _, _ = loan_classes(full)
    rng = np.random.default_rng(3)
    sums = FixedSums(full, cls)
    sums.fits = table  # the table, or (False) the direct aggregation in ``_restricted``
    active = np.zeros(len(full.obligor_rows), dtype=bool)
    plan = rng.integers(0, full.R + 1, full.n)
    for step in range(6):
        if step == 3:
            plan = rng.integers(0, full.R + 1, full.n)  # far from the reference: summed afresh
        moved = rng.choice(full.n, 60, replace=False)
        plan[moved] = rng.integers(0, full.R + 1, 60)
        active[rng.choice(len(active), 3, replace=False)] = True
        inst = restrict_obligor(full, np.flatnonzero(active))
        route = plan.copy()
        route[rng.choice(full.n, 40, replace=False)] = -1
        want = _fixed_reference(inst, cls, route)
        if table:
            rep, on, s = sums.fixed(route, np.flatnonzero(route < 0), inst.obligor_slot)
            got = pd.DataFrame(s.T, columns=["P", "PL", *inst.fields, "count"])
            got.index = pd.MultiIndex.from_arrays([cls[rep], inst.obligor_slot[rep], on],
                                                  names=["cls", "slot", "route"])
        else:
            _, _, _, _, units, fixed, fk_n, _ = restricted(inst, route, sums, None, integer=True)
            rep = units.rep[:fk_n]
            got = pd.DataFrame({"P": units.P[:fk_n], "PL": units.PL[:fk_n],
                                **{k: units.PW[k][:fk_n] for k in inst.fields},
                                "count": units.count[:fk_n].astype(float)})
            got.index = pd.MultiIndex.from_arrays([cls[rep], inst.obligor_slot[rep], fixed[:fk_n]],
                                                  names=["cls", "slot", "route"])
        assert got.index.is_unique and len(got) == len(want)
        got = got.loc[want.index]
        assert np.array_equal(got["count"].to_numpy(), want["count"].to_numpy())
        for col in ["P", "PL", *inst.fields]:
            assert np.allclose(got[col], want[col], rtol=1e-9, atol=1e-6, equal_nan=True), col


def test_restricted_gives_the_same_problem_from_the_table_and_from_the_loans(day):
    cls, _, _ = loan_classes(day)
    rng = np.random.default_rng(8)
    route = rng.integers(0, day.R + 1, day.n)
    route[rng.choice(day.n, 30, replace=False)] = -1
    inst = restrict_obligor(day, np.arange(min(5, len(day.obligor_rows))))
    out = []
    for table in (True, False):
        sums = FixedSums(day, cls)
        sums.fits = table
        out.append(restricted(inst, route, sums, None, integer=True)[1])
    a, b = out
    assert a.A.shape == b.A.shape and a.n_cols == b.n_cols
    assert np.allclose(a.A.toarray(), b.A.toarray())
    assert np.allclose(a.c, b.c) and np.allclose(a.offset, b.offset)
    for x, y in ((a.row_lo, b.row_lo), (a.row_hi, b.row_hi)):
        # the empty assignment rows of the fixed units come in another order; the rest alike
        m = a.n_units
        assert np.allclose(x[m:], y[m:], rtol=1e-12, atol=1e-6)


def test_a_day_planned_with_the_fixed_sums_table_holds_every_limit(tmp_path):
    """The table path end to end on a generated day with obligor rows made active lazily: the
    written plan passes the independent verifier, and its gap is against a valid bound."""
    loans = make_loans(4000, seed=5)
    terms = make_terms(4000, seed=5)
    for f in terms["funders"]:
        if f.get("obligor_limit"):
            f["obligor_limit"] = 2500.0  # tight: the whole-loan plans break rows, which join later
    portfolio, exposures = make_portfolio(terms, 5), make_exposures(loans, terms, 5)
    day = fa.load_day(loans, terms, portfolio, exposures)
    plan = fa.plan(day, fixed_table_loans=0, eager_obligor_rows=0)
    assert plan.stats["obligor_rows"] > 0  # rows joined after the classes were drawn
    direct = fa.plan(day, eager_obligor_rows=0)
    assert plan.lower_bound == pytest.approx(direct.lower_bound, rel=1e-9)  # (the LP is the same)
    assert plan.objective >= plan.lower_bound
    assert sorted(plan.allocations["loan_id"]) == sorted(loans["loan_id"])
    files = write_day(tmp_path / "in", loans, terms, portfolio, exposures)
    plan.write(tmp_path / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out",
                      files["portfolio"], files["exposures"])
    assert rep.ok, rep.lines()
    assert rep.objective == pytest.approx(plan.objective, rel=1e-9)


@pytest.mark.parametrize("table", [pytest.param(False, marks=pytest.mark.slow), True])
def test_big_split_bins_are_cut_into_chunks_and_the_plan_holds(tmp_path, table):
    """Coarse bins (one refinement) and a low ``max_split_loans``: the split bins' loans go
    through the chunk LPs before the split LP; the plan passes the verifier and is no better
    than the bound."""
    loans = make_loans(4000, seed=6)
    terms = make_terms(4000, seed=6)
    day = fa.load_day(loans, terms)
    plan = fa.plan(day, max_refinements=1, max_split_loans=40, free_unit_size=4,
                   fixed_table_loans=0 if table else 500_000)
    assert plan.stats.get("cuts", 0) >= 1
    assert plan.objective >= plan.lower_bound
    files = write_day(tmp_path / "in", loans, terms)
    plan.write(tmp_path / "out")
    rep = verify_plan(files["originations"], files["funders"], tmp_path / "out")
    assert rep.ok, rep.lines()
    assert rep.objective == pytest.approx(plan.objective, rel=1e-9)


def test_obligor_rows_ignore_borrowers_without_a_loan_today_and_loans_without_a_borrower():
    loans = make_loans(4000, seed=5)
    terms = make_terms(4000, seed=5)
    exposures = make_exposures(loans, terms, 5)
    bank = next(f["id"] for f in terms["funders"] if f.get("obligor_limit"))
    extra = pd.DataFrame([{**exposures.iloc[0].to_dict(), "borrower_id": "NOBODY", "funder_id": bank,
                           "outstanding": 1e12}])
    exposures = pd.concat([exposures, extra], ignore_index=True)
    loans.loc[7, "borrower_id"] = None
    inst = fa.load_day(loans, terms, None, exposures).instance
    assert "NOBODY" not in inst.obligor_borrowers
    assert inst.obligor_slot[7] == -1
    # the rows that remain are those of a groupby: borrowers whose eligible loans can exceed
    # the headroom left by their exposure
    assert all(o.borrower in set(loans["borrower_id"].dropna()) for o in inst.obligor_rows)
    ex = exposures.groupby(["borrower_id", "funder_id"])["outstanding"].sum()
    for o in inst.obligor_rows:
        assert o.existing == pytest.approx(ex.get((o.borrower, inst.route_ids[o.route]), 0.0))


@pytest.mark.parametrize("pieces", [1, 4])
def test_cuts_follow_the_lp_fractions_and_the_pieces(pieces):
    from types import SimpleNamespace

    from fundalloc.solve.split import _cut_at_fractions
    rng = np.random.default_rng(pieces)
    n, nb, R = 3000, 6, 3
    inst = SimpleNamespace(n=n, principal=rng.integers(1, 50, n).astype(float) * 100)
    bins = rng.integers(0, nb, n)
    T = rng.dirichlet(np.ones(R + 1), nb)
    P = np.bincount(bins, weights=inst.principal, minlength=nb)
    big = np.arange(nb) % 2 == 0
    chunk = _cut_at_fractions(inst, bins, big, T, P, pieces)
    assert (chunk[~big[bins]] == -1).all() and (chunk[big[bins]] >= 0).all()
    for b in np.flatnonzero(big):
        idx = np.flatnonzero(bins == b)
        order = idx[np.lexsort((np.arange(len(idx)), -inst.principal[idx]))]  # largest first, as laid
        hi = np.cumsum(inst.principal[order]) / P[b]
        lo = hi - inst.principal[order] / P[b]
        seg = np.cumsum(T[b])
        ids = chunk[order]
        # the chunks are runs along the line; a chunk of several loans lies inside one route's share
        # of the line and one of the pieces
        runs = np.r_[True, ids[1:] != ids[:-1]].sum()
        assert runs == len(np.unique(ids))
        piece = np.arange(len(order)) * pieces // len(order)
        for c in np.unique(ids):
            m = ids == c
            if m.sum() > 1:
                assert len(np.unique(piece[m])) == 1
                first, last = np.flatnonzero(m)[[0, -1]]
                assert np.searchsorted(seg, lo[first] + 1e-12, side="right") == \
                    np.searchsorted(seg, hi[last] - 1e-12, side="left")
        assert len(np.unique(ids)) >= min(pieces, len(order))


@pytest.mark.parametrize("status, stopped", [("time_limit", True), ("optimal", False), ("work_limit", False)])
def test_every_solver_call_goes_through_the_context_and_a_time_limited_answer_marks_the_plan(status, stopped):
    """Context.solve hands the solver what is left to the safety stop (at least a second) and, when
    the solver says the time limit cut it short, the solve is marked stopped (its plan then says
    ``time_limit``) whichever phase asked; a node or iteration budget never does."""
    from fundalloc.backends import Solution, SolveOptions, SolveStatus
    from fundalloc.solve.context import Clock, Context, Work

    seen = []

    class Fake:
        name = "fake"

        def solve(self, problem, options):
            seen.append(options)
            return Solution(SolveStatus(status), None, float("nan"), float("nan"), None, 0.0, "fake", "0")

    ctx = Context(None, None, fa.PlanOptions(), Fake(), Clock(time_limit=-1.0), Work(10))
    ctx.solve(None, SolveOptions(node_limit=7))
    assert seen[0].time_limit == 1.0 and seen[0].node_limit == 7
    assert ctx.clock.stopped is stopped
