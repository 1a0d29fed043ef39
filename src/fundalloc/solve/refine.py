"""Phase 2, refine: the LP over bins, refined until its optimum meets the loan-level bound.

A *bin* is a set of loans of one class; the bin LP gives all loans of a bin the same route
fractions, so it is a restriction of the loan-level LP and its optimum ``UB`` is achievable. Its
row duals give a valid lower bound ``LB`` on the loan-level LP by Lagrangian relaxation
(:mod:`.lagrange`). When every loan of every bin has the same reduced-cost argmin, ``LB = UB``;
otherwise each bin is split by its loans' argmin and the LP is solved again, warm from the parent
bins' basis. Bins only ever split, so ``UB`` never rises; the loop ends when ``(UB - LB) / UB`` is
below ``lp_tolerance``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends import Basis, Solution, SolveOptions, SolveStatus
from ..errors import SolverError
from ..formulation import Problem, Units, formulate
from .classes import combine_keys
from .context import Context
from .lagrange import Dual, arrange_duals, bin_bound


@dataclass(frozen=True, eq=False)
class Relaxation:
    """The final bin LP: its problem and solution, bins, duals and the best bound found."""

    prob: Problem
    sol: Solution
    bins: np.ndarray
    nb: int
    units: Units
    dual: Dual
    lower_bound: float
    stopped: bool  # the safety stop cut the refinement short (the last solved LP stands)

    @property
    def fractions(self) -> np.ndarray:
        """Bins x (R+1): each bin's route fractions (last column: unfunded)."""
        return unit_fractions(self.prob, self.sol.x)

    @property
    def objective(self) -> float:
        return float(self.sol.objective)


def unit_fractions(prob: Problem, x: np.ndarray) -> np.ndarray:
    """U x (R+1) matrix of route fractions per unit (last column: unfunded)."""
    R = len(prob.total_col) + 1  # a total per funder, and the platform
    T = np.zeros((prob.n_units, R + 1))
    T[prob.pair_unit, prob.pair_route] = x[:prob.n_pairs]
    T[:, R] = x[prob.n_pairs:prob.n_pairs + prob.n_units]
    return T


def inherit_basis(old: Problem, basis: Basis, x_old: np.ndarray, new: Problem, parent: np.ndarray,
                  R: int) -> Basis:
    """A starting basis for a refined LP: each child bin takes its parent's statuses.

    The first child of a parent keeps the parent's pattern; every other child gets exactly one
    basic column (the parent's largest route) so that the count of basics still matches the
    count of rows. Coupling rows and auxiliary columns keep their statuses (same order).
    """
    lookup = np.full((old.n_units, R), -1, dtype=np.int64)
    lookup[old.pair_unit, old.pair_route] = np.arange(old.n_pairs)
    U = new.n_units
    pu, pr = new.pair_unit, new.pair_route
    oc = lookup[parent[pu], pr]
    col = np.zeros(new.n_cols, dtype=np.int8)
    col[:new.n_pairs] = np.where(oc >= 0, basis.col[np.maximum(oc, 0)], 0)
    col[new.n_pairs:new.n_pairs + U] = basis.col[old.n_pairs + parent]
    col[new.n_pairs + U:] = basis.col[old.n_pairs + old.n_units:]
    row = np.empty(new.n_rows, dtype=np.int8)
    row[:U] = basis.row[parent]
    row[U:] = basis.row[old.n_units:]

    first = np.zeros(U, dtype=bool)
    _, idx = np.unique(parent, return_index=True)
    first[idx] = True
    extra = ~first
    if extra.any():
        T = np.zeros((old.n_units, R + 1))
        T[old.pair_unit, old.pair_route] = x_old[:old.n_pairs]
        T[:, R] = x_old[old.n_pairs:old.n_pairs + old.n_units]
        best = T[parent].argmax(axis=1)  # per new unit
        sel = extra[pu]
        col[:new.n_pairs][sel] = np.where(pr[sel] == best[pu[sel]], 1, 0)
        ucol = new.n_pairs + np.flatnonzero(extra)
        col[ucol] = np.where(best[extra] == R, 1, 0)
        row[:U][extra] = 0
    return Basis(col, row)


def refine(ctx: Context, cls: np.ndarray, cls_rep: np.ndarray, eligible: np.ndarray, bins: np.ndarray,
           nb: int, start_basis: Basis | None = None, start_shape: tuple[int, int] | None = None) -> Relaxation:
    """Solve the bin LP, split the bins whose loans disagree at its prices, and again.

    ``start_basis``: a basis for the first LP (a warm start's final basis), used when the LP has
    the shape ``start_shape``."""
    inst, opts = ctx.inst, ctx.options
    R, n = inst.R, inst.n
    best_lb = -np.inf
    prob = sol = None
    prev = None
    parent: np.ndarray | None = None
    it = 0
    stopped = False
    units = dual = None
    lp_gap = np.inf
    while True:
        it += 1
        new_units = Units.build(inst, bins, nb)
        new_prob = formulate(inst, new_units)
        ctx.clock.lap("formulate")
        basis = None
        if parent is not None and sol is not None and sol.basis is not None:
            basis = inherit_basis(prob, sol.basis, sol.x, new_prob, parent, R)
        elif sol is None and start_basis is not None and start_shape == (new_prob.n_rows, new_prob.n_cols):
            basis = start_basis
        new_sol = ctx.solve(new_prob, SolveOptions(basis=basis))
        ctx.clock.lap("lp")
        ctx.count("simplex_iterations", new_sol.detail.get("iterations", 0))
        solved = new_sol.x is not None and new_sol.row_dual is not None
        if sol is not None and (not solved or new_sol.status == SolveStatus.TIME_LIMIT):
            bins, nb = prev  # the safety stop mid-refinement: the last solved LP and its bound stand
            stopped = True
            ctx.clock.stopped = True  # (also when the LP failed without saying why)
            break
        if not solved:
            raise SolverError(f"the LP over {nb} bins ended with status {new_sol.status} "
                              f"({new_sol.detail.get('model_status')})")
        prob, sol, units = new_prob, new_sol, new_units
        if sol.status == SolveStatus.TIME_LIMIT:
            stopped = True
        dual = arrange_duals(inst, prob, sol.row_dual, cls_rep, eligible)
        lb, cheapest = bin_bound(inst, dual, cls, bins, nb)
        best_lb = max(best_lb, lb)
        ctx.clock.lap("bound")
        ub = sol.objective
        lp_gap = (ub - best_lb) / max(abs(ub), 1e-9)
        ctx.clock.say(f"refinement {it}: {nb:,} bins, LP {ub:,.2f}, bound {best_lb:,.2f}, gap {lp_gap:.2e}")
        if lp_gap <= opts.lp_gap_target or it >= opts.max_refinements or stopped or ctx.clock.expired():
            stopped = stopped or ctx.clock.stopped
            break
        new_bins, new_nb = combine_keys([bins, cheapest], n)
        if new_nb == nb:
            break
        parent = np.zeros(new_nb, dtype=np.int64)
        parent[new_bins] = bins
        prev = (bins, nb)
        bins, nb = new_bins, new_nb
    ctx.stats.update({"refinements": it, "bins": nb, "lp_gap": float(lp_gap), "lp_objective": float(sol.objective)})
    return Relaxation(prob, sol, bins, nb, units, dual, float(best_lb), stopped)
