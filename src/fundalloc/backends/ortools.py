"""OR-Tools through model_builder: GLOP for LPs, SCIP for MIPs, filled from the sparse matrix.

OR-Tools ships its own build of HiGHS, whose symbols clash with highspy's in one process (in
either import order). The solve therefore runs in a spawned worker process that never imports
highspy; the worker is started once and reused.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import scipy.sparse as sp

from ..formulation import Problem
from . import Solution, SolveOptions, SolveStatus

_POOL: ProcessPoolExecutor | None = None


def _pool() -> ProcessPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
        atexit.register(_POOL.shutdown)
    return _POOL


def _solve_in_worker(c, indptr, indices, data, shape, col_lo, col_hi, row_lo, row_hi, integer, offset,
                     time_limit, mip_rel_gap, node_limit) -> dict:
    import ortools
    from ortools.linear_solver.python import model_builder as mb

    model = mb.Model()
    A = sp.csr_matrix((data, indices, indptr), shape=shape)
    model.helper.fill_model_from_sparse_data(col_lo, col_hi, c, row_lo, row_hi, A)
    model.helper.set_objective_offset(float(offset))
    mip = bool(integer.any())
    for j in np.flatnonzero(integer):
        model.helper.set_var_integrality(int(j), True)
    solver = mb.Solver("SCIP" if mip else "GLOP")
    solver.set_time_limit_in_seconds(float(time_limit))
    if mip:
        params = [f"limits/gap = {mip_rel_gap}", "randomization/randomseedshift = 0"]
        if node_limit is not None:
            params.append(f"limits/nodes = {int(node_limit)}")
        solver.set_solver_specific_parameters("\n".join(params))
    st = solver.solve(model)
    out = {"status": st.name, "version": ortools.__version__, "engine": "SCIP" if mip else "GLOP"}
    if st in (mb.SolveStatus.OPTIMAL, mb.SolveStatus.FEASIBLE):
        out["x"] = solver.values(model.get_variables()).to_numpy()
        out["objective"] = float(solver.objective_value)
        out["bound"] = float(solver.best_objective_bound) if mip else out["objective"]
        if not mip:
            out["duals"] = solver.dual_values(model.get_linear_constraints()).to_numpy()
    return out


class OrtoolsBackend:
    name = "ortools"

    def version(self) -> str:
        from importlib.metadata import version
        return version("ortools")

    def solve(self, problem: Problem, options: SolveOptions) -> Solution:
        t0 = time.perf_counter()
        A = problem.A.tocsr()
        out = _pool().submit(
            _solve_in_worker, problem.c, A.indptr, A.indices, A.data, A.shape, problem.col_lo, problem.col_hi,
            problem.row_lo, problem.row_hi, problem.integer, problem.offset, options.time_limit,
            options.mip_rel_gap, options.node_limit).result()
        # a MIP stopped with a solution: by its node budget or by the time limit (the caller's clock
        # tells which)
        status = {"OPTIMAL": SolveStatus.OPTIMAL, "FEASIBLE": SolveStatus.WORK_LIMIT,
                  "INFEASIBLE": SolveStatus.INFEASIBLE, "UNBOUNDED": SolveStatus.UNBOUNDED}.get(
            out["status"], SolveStatus.ERROR)
        return Solution(status, out.get("x"), out.get("objective", float("nan")), out.get("bound", float("nan")),
                        out.get("duals"), time.perf_counter() - t0, self.name, out["version"],
                        {"model_status": out["status"], "engine": out["engine"]})
