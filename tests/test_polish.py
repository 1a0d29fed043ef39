"""The slack-filling local search: exact row bookkeeping, and moves that never break a limit
nor raise the cost."""

from __future__ import annotations

import numpy as np
import pytest

import fundalloc as fa
from fundalloc.evaluate import evaluate, repair, whole_objective
from fundalloc.polish import RowModel, polish
from generate import make_exposures, make_loans, make_portfolio, make_terms


@pytest.fixture(scope="module", params=[0.5, 0.8, 1.0])
def starved(request):
    """A generated day with the platform's capital cut to a fraction, and a plan of it."""
    loans, terms = make_loans(4000, seed=5), make_terms(4000, seed=5)
    day = fa.load_day(loans, terms, make_portfolio(terms, 5), make_exposures(loans, terms, 5))
    sc = fa.derive(day, platform={"daily_capacity": day.terms.platform.daily_capacity * request.param})
    return sc, fa.plan(sc, mip_time_limit=1)


def _hard_excess(inst, route):
    ev = evaluate(inst, route)
    return ev[ev["hard"]]["excess"].to_numpy(), ev


def test_row_model_matches_the_evaluation(starved):
    sc, p = starved
    inst = sc.instance
    rows = RowModel.build(inst)
    _, ev = _hard_excess(inst, p.route_index)
    ev = ev[ev["hard"] & (ev["kind"] != "obligor")]
    assert rows.m == len(ev)
    np.testing.assert_allclose(rows.activity(p.route_index) - rows.rhs, ev["excess"].to_numpy(),
                               rtol=0, atol=1e-6 * max(1.0, float(np.abs(rows.rhs).max())))


def test_polish_keeps_every_limit_and_never_raises_the_cost(starved):
    sc, p = starved
    inst = sc.instance
    before = p.route_index
    # start from a worse plan too: every tenth funded loan unfunded leaves slack to fill
    worse = before.copy()
    funded = np.flatnonzero(worse < inst.R)
    worse[funded[::10]] = inst.R
    worse, _, _ = repair(inst, worse)  # (unfunding may break a concentration or an average test)
    for start in (before, worse):
        excess0, _ = _hard_excess(inst, start)
        after, moved = polish(inst, start)
        excess1, _ = _hard_excess(inst, after)
        assert (excess0 <= 1e-6).all() and (excess1 <= 1e-6).all()
        assert whole_objective(inst, after) <= whole_objective(inst, start) + 1e-9
        changed = np.flatnonzero(after != start)
        assert len(changed) <= moved  # a loan may move again in a later pass
        on = after[changed]
        assert (on == inst.R).sum() + inst.elig[changed[on < inst.R], on[on < inst.R]].sum() == len(changed)
        assert (inst.obligor_slot[changed] < 0).all()  # obligor-constrained borrowers stay put
    after, moved = polish(inst, worse)
    assert moved > 0 and whole_objective(inst, after) < whole_objective(inst, worse)
