"""The whole-loan search's parts: one encoding of the rows, exact move bookkeeping, and searches
that never break a limit nor raise the cost."""

from __future__ import annotations

import numpy as np
import pytest

import fundalloc as fa
from fundalloc.backends import get_backend
from fundalloc.evaluate import evaluate
from fundalloc.solve.classes import loan_classes
from fundalloc.solve.context import Clock, Context, Work
from fundalloc.solve.incumbent import Incumbent
from fundalloc.solve.options import PlanOptions
from fundalloc.solve.repair import repair
from fundalloc.solve.rows import Rows, objective
from fundalloc.solve.search.chains import Chains
from fundalloc.solve.search.exchange import Exchange
from fundalloc.solve.search.prices import Prices
from fundalloc.solve.state import PlanState
from generate import make_exposures, make_loans, make_portfolio, make_terms


@pytest.fixture(scope="module", params=[0.5, pytest.param(1.0, marks=pytest.mark.slow)])
def starved(request):
    """A generated day with the platform's capital cut to a fraction, a plan of it, and the LP
    prices the search reads (from a plan made with the same engine)."""
    loans, terms = make_loans(3000, seed=5), make_terms(3000, seed=5)
    day = fa.load_day(loans, terms, make_portfolio(terms, 5), make_exposures(loans, terms, 5))
    sc = fa.derive(day, platform={"daily_capacity": day.terms.platform.daily_capacity * request.param})
    return sc, fa.plan(sc)


def _context(inst) -> Context:
    return Context(inst, inst, PlanOptions(), get_backend("highs"), Clock(1e9), Work(100_000_000))


def _prices(sc, rows) -> Prices:
    """Prices with every row's dual at zero: reduced costs are the routes' own costs. (The search
    reads prices only to choose which moves to try; every move is judged exactly.)"""
    from fundalloc.solve.classes import representatives
    from fundalloc.solve.lagrange import Dual
    inst = sc.instance
    cls, ncls, _ = loan_classes(inst)
    base = np.broadcast_to(inst.k0, (ncls, inst.R)).copy()
    base[~inst.elig[representatives(cls, ncls)]] = np.inf
    dual = Dual(0.0, base, inst.k1.copy(), {k: np.zeros(inst.R) for k in inst.fields})
    return Prices.build(rows, dual, cls, None, np.zeros(0), np.arange(inst.n))


def test_rows_match_the_evaluation_row_by_row(starved):
    sc, p = starved
    inst = sc.instance
    rows = Rows.build(inst)
    ev = evaluate(inst, p.route_index, rows)
    hard = ev[ev["hard"]].set_index("constraint")
    act = rows.activity(p.route_index)
    assert rows.m == len(hard)
    got = dict(zip(rows.label, act - rows.rhs))
    for label, excess in hard["excess"].items():
        assert got[label] == pytest.approx(excess, abs=1e-6 * max(1.0, abs(excess)))


def test_a_compound_move_is_checked_exactly(starved):
    """try_moves gives the same feasibility and objective change as evaluating the plan afresh."""
    sc, p = starved
    inst = sc.instance
    rows = Rows.build(inst)
    rng = np.random.default_rng(3)
    st = PlanState(rows, p.route_index)
    for _ in range(40):
        loans = rng.choice(inst.n, int(rng.integers(1, 4)), replace=False)
        to = np.array([rng.choice(np.append(np.flatnonzero(inst.elig[i]), inst.R)) for i in loans])
        trial = st.try_moves(loans, to)
        after = st.route.copy()
        after[loans] = to
        assert trial.delta_objective == pytest.approx(objective(inst, after) - objective(inst, st.route),
                                                      abs=1e-6)
        broken_before = set(rows.broken(st.route).tolist())
        broken_after = set(rows.broken(after).tolist())
        assert trial.feasible == (broken_after <= broken_before)


def test_exchanges_and_chains_hold_every_limit_and_never_raise_the_cost(starved):
    sc, p = starved
    inst = sc.instance
    rows = Rows.build(inst)
    ctx = _context(inst)
    # a worse start: every tenth funded loan unfunded, then repaired (a ratio row may break)
    worse = p.route_index.copy()
    funded = np.flatnonzero(worse < inst.R)
    worse[funded[::10]] = inst.R
    worse, _ = repair(rows, worse)
    assert not len(rows.broken(worse))
    prices = _prices(sc, rows)
    for start in (p.route_index, worse):
        ctx = _context(inst)  # a budget of its own for each start
        st = PlanState(rows, start)
        ex = Exchange(ctx, st, prices, np.ones(inst.n, dtype=bool))
        ex.run(10 ** 6)
        Chains(ex).run(10 ** 6)
        st.refresh()
        assert not len(rows.broken(st.route))
        assert st.objective() <= objective(inst, start) + 1e-9
        assert st.objective() == pytest.approx(objective(inst, st.route), abs=1e-6)
        changed = np.flatnonzero(st.route != start)
        on = st.route[changed]
        assert ((on == inst.R) | inst.elig[changed, np.minimum(on, inst.R - 1)]).all()
    assert objective(inst, st.route) < objective(inst, worse)  # the degraded start was improved


def test_repair_mends_every_row_by_unfunding(starved):
    sc, p = starved
    inst = sc.instance
    rows = Rows.build(inst)
    rng = np.random.default_rng(7)
    bad = p.route_index.copy()
    for i in rng.choice(inst.n, 300, replace=False):
        el = np.flatnonzero(inst.elig[i])
        if len(el):
            bad[i] = el[rng.integers(len(el))]
    assert len(rows.broken(bad))
    fixed, moved = repair(rows, bad)
    assert not len(rows.broken(fixed))
    changed = fixed != bad
    assert moved == int(changed.sum()) and (fixed[changed] == inst.R).all()


def test_the_incumbent_takes_only_cheaper_plans_that_hold_every_row(starved):
    sc, p = starved
    inst = sc.instance
    rows = Rows.build(inst)
    inc = Incumbent(rows, p.lower_bound)
    assert inc.offer(p.route_index, "plan")
    assert not inc.offer(p.route_index.copy(), "same plan")  # not cheaper: the first one stays
    worse = p.route_index.copy()
    worse[np.flatnonzero(worse < inst.R)[0]] = inst.R
    assert not inc.offer(worse, "dearer")
    broken = p.route_index.copy()
    top = p.constraints.query("kind == 'daily_max' and binding").iloc[0]
    r = list(inst.route_ids).index(top["funder_id"])
    extra = np.flatnonzero(inst.elig[:, r] & (broken != r))[:50]
    broken[extra] = r
    assert not inc.offer(broken, "over a cap")
    assert inc.source == "plan" and inc.objective == pytest.approx(p.objective)
    assert [o.accepted for o in inc.history] == [True, False, False, False]
