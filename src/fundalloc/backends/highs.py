"""HiGHS through highspy: the whole model passed as one column-wise matrix."""

from __future__ import annotations

import time

import highspy
import numpy as np

from ..formulation import Problem
from . import Basis, Solution, SolveOptions, SolveStatus

_BASIS_STATUS = np.array([highspy.HighsBasisStatus(i) for i in range(5)], dtype=object)

_STATUS = {
    highspy.HighsModelStatus.kOptimal: SolveStatus.OPTIMAL,
    highspy.HighsModelStatus.kTimeLimit: SolveStatus.TIME_LIMIT,
    highspy.HighsModelStatus.kObjectiveTarget: SolveStatus.TARGET,
    highspy.HighsModelStatus.kIterationLimit: SolveStatus.TIME_LIMIT,
    highspy.HighsModelStatus.kSolutionLimit: SolveStatus.TIME_LIMIT,
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
            start.col_value = np.asarray(options.start, dtype=np.float64)
            start.value_valid = True
            h.setSolution(start)
        h.run()
        ms = h.getModelStatus()
        status = _STATUS.get(ms, SolveStatus.ERROR)
        info = h.getInfo()
        sol = h.getSolution()
        has_x = info.primal_solution_status == 2 or (mip and info.mip_gap < inf and sol.value_valid)
        x = np.asarray(sol.col_value) if has_x else None
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
                         "mip_gap": float(info.mip_gap) if mip else 0.0}, basis)
