"""OR-Tools through model_builder: GLOP for LPs, SCIP for MIPs, filled from the sparse matrix."""

from __future__ import annotations

import time

import numpy as np

from ..formulation import Problem
from . import Solution, SolveOptions, SolveStatus


class OrtoolsBackend:
    name = "ortools"

    def version(self) -> str:
        import ortools
        return ortools.__version__

    def solve(self, problem: Problem, options: SolveOptions) -> Solution:
        from ortools.linear_solver.python import model_builder as mb

        t0 = time.perf_counter()
        model = mb.Model()
        model.helper.fill_model_from_sparse_data(
            problem.col_lo, problem.col_hi, problem.c, problem.row_lo, problem.row_hi,
            problem.A.tocsr(),
        )
        model.helper.set_objective_offset(float(problem.offset))
        mip = bool(problem.integer.any())
        for j in np.flatnonzero(problem.integer):
            model.helper.set_var_integrality(int(j), True)
        solver = mb.Solver("SCIP" if mip else "GLOP")
        solver.set_time_limit_in_seconds(float(options.time_limit))
        if mip:
            solver.set_solver_specific_parameters(f"limits/gap = {options.mip_rel_gap}\nrandomization/randomseedshift = 0")
        st = solver.solve(model)
        status = {
            mb.SolveStatus.OPTIMAL: SolveStatus.OPTIMAL,
            mb.SolveStatus.FEASIBLE: SolveStatus.TIME_LIMIT,
            mb.SolveStatus.INFEASIBLE: SolveStatus.INFEASIBLE,
            mb.SolveStatus.UNBOUNDED: SolveStatus.UNBOUNDED,
        }.get(st, SolveStatus.ERROR)
        x = duals = None
        obj = bound = float("nan")
        if st in (mb.SolveStatus.OPTIMAL, mb.SolveStatus.FEASIBLE):
            x = solver.values(model.get_variables()).to_numpy()
            obj = float(solver.objective_value)
            bound = float(solver.best_objective_bound) if mip else obj
            if not mip:
                duals = solver.dual_values(model.get_linear_constraints()).to_numpy()
        return Solution(status, x, obj, bound, duals, time.perf_counter() - t0, self.name, self.version(),
                        {"model_status": str(st), "engine": "SCIP" if mip else "GLOP"})
