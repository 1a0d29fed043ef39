"""Free-format MPS from a solver-neutral problem (for CBC through PuLP, and for debugging)."""

from __future__ import annotations

import numpy as np

from ..formulation import Problem


def _num(v: float) -> str:
    return repr(float(v))


def to_mps(problem: Problem, name: str = "fundalloc") -> str:
    """Rows ``r{i}``, columns ``x{j}``; integer columns inside MARKER blocks."""
    lo, hi = problem.row_lo, problem.row_hi
    lines = [f"NAME {name}", "ROWS", " N obj"]
    kinds = np.where(lo == hi, "E", np.where(np.isneginf(lo), "L", np.where(np.isposinf(hi), "G", "L")))
    lines += [f" {k} r{i}" for i, k in enumerate(kinds)]
    lines.append("COLUMNS")
    A = problem.A.tocsc()
    marker = False
    for j in range(problem.n_cols):
        if problem.integer[j] and not marker:
            lines.append(" M1 'MARKER' 'INTORG'")
            marker = True
        elif not problem.integer[j] and marker:
            lines.append(" M2 'MARKER' 'INTEND'")
            marker = False
        s, e = A.indptr[j], A.indptr[j + 1]
        entries = [f" x{j} obj {_num(problem.c[j])}"] if problem.c[j] != 0 or s == e else []
        entries += [f" x{j} r{i} {_num(v)}" for i, v in zip(A.indices[s:e], A.data[s:e])]
        lines += entries
    if marker:
        lines.append(" M2 'MARKER' 'INTEND'")
    lines.append("RHS")
    rhs = np.where(kinds == "G", lo, hi)
    for i in np.flatnonzero(np.isfinite(rhs) & (rhs != 0)):
        lines.append(f" rhs r{i} {_num(rhs[i])}")
    ranged = np.flatnonzero(np.isfinite(lo) & np.isfinite(hi) & (lo != hi))
    if len(ranged):
        lines.append("RANGES")
        lines += [f" rng r{i} {_num(hi[i] - lo[i])}" for i in ranged]
    lines.append("BOUNDS")
    for j in range(problem.n_cols):
        l, u = problem.col_lo[j], problem.col_hi[j]
        if l == u:
            lines.append(f" FX bnd x{j} {_num(l)}")
            continue
        if np.isneginf(l):
            lines.append(f" MI bnd x{j}")
        elif l != 0 or problem.integer[j]:
            lines.append(f" LO bnd x{j} {_num(l)}")
        if np.isfinite(u):
            lines.append(f" UP bnd x{j} {_num(u)}")
        elif problem.integer[j]:
            lines.append(f" PL bnd x{j}")
    lines.append("ENDATA")
    return "\n".join(lines) + "\n"
