"""All-or-nothing funders: ``min_if_used`` (nothing, or at least ``m_f``) and ``fixed_cost`` (charged
when a funder takes any loan). Each such funder's use ``y_f`` is a real integer decision.

Given the uses, the day is an ordinary one: a closed funder takes nothing, an open one has a hard
minimum ``m_f`` (see :mod:`.conflict`) and its fixed cost is a constant. So the solve searches use
patterns ``y`` with the ordinary solve inside:

1. the *base*: the LP with the uses relaxed (``0 <= y_f <= 1``, ``A_f >= m_f y_f``,
   ``A_f <= U_f y_f``, ``fixed_f y_f`` in the objective; :func:`~fundalloc.formulation.define_uses`).
   Its bound holds for every pattern: it is the plan's lower bound;
2. the first pattern rounds the base LP: a funder is open when the LP gives it at least half its
   minimum (any amount when it has none). Its whole-loan plan is the first incumbent;
3. then single flips of the incumbent's pattern, funder by funder in route order (a local search
   over patterns): each is first screened by its own LP bound (the LP alone, no whole-loan
   search), and solved only when that bound is below the incumbent less the gap tolerance; an
   improvement moves the search to the new pattern. Budgets: ``PlanOptions.use_patterns`` whole
   solves and as many screens, counts never the clock.

On a small day (at most ``exact_pairs`` eligible pairs and ``2^k <= use_patterns``) every pattern
is solved instead, each by the exact whole-loan MIP, so the best plan is proven optimal. A pattern
that no plan meets (an open funder's minimum cannot be met) is skipped. The plan's gap
is to the relaxed bound: honest, and wide when the relaxation is weak (a fixed cost over a large
cap, a minimum far below the cap).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np

from ..errors import InputError, Problem
from ..instance import HARD_FEE_FACTOR, Instance
from .conflict import InfeasibleTerms
from .context import Clock
from .options import PlanOptions
from .rows import RouteIndex

MAX_USE_ROUTES = 10  # funders with a use decision (2^10 patterns bounded; the budget caps the solves)


def _pattern_instance(inst: Instance, routes: np.ndarray, open_: tuple[bool | None, ...]) -> Instance:
    """The day under a use pattern: closed funders take nothing, open ones have a hard minimum (and
    their fixed cost is left to the caller, a constant); a funder marked None keeps its use
    decision, relaxed in the LP."""
    elig = np.array(inst.elig, copy=True)
    hard = inst.daily_min_hard.copy()
    use_min = inst.use_min.copy() if inst.use_min is not None else None
    fixed = inst.fixed_cost.copy() if inst.fixed_cost is not None else None
    for f, o in zip(routes, open_):
        if o is None:
            continue
        if o:
            hard[f] = max(hard[f], float(inst.use_min[f]) if inst.use_min is not None else 0.0)
        else:
            elig[:, f] = False
        for arr in (use_min, fixed):
            if arr is not None:
                arr[f] = 0.0
    elig.flags.writeable = False
    fee = inst.hard_fee
    if (hard > 0).any() and not fee:
        fee = HARD_FEE_FACTOR * float(max(inst.penalty, 1.0)) / float(inst.share.min())
    return replace(inst, elig=elig, daily_min_hard=hard, hard_fee=fee,
                   use_min=use_min if use_min is not None and (use_min > 0).any() else None,
                   fixed_cost=fixed if fixed is not None and (fixed > 0).any() else None)


def _branch_bound(inst: Instance, routes: np.ndarray, solve, options: PlanOptions, a_lp: np.ndarray) -> float:
    """A bound at least the relaxation's: for each funder, the lesser of the LPs with it closed and
    with it open (the others relaxed) bounds every pattern; the best of those over the funders. A
    funder whose relaxed LP already takes nothing, or (without a fixed cost) at least its minimum,
    is skipped: one side's LP is the relaxation itself."""
    best = -np.inf
    m = inst.use_min if inst.use_min is not None else np.zeros(inst.R)
    fc = inst.fixed_cost if inst.fixed_cost is not None else np.zeros(inst.R)
    for j, f in enumerate(routes):
        if a_lp[f] <= 1e-6 or (fc[f] <= 0 and a_lp[f] >= m[f] - 1e-6):
            continue
        sides = []
        for o in (False, True):
            p = tuple(o if i == j else None for i in range(len(routes)))
            fixed = float(inst.fixed_cost[f]) if o and inst.fixed_cost is not None else 0.0
            try:
                sides.append(solve(_pattern_instance(inst, routes, p), options, None, None,
                                   patterns=False, bound_only=True).lower_bound + fixed)
            except InfeasibleTerms:
                sides.append(np.inf)
        best = max(best, min(sides))
    return best


def _fixed(inst: Instance, routes: np.ndarray, open_: tuple[bool, ...]) -> float:
    if inst.fixed_cost is None:
        return 0.0
    return float(sum(inst.fixed_cost[f] for f, o in zip(routes, open_) if o))


def solve_with_uses(inst: Instance, options: PlanOptions, progress, warm, solve):
    """Plan a day whose funders' use is a decision (see the module's docstring)."""
    from .core import SolveStatus
    from .rows import objective

    routes = inst.use_routes
    if len(routes) > MAX_USE_ROUTES:
        raise InputError(Problem("funders", "min_if_used / fixed_cost",
                                 f"{len(routes)} funders carry a use decision; at most {MAX_USE_ROUTES} may"))
    say = progress or (lambda _m: None)
    clock = Clock(options.time_limit)  # the safety stop only, shared by every solve: no decision reads it
    stopped = False  # a solve the safety stop cut short: the plan says time_limit

    def left() -> PlanOptions:
        return replace(options, time_limit=max(clock.remaining(), 1.0))

    base = solve(inst, options, progress, warm, patterns=False)
    lower = base.lower_bound  # the relaxation of every pattern
    m = inst.use_min if inst.use_min is not None else np.zeros(inst.R)
    a_lp = base.totals_lp
    first = tuple(bool(a_lp[f] >= 0.5 * m[f]) if m[f] > 0 else bool(a_lp[f] > 1e-6) for f in routes)

    tol = options.gap_tolerance
    best_obj, best, pattern = np.inf, None, None
    tried: set[tuple[bool, ...]] = set()
    bounds: list[tuple[float, float]] = []  # the solved patterns' LP and whole-loan bounds (with fixed costs)
    solves = screens = 0

    def attempt(p: tuple[bool, ...], screen: bool, proofs: bool = False):
        """Solve pattern ``p`` (after its LP screen, when asked); True when it improved the incumbent.
        ``proofs``: None unless the pattern's plan is proven optimal for it (or it has no plan)."""
        nonlocal best_obj, best, pattern, solves, screens, stopped
        tried.add(p)
        sub = _pattern_instance(inst, routes, p)
        fixed = _fixed(inst, routes, p)
        try:
            if screen:
                screens += 1
                b = solve(sub, left(), None, None, bound_only=True).lower_bound + fixed
                if b >= best_obj - tol * abs(best_obj):
                    return False
            solves += 1
            say(f"use pattern {solves}: open {[inst.route_ids[f] for f, o in zip(routes, p) if o]}")
            s = solve(sub, left(), progress, None)
            stopped |= s.status == SolveStatus.TIME_LIMIT
        except InfeasibleTerms:
            return False  # no plan meets this pattern's minimums (a proof too: the pattern is empty)
        t = RouteIndex.of(inst, s.route).totals
        obj = objective(inst, s.route) + inst.fixed_charged(t[:inst.R - 1])
        better = obj < best_obj - 1e-9 * max(abs(best_obj), 1.0) if np.isfinite(best_obj) else True
        if better:
            best_obj, best, pattern = obj, s, p
        bounds.append((s.lower_bound + fixed, s.whole_loan_bound + fixed))
        if proofs and not s.proven:
            return None
        return better

    small = int(np.count_nonzero(inst.elig)) <= options.exact_pairs and 2 ** len(routes) <= options.use_patterns
    proven = False
    if small:  # every pattern, each by its exact whole-loan MIP: the best of them is proven optimal
        proven = True
        for p in sorted(itertools.product((False, True), repeat=len(routes)), key=lambda p: (p != first, p)):
            s_ok = attempt(p, screen=False, proofs=True)
            proven &= s_ok is not None
        improved = False
    else:
        attempt(first, screen=False)
        if best is None:  # the rounded pattern cannot be met: every funder with a use decision closed
            attempt(tuple(False for _ in routes), screen=False)
        improved = True
    while improved and solves < options.use_patterns and screens < options.use_patterns:
        improved = False
        for j in range(len(routes)):
            if best is not None and best_obj - lower <= tol * abs(lower):
                break
            p = tuple((not o) if i == j else o for i, o in enumerate(pattern or first))
            if p in tried or solves >= options.use_patterns or screens >= options.use_patterns:
                continue
            if attempt(p, screen=best is not None):
                improved = True
                break
    if best is None:
        raise InfeasibleTerms([Problem("funders", f"min_if_used:{inst.route_ids[f]}", "no use pattern found that "
                                       "meets every minimum") for f in routes],
                              "infeasible terms: no plan found that meets the all-or-nothing minimums")
    duals = best.lp_duals.copy()
    for f, o in zip(routes, pattern):  # an open funder's hard minimum row is its min_if_used row
        rid = inst.route_ids[f]
        if o and m[f] > 0 and not inst.daily_min_hard[f] > 0:
            duals.loc[duals["label"] == f"daily_min_hard:{rid}", ["kind", "label"]] = ["min_if_used", f"min_if_used:{rid}"]
    if not small and (best_obj - lower) > tol * abs(lower):  # a sharper bound before saying how far it is
        lower = max(lower, min(_branch_bound(inst, routes, solve, left(), a_lp), best_obj))
    whole = lower
    if small and bounds:  # every pattern solved (or shown empty): the least of their bounds holds for every plan
        lower = max(lower, min(b for b, _ in bounds))
        whole = max(lower, min(w for _, w in bounds))
    gap = (best_obj - lower) / abs(lower) if abs(lower) > 1e-12 else 0.0
    if stopped or base.status == SolveStatus.TIME_LIMIT:
        status = SolveStatus.TIME_LIMIT
    elif gap <= tol or proven:
        status = SolveStatus.OPTIMAL
    else:
        status = SolveStatus.FEASIBLE
    stats = {**best.stats, "use_patterns_solved": solves, "use_patterns_screened": screens,
             "use_open": [inst.route_ids[f] for f, o in zip(routes, pattern) if o]}
    return replace(best, lower_bound=float(min(lower, best_obj)),
                   whole_loan_bound=float(min(whole, best_obj)),
                   proven=bool(proven), lp_duals=duals, status=status, stats=stats)
