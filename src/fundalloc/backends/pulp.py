"""PuLP with CBC. The matrix goes to CBC as an MPS file written in bulk by OR-Tools' model
builder and read by PuLP (PuLP itself holds one Python object per variable, so this backend is
meant for small problems and for cross-checking)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ..formulation import Problem
from . import Solution, SolveOptions, SolveStatus


class PulpBackend:
    name = "pulp"

    def version(self) -> str:
        import pulp
        return f"{pulp.__version__} (CBC)"

    def solve(self, problem: Problem, options: SolveOptions) -> Solution:
        import pulp
        from ortools.linear_solver.python import model_builder as mb

        t0 = time.perf_counter()
        model = mb.Model()
        model.helper.fill_model_from_sparse_data(
            problem.col_lo, problem.col_hi, problem.c, problem.row_lo, problem.row_hi,
            problem.A.tocsr(),
        )
        for j in range(problem.n_cols):
            model.helper.set_var_name(j, f"x{j}")
            if problem.integer[j]:
                model.helper.set_var_integrality(j, True)
        for i in range(problem.n_rows):
            model.helper.set_constraint_name(i, f"r{i}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.mps"
            path.write_text(model.export_to_mps_string())
            variables, prob = pulp.LpProblem.fromMPS(str(path), sense=pulp.LpMinimize)
            mip = bool(problem.integer.any())
            solver = pulp.PULP_CBC_CMD(msg=bool(options.verbose), timeLimit=float(options.time_limit),
                                       gapRel=float(options.mip_rel_gap) if mip else None, threads=1,
                                       options=["randomSeed 1", "randomCbcSeed 1"])
            code = prob.solve(solver)
        status = {
            pulp.LpStatusOptimal: SolveStatus.OPTIMAL,
            pulp.LpStatusInfeasible: SolveStatus.INFEASIBLE,
            pulp.LpStatusUnbounded: SolveStatus.UNBOUNDED,
            pulp.LpStatusNotSolved: SolveStatus.TIME_LIMIT,
        }.get(code, SolveStatus.ERROR)
        x = duals = None
        obj = bound = float("nan")
        if status == SolveStatus.OPTIMAL or (status == SolveStatus.TIME_LIMIT and prob.sol_status == pulp.LpSolutionIntegerFeasible):
            x = np.array([variables[f"x{j}"].varValue or 0.0 for j in range(problem.n_cols)])
            obj = float(problem.c @ x + problem.offset)
            bound = obj if status == SolveStatus.OPTIMAL else float("nan")
            if not mip:
                duals = np.array([prob.constraints[f"r{i}"].pi or 0.0 for i in range(problem.n_rows)])
        return Solution(status, x, obj, bound, duals, time.perf_counter() - t0, self.name, self.version(),
                        {"model_status": pulp.LpStatus.get(code, str(code))})
