"""The solve's orchestrator: aggregate -> refine -> split -> search -> repair -> report."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
import pandas as pd

from ..backends import get_backend
from ..errors import SolverError
from ..formulation import RowKind
from ..instance import Instance
from .classes import loan_classes, representatives
from .conflict import check_hard_minimums, check_whole_loans
from .uses import solve_with_uses
from .context import Clock, Context, Progress, Work
from .incumbent import Incumbent
from .lagrange import eligible_principal
from .obligor import LazyObligor, restrict_obligor
from .options import PlanOptions
from .policy import ColdPolicy, WarmPolicy, WarmStart, best_start_objective, warm_obligor_active
from .refine import Relaxation, refine
from .repair import repair
from .restricted import FixedSums
from .rows import RouteIndex, Rows, objective

HARD_FEE_CEILING = 1e12  # the exact penalty is raised (x1000) at most up to here
from .search import search
from .split import split


class SolveStatus(StrEnum):
    """What happened, in the plan's words."""

    OPTIMAL = "optimal"  # within the gap tolerance of the LP bound, or proven optimal among whole-loan plans
    FEASIBLE = "feasible"  # every limit held; the search used its work budget and ended above the tolerance
    TIME_LIMIT = "time_limit"  # every limit held; the clock (the safety stop) cut the solve short


@dataclass(frozen=True, eq=False)
class Solved:
    """What the engine hands to the plan builder."""

    route: np.ndarray  # n: route index per loan, R for unfunded
    lower_bound: float  # the LP bound (valid for every plan, whole-loan or not)
    whole_loan_bound: float  # a bound on whole-loan plans: the LP's, or an exact MIP's when higher
    proven: bool  # the plan is proven optimal among whole-loan plans
    lp_objective: float
    lp_duals: pd.DataFrame  # one row per LP row with kind/route/ref/label/dual/activity
    totals_lp: np.ndarray  # A_f from the LP
    status: SolveStatus
    solver: str
    solver_version: str
    timings: dict[str, float]
    stats: dict[str, float] = field(default_factory=dict)
    warm: WarmStart | None = None
    funded_lp: float = 0.0  # D from the LP: the day's funded principal (0 when no row needs it)
    pricing: tuple | None = field(default=None, repr=False)  # (Dual, classes): the LP's prices per loan
    counts_lp: np.ndarray | None = None  # N_f from the LP per funder route (0 where no share counts loans)


def solve_instance(inst: Instance, options: PlanOptions = PlanOptions(), progress: Progress | None = None,
                   warm: WarmStart | None = None, *, patterns: bool = True, bound_only: bool = False) -> Solved:
    """Plan a day: the LP over refined bins, a valid bound, whole loans.

    ``patterns`` False: funders' use decisions stay relaxed in the LP (the whole-loan plan then
    ignores them: :mod:`.uses` asks for this base). ``bound_only``: stop after the LP, with its
    bound (the plan: every loan unfunded)."""
    backend = get_backend(options.solver)
    if inst.n == 0:
        return _empty(inst, backend)
    if patterns and len(inst.use_routes):  # a funder's use is a decision of its own: a search over patterns
        return solve_with_uses(inst, options, progress, warm, solve_instance)
    q = options.initial_bins if options.initial_bins is not None else (2 if inst.n < 7_500_000 else 4)
    active = np.full(len(inst.obligor_rows), len(inst.obligor_rows) <= options.eager_obligor_rows)
    if warm is not None:
        active |= warm_obligor_active(warm, inst)
    lp_inst = inst if active.all() else restrict_obligor(inst, np.flatnonzero(active))
    ctx = Context(lp_inst, inst, options, backend, Clock(options.time_limit, progress), Work(options.work_limit))

    ctx.clock.say(f"aggregating {inst.n:,} loans")
    cls, ncls, continuous = loan_classes(lp_inst)
    cls_rep = representatives(cls, ncls)
    policy = WarmPolicy(q, warm, lp_inst, cls) if warm is not None else ColdPolicy(q)
    bins, nb = policy.bins(lp_inst, cls, continuous)
    ctx.stats.update({"classes": ncls, "simplex_iterations": 0})
    ctx.clock.lap("aggregate")

    relax = refine(ctx, cls, cls_rep, eligible_principal(lp_inst, cls, cls_rep), bins, nb, *policy.basis())
    if not check_hard_minimums(ctx, relax.prob, relax.sol.x):  # the penalty was too low for this day
        if inst.hard_fee > HARD_FEE_CEILING:
            raise SolverError("the hard minimums can be met, but the solve's LP kept paying their penalty")
        return solve_instance(replace(inst, hard_fee=inst.hard_fee * 1e3), options, progress, warm,
                              patterns=patterns, bound_only=bound_only)
    if bound_only:
        return _report(ctx, relax, np.full(inst.n, inst.R, dtype=np.int64), relax.lower_bound, False,
                       Incumbent(Rows.build(inst), relax.lower_bound), LazyObligor(inst, active, Rows.build(inst)), cls)
    sums = FixedSums(lp_inst, cls, inst.n >= options.fixed_table_loans)
    sp = split(ctx, relax, sums)

    rows = Rows.build(inst)
    lazy = LazyObligor(inst, active, rows)
    incumbent = Incumbent(rows, relax.lower_bound, ctx.clock.say)
    starts = policy.starts(inst, rows)
    settled = policy.settled(relax.objective, best_start_objective(inst, rows, starts))
    ctx.stats["settled_by_warm_start"] = int(settled)
    ctx.clock.say(f"whole loans: {int(sp.fractional.sum())} fractional loans")
    found = search(ctx, relax, sp, cls, sums, rows, lazy, incumbent, starts, settled)

    route, moved = repair(rows, found.route)
    ctx.stats["repaired_loans"] = moved
    check_whole_loans(inst, RouteIndex.of(inst, route).totals)
    ctx.clock.lap("repair")
    return _report(ctx, relax, route, found.whole_loan_bound, found.proven, incumbent, lazy, cls)


def _report(ctx: Context, relax: Relaxation, route: np.ndarray, whole_bound: float, proven: bool,
            incumbent: Incumbent, lazy: LazyObligor, cls: np.ndarray) -> Solved:
    opts, inst = ctx.options, ctx.full
    lp = relax.prob.rows.copy()
    lp["dual"] = relax.sol.row_dual
    lp["activity"] = relax.prob.A @ relax.sol.x
    lp = lp[lp["kind"] != RowKind.ASSIGN.value].reset_index(drop=True)
    obj = objective(inst, route)
    lb = relax.lower_bound
    gap = (obj - lb) / abs(lb) if abs(lb) > 1e-12 else (0.0 if abs(obj) <= 1e-9 else np.inf)
    if ctx.clock.stopped:
        status = SolveStatus.TIME_LIMIT
    elif gap <= opts.gap_tolerance or proven:
        status = SolveStatus.OPTIMAL
    else:
        status = SolveStatus.FEASIBLE
    ctx.stats["work"] = ctx.work.used
    ctx.stats.update({f"work_{k}": v for k, v in ctx.work.by.items()})
    ctx.stats["incumbent_source"] = incumbent.source
    ctx.stats["offers"] = [{"source": o.source, "objective": o.objective, "kept": o.accepted}
                           for o in incumbent.history]
    labels = tuple((inst.route_ids[o.route], o.borrower) for o, a in zip(inst.obligor_rows, lazy.active) if a)
    warm = WarmStart(inst.route_ids, cls, relax.bins, relax.sol.basis, (relax.prob.n_rows, relax.prob.n_cols),
                     route, labels)
    backend = ctx.backend
    return Solved(route=route, lower_bound=float(relax.lower_bound),
                  whole_loan_bound=float(max(whole_bound, relax.lower_bound)), proven=bool(proven),
                  lp_objective=relax.objective, lp_duals=lp, totals_lp=relax.sol.x[relax.prob.total_col],
                  status=status, solver=backend.name, solver_version=backend.version(),
                  timings=ctx.clock.timings, stats=ctx.stats, warm=warm,
                  funded_lp=float(relax.sol.x[relax.prob.funded_col]) if relax.prob.funded_col >= 0 else 0.0,
                  pricing=(relax.dual, cls), counts_lp=_counts(relax))


def _counts(relax: Relaxation) -> np.ndarray | None:
    cols = relax.prob.count_col
    if cols is None or not (cols >= 0).any():
        return None
    return np.where(cols >= 0, relax.sol.x[np.maximum(cols, 0)], 0.0)


def _empty(inst: Instance, backend) -> Solved:
    return Solved(route=np.zeros(0, dtype=np.int64), lower_bound=0.0, whole_loan_bound=0.0, proven=True,
                  lp_objective=0.0,
                  lp_duals=pd.DataFrame(columns=["kind", "route", "ref", "label", "dual", "activity"]),
                  totals_lp=np.zeros(inst.R - 1), status=SolveStatus.OPTIMAL, solver=backend.name,
                  solver_version=backend.version(), timings={}, stats={})
