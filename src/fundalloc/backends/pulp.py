"""PuLP with CBC. The problem goes to CBC as an MPS file that PuLP reads; PuLP itself holds one
Python object per variable, so this backend is for small problems and for cross-checking."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from ..formulation import Problem
from . import Solution, SolveOptions, SolveStatus
from .mps import to_mps


class PulpBackend:
    name = "pulp"

    def version(self) -> str:
        import pulp
        return f"{pulp.__version__} (CBC)"

    def solve(self, problem: Problem, options: SolveOptions) -> Solution:
        import pulp

        t0 = time.perf_counter()
        mip = bool(problem.integer.any())
        # PuLP 3.3 announces its 4.0 API on every call; the calls used here work in both
        with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
            warnings.simplefilter("ignore", DeprecationWarning)
            path = Path(tmp) / "model.mps"
            path.write_text(to_mps(problem))
            variables, prob = pulp.LpProblem.fromMPS(str(path), sense=pulp.LpMinimize)
            extra = [f"maxNodes {int(options.node_limit)}"] if mip and options.node_limit is not None else []
            solver = pulp.PULP_CBC_CMD(msg=bool(options.verbose), timeLimit=float(options.time_limit),
                                       gapRel=float(options.mip_rel_gap) if mip else None, threads=1,
                                       options=extra)
            code = prob.solve(solver)
            result = self._result(problem, prob, variables, code, mip)
        status, x, obj, bound, duals, _, detail = result
        return Solution(status, x, obj, bound, duals, time.perf_counter() - t0, self.name, self.version(), detail)

    def _result(self, problem: Problem, prob, variables, code: int, mip: bool):
        import pulp

        t0 = time.perf_counter()
        status = {
            pulp.LpStatusOptimal: SolveStatus.OPTIMAL,
            pulp.LpStatusInfeasible: SolveStatus.INFEASIBLE,
            pulp.LpStatusUnbounded: SolveStatus.UNBOUNDED,
            pulp.LpStatusNotSolved: SolveStatus.TIME_LIMIT,
        }.get(code, SolveStatus.ERROR)
        x = duals = None
        obj = bound = float("nan")
        feasible = status == SolveStatus.OPTIMAL or prob.sol_status == pulp.LpSolutionIntegerFeasible
        if feasible:
            x = np.array([(variables[f"x{j}"].varValue or 0.0) if f"x{j}" in variables else 0.0
                          for j in range(problem.n_cols)])
            obj = float(problem.c @ x + problem.offset)
            bound = obj if status == SolveStatus.OPTIMAL else float("nan")
            if status != SolveStatus.OPTIMAL:
                status = SolveStatus.WORK_LIMIT  # stopped by its node budget or the time limit
            if not mip:
                duals = np.array([(prob.constraints[f"r{i}"].pi or 0.0) if f"r{i}" in prob.constraints else 0.0
                                  for i in range(problem.n_rows)])
        return status, x, obj, bound, duals, time.perf_counter() - t0, {"model_status": pulp.LpStatus.get(code, str(code))}
