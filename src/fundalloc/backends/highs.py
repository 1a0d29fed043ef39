"""HiGHS through highspy: the whole model passed as one column-wise matrix."""

from __future__ import annotations

import time
from dataclasses import replace

import highspy
import numpy as np
import scipy.sparse as sp

from ..formulation import Problem
from . import Basis, Solution, SolveOptions, SolveStatus

_BASIS_STATUS = np.array([highspy.HighsBasisStatus(i) for i in range(5)], dtype=object)

_STATUS = {
    highspy.HighsModelStatus.kOptimal: SolveStatus.OPTIMAL,
    highspy.HighsModelStatus.kTimeLimit: SolveStatus.TIME_LIMIT,
    highspy.HighsModelStatus.kObjectiveTarget: SolveStatus.TARGET,
    highspy.HighsModelStatus.kIterationLimit: SolveStatus.WORK_LIMIT,
    highspy.HighsModelStatus.kSolutionLimit: SolveStatus.WORK_LIMIT,
    highspy.HighsModelStatus.kInterrupt: SolveStatus.TIME_LIMIT,
    highspy.HighsModelStatus.kInfeasible: SolveStatus.INFEASIBLE,
    highspy.HighsModelStatus.kUnbounded: SolveStatus.UNBOUNDED,
    highspy.HighsModelStatus.kUnboundedOrInfeasible: SolveStatus.INFEASIBLE,
}


class HighsBackend:
    name = "highs"

    def version(self) -> str:
        h = highspy.Highs()
        return f"{h.versionMajor()}.{h.versionMinor()}.{h.versionPatch()}"

    def solve(self, problem: Problem, options: SolveOptions) -> Solution:
        t0 = time.perf_counter()
        inf = highspy.kHighsInf
        h = highspy.Highs()
        h.setOptionValue("output_flag", bool(options.verbose))
        h.setOptionValue("random_seed", 0)
        h.setOptionValue("threads", int(options.threads))
        h.setOptionValue("time_limit", float(options.time_limit))
        mip = bool(problem.integer.any())
        if mip:
            h.setOptionValue("mip_rel_gap", float(options.mip_rel_gap))
            if options.objective_target is not None:
                h.setOptionValue("objective_target", float(options.objective_target))
            if options.node_limit is not None:
                h.setOptionValue("mip_max_nodes", int(max(options.node_limit, 1)))
        scale = totals = None
        if mip:
            # HiGHS 1.15.1's presolve finds a funder's total column implied integer when every
            # free loan's amount is whole, and with the total's bounds past the range of a 32-bit
            # integer its root reduced-cost fixing loops with no time check (seen at 5M and 10M
            # loans). A MIP needs no total column: each is substituted by its defining sum.
            problem, totals = _without_totals(problem)
            scale = _continuous_scale(problem)
            if scale is not None:
                problem = _scaled(problem, scale)
        lp = highspy.HighsLp()
        lp.num_col_ = problem.n_cols
        lp.num_row_ = problem.n_rows
        lp.offset_ = float(problem.offset)
        lp.col_cost_ = problem.c
        lp.col_lower_ = np.where(np.isneginf(problem.col_lo), -inf, problem.col_lo)
        lp.col_upper_ = np.where(np.isposinf(problem.col_hi), inf, problem.col_hi)
        lp.row_lower_ = np.where(np.isneginf(problem.row_lo), -inf, problem.row_lo)
        lp.row_upper_ = np.where(np.isposinf(problem.row_hi), inf, problem.row_hi)
        A = problem.A
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = A.indptr.astype(np.int32)
        lp.a_matrix_.index_ = A.indices.astype(np.int32)
        lp.a_matrix_.value_ = A.data
        if mip:
            lp.integrality_ = [highspy.HighsVarType.kInteger if b else highspy.HighsVarType.kContinuous
                               for b in problem.integer]
        h.passModel(lp)
        warm = False
        if options.basis is not None and not mip:
            b = highspy.HighsBasis()
            b.col_status = _BASIS_STATUS[options.basis.col].tolist()
            b.row_status = _BASIS_STATUS[options.basis.row].tolist()
            b.alien = True  # let HiGHS repair a basis whose count of basics is off
            b.valid = True
            warm = h.setBasis(b) == highspy.HighsStatus.kOk
        if mip and options.start is not None:
            start = highspy.HighsSolution()
            x0 = np.asarray(options.start, dtype=np.float64)
            if totals is not None:
                x0 = x0[totals.keep]
            start.col_value = x0 / (1.0 if scale is None else scale)
            start.value_valid = True
            h.setSolution(start)
        h.run()
        ms = h.getModelStatus()
        status = _STATUS.get(ms, SolveStatus.ERROR)
        info = h.getInfo()
        sol = h.getSolution()
        has_x = info.primal_solution_status == 2 or (mip and info.mip_gap < inf and sol.value_valid)
        x = np.asarray(sol.col_value) if has_x else None
        if x is not None and scale is not None:
            x = x * scale
        if x is not None and totals is not None:
            x = totals(x)
        duals = np.asarray(sol.row_dual) if (not mip and sol.dual_valid) else None
        obj = float(info.objective_function_value) if x is not None else float("nan")
        bound = float(info.mip_dual_bound) if mip else obj
        basis = None
        if not mip and info.basis_validity == 1:
            hb = h.getBasis()
            basis = Basis(np.array(list(map(int, hb.col_status)), dtype=np.int8),
                          np.array(list(map(int, hb.row_status)), dtype=np.int8))
        return Solution(status, x, obj, bound, duals, time.perf_counter() - t0, self.name, self.version(),
                        {"model_status": h.modelStatusToString(ms),
                         "iterations": int(info.simplex_iteration_count),
                         "warm_start": warm,
                         "mip_gap": float(info.mip_gap) if mip else 0.0,
                         "nodes": int(info.mip_node_count) if mip else 0}, basis)


def _continuous_scale(problem: Problem) -> np.ndarray | None:
    """Powers of two that bring a MIP's large continuous columns (funders' day totals, shortfalls)
    to values near 1000, or None when every column is small already.

    A total runs to billions on a big day. When every free loan's amount is a whole number,
    HiGHS's presolve finds the total column implied integer, and with bounds past the range of a
    32-bit integer its root reduced-cost fixing loops without end (seen with HiGHS 1.15.1 at 5M
    loans). Scaled, the column is neither integral nor large. A column's size is taken from the
    rows it is in: ``|row bound / coefficient|``, the largest over its rows and its own bounds.
    """
    cont = ~problem.integer
    A = problem.A
    if not cont.any():
        return None
    rb = np.maximum(np.where(np.isfinite(problem.row_lo), np.abs(problem.row_lo), 0.0),
                    np.where(np.isfinite(problem.row_hi), np.abs(problem.row_hi), 0.0))
    size = np.maximum(np.where(np.isfinite(problem.col_lo), np.abs(problem.col_lo), 0.0),
                      np.where(np.isfinite(problem.col_hi), np.abs(problem.col_hi), 0.0))
    cols = np.flatnonzero(cont)
    sub = A[:, cols].tocoo()
    coef = np.abs(sub.data)
    ok = coef > 0
    implied = np.zeros(len(cols))
    np.maximum.at(implied, sub.col[ok], rb[sub.row[ok]] / coef[ok])
    size[cols] = np.maximum(size[cols], implied)
    big = cont & (size > 1e6)
    if not big.any():
        return None
    scale = np.ones(problem.n_cols)
    scale[big] = np.exp2(np.ceil(np.log2(size[big] / 1e3)))
    return scale


class _Totals:
    """Puts the funder totals back into a solution of the model without them."""

    def __init__(self, n: int, keep: np.ndarray, cols: np.ndarray, rhs: np.ndarray, e: np.ndarray, D):
        self.n, self.keep, self.cols, self.rhs, self.e, self.D = n, keep, cols, rhs, e, D

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros(self.n)
        out[self.keep] = x
        out[self.cols] = (self.rhs - self.D @ x) / self.e
        return out


def _without_totals(problem: Problem) -> tuple[Problem, _Totals | None]:
    """The model with each funder's total column replaced by the sum that defines it.

    Row ``e_f A_f + D_f x = r_f`` gives ``A_f = (r_f - D_f x) / e_f``: every other row and the
    objective take that in place of ``A_f``, and the row itself stays as the bounds of ``A_f``
    on ``D_f x``. Returns the model unchanged (and None) when the totals are not in that form.
    """
    T = np.asarray(problem.total_col, dtype=np.int64)
    if len(T) == 0 or (T < 0).any():
        return problem, None
    d_rows = np.flatnonzero(problem.rows["kind"].to_numpy() == "total")
    if len(d_rows) != len(T) or not np.array_equal(problem.row_lo[d_rows], problem.row_hi[d_rows]):
        return problem, None
    A = problem.A.tocsc()
    E = A[d_rows][:, T].toarray()
    e = np.diag(E).copy()
    if (e == 0).any() or np.count_nonzero(E) != len(T):
        return problem, None
    keep = np.setdiff1d(np.arange(problem.n_cols), T)
    others = np.setdiff1d(np.arange(problem.n_rows), d_rows)
    rhs = problem.row_lo[d_rows]
    D = A[d_rows][:, keep].tocsr()
    G = A[others][:, T] @ sp.diags(1.0 / e)  # rows x totals
    A_new = sp.vstack([A[others][:, keep] - G @ D, D]).tocsc()
    shift = G @ rhs
    lo_t, hi_t = problem.col_lo[T], problem.col_hi[T]
    # e A = r - D x with A in [lo, hi]: D x in [r - e hi, r - e lo] (sides swap when e < 0)
    d_lo = np.where(e > 0, rhs - e * hi_t, rhs - e * lo_t)
    d_hi = np.where(e > 0, rhs - e * lo_t, rhs - e * hi_t)
    c_t = problem.c[T]
    small = replace(
        problem, A=A_new, c=problem.c[keep] - (D.T @ (c_t / e)), col_lo=problem.col_lo[keep],
        col_hi=problem.col_hi[keep], integer=problem.integer[keep],
        row_lo=np.concatenate([problem.row_lo[others] - shift, d_lo]),
        row_hi=np.concatenate([problem.row_hi[others] - shift, d_hi]),
        offset=problem.offset + float(c_t @ (rhs / e)))
    return small, _Totals(problem.n_cols, keep, T, rhs, e, D)


def _scaled(problem: Problem, scale: np.ndarray) -> Problem:
    """The same model in the column variables ``x / scale``."""
    A = problem.A @ sp.diags(scale)
    return replace(problem, A=sp.csc_matrix(A), c=problem.c * scale, col_lo=problem.col_lo / scale,
                   col_hi=problem.col_hi / scale)
