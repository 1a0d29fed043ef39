"""Problems over a few free loans with every other loan fixed where a plan puts it.

Every LP and MIP after the refinement frees a few loans and fixes the rest: the fixed loans are
aggregated by (class, route) and moved into the row bounds, so the problem is small whatever the
size of the day. :class:`FixedSums` keeps those sums up to date as the plan moves, and
:func:`place` is the one whole-loan MIP the search's sub-MIPs go through.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..backends import SolveOptions, SolveStatus
from ..formulation import Problem, Units, drop_fixed_columns, formulate
from ..instance import Instance
from .classes import combine_keys
from .context import Context
from .refine import unit_fractions


class FixedSums:
    """What the whole-loan MIPs fix: the loans' sums per (class, route) under a plan.

    Every whole-loan MIP fixes all but a few loans where a plan puts them, aggregated by (class,
    route). Summing every loan again for each MIP costs more than the MIP on a big day, while
    between two MIPs the plan changes for a few loans only. So the sums are kept for a reference
    plan and corrected by the loans that differ from it: fixed loans that moved update the
    reference, and the free loans are taken out of a copy.

    The loans of a borrower with an obligor row that the classes do not separate (a row made
    active after the classes were drawn) are kept *apart*: out of the table, aggregated among
    themselves by (class, obligor slot, route). The table has a column per (class, route); it is
    used on big days (``PlanOptions.fixed_table_loans``) when that is at most one per loan or
    small anyway (``fits``); otherwise :func:`restricted` sums the fixed loans directly.
    """

    def __init__(self, inst: Instance, cls: np.ndarray, table: bool = True):
        self.inst, self.cls = inst, cls
        n = len(cls)
        self.ncls = int(cls.max()) + 1 if n else 0
        self.stride = inst.R + 1
        self.fits = table and self.ncls * self.stride <= max(n, 1 << 16)
        self.plan: np.ndarray | None = None
        self.table: np.ndarray | None = None  # rows: P, PL, P x each field, count
        self.apart = np.zeros(0, dtype=np.int64)  # sorted loan indices
        self.is_apart = np.zeros(n, dtype=bool)
        self.rep: np.ndarray | None = None  # a loan of each class that is not apart

    def _weights(self) -> list[np.ndarray]:
        inst = self.inst
        return [inst.principal, inst.principal_life, *(inst.principal_fields[k] for k in inst.fields)]

    def _add(self, table: np.ndarray, idx: np.ndarray, route: np.ndarray, sign: float,
             apart_too: bool = False) -> None:
        """Add (sign +1) or take out (-1) loans ``idx`` on ``route``; loans apart are skipped
        unless ``apart_too``."""
        if not apart_too:
            inside = ~self.is_apart[idx]
            idx, route = idx[inside], route[inside]
        key = self.cls[idx] * self.stride + route
        for row, w in zip(table, self._weights()):
            np.add.at(row, key, sign * w[idx])
        np.add.at(table[-1], key, sign)

    def _keep_apart(self, apart: np.ndarray) -> None:
        if np.array_equal(apart, self.apart):
            return
        back = np.setdiff1d(self.apart, apart, assume_unique=True)  # rejoin the table
        out = np.setdiff1d(apart, self.apart, assume_unique=True)  # leave it
        if self.table is not None:
            self._add(self.table, back, self.plan[back], 1.0, apart_too=True)
            self._add(self.table, out, self.plan[out], -1.0, apart_too=True)
        self.is_apart[back] = False
        self.is_apart[out] = True
        self.apart = apart
        if self.rep is not None and len(out):
            # a class whose representative left: another loan of it that is not apart
            bad = np.unique(self.cls[self.rep[self.is_apart[self.rep]]])
            if len(bad):
                cand = np.flatnonzero(np.isin(self.cls, bad) & ~self.is_apart)
                self.rep[self.cls[cand[::-1]]] = cand[::-1]

    def fixed(self, route: np.ndarray, free_idx: np.ndarray, slot: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fixed units of ``route`` (-1: free) under obligor slots ``slot``: a representative
        loan and the route of each, and their sums (rows as in ``table``)."""
        n = len(route)
        weights = self._weights()
        self._keep_apart(np.flatnonzero(slot >= 0) if self.ncls else np.zeros(0, dtype=np.int64))
        if self.plan is not None and np.count_nonzero((route >= 0) & (route != self.plan)) > n // 8:
            self.plan = None  # a plan far from the reference: summing afresh is cheaper
        if self.plan is None:
            self.plan = np.where(route < 0, self.inst.R, route)  # the free loans: unfunded
            key = self.cls * self.stride + self.plan
            K = self.ncls * self.stride
            self.table = np.empty((len(weights) + 1, K))
            for row, w in zip(self.table, weights):
                row[:] = np.bincount(key, weights=w, minlength=K)
            self.table[-1] = np.bincount(key, minlength=K)
            self._add(self.table, self.apart, self.plan[self.apart], -1.0, apart_too=True)
        else:
            moved = np.flatnonzero((route >= 0) & (route != self.plan))
            if len(moved):
                self._add(self.table, moved, self.plan[moved], -1.0)
                self._add(self.table, moved, route[moved], 1.0)
                self.plan[moved] = route[moved]
        if self.rep is None:
            inside = np.flatnonzero(~self.is_apart)
            self.rep = np.zeros(self.ncls, dtype=np.int64)
            self.rep[self.cls[inside[::-1]]] = inside[::-1]
        sums = self.table.copy()
        if len(free_idx):
            self._add(sums, free_idx, self.plan[free_idx], -1.0)
        keys = np.flatnonzero(sums[-1] > 0.5)  # (counts are whole numbers, exact in float64)
        rep, on, s = self.rep[keys // self.stride], keys % self.stride, sums[:, keys]
        a = self.apart[route[self.apart] >= 0]  # the fixed loans apart
        if len(a):
            g, ng = combine_keys([self.cls[a], slot[a], route[a]], len(a))
            first = np.zeros(ng, dtype=np.int64)
            first[g[::-1]] = a[::-1]
            sa = np.array([np.bincount(g, weights=w[a], minlength=ng) for w in weights]
                          + [np.bincount(g, minlength=ng).astype(float)])
            rep, on, s = np.concatenate([rep, first]), np.concatenate([on, route[first]]), np.hstack([s, sa])
        return rep, on, s



def restricted(inst: Instance, route: np.ndarray, sums: FixedSums, loan_allowed: np.ndarray | None,
               integer: bool | np.ndarray, free_group: np.ndarray | None = None):
    """The model with free loans (route -1) over their allowed routes, one unit each (or one per
    ``free_group``: a dense id per free loan, in index order), and every other loan fixed where
    it is, aggregated by (class, route) and moved into the row bounds.

    ``loan_allowed``: the free units' allowed routes (one row each), or None for every route
    they are eligible for. ``integer``: whether the free units are whole-loan decisions (or, per
    free unit, which are). Returns the full problem, the small one HiGHS sees, the kept columns,
    the fixed values, the units, the index of the first free unit and the free loans.
    """
    R = inst.R
    n = inst.n
    cls = sums.cls
    free = route < 0
    free_idx = np.flatnonzero(free)
    group = np.arange(len(free_idx)) if free_group is None else free_group
    G = len(free_idx) if free_group is None else (int(group.max()) + 1 if len(group) else 0)
    if sums.fits:
        rep, fixed_route, s = sums.fixed(route, free_idx, inst.obligor_slot)
        fk_n = len(rep)
        first = np.zeros(G, dtype=np.int64)
        first[group[::-1]] = free_idx[::-1]

        def free_sums(w: np.ndarray) -> np.ndarray:
            return w[free_idx] if free_group is None else np.bincount(group, weights=w[free_idx], minlength=G)

        rep = np.concatenate([rep, first])
        P = np.concatenate([s[0], free_sums(inst.principal)])
        PL = np.concatenate([s[1], free_sums(inst.principal_life)])
        PW = {k: np.concatenate([s[2 + i], free_sums(inst.principal_fields[k])])
              for i, k in enumerate(inst.fields)}
        count = np.concatenate([np.rint(s[-1]).astype(np.int64), np.bincount(group, minlength=G)])
        units = Units(None, rep, P, PL, PW, count, np.zeros(len(P), dtype=bool))
    else:  # more (class, route) pairs than loans: aggregate the fixed loans directly
        fixed_mask = ~free
        fixed_of = route[fixed_mask]
        fk_codes, fk_n = combine_keys([cls[fixed_mask], inst.obligor_slot[fixed_mask], fixed_of],
                                      int(fixed_mask.sum()))
        unit = np.empty(n, dtype=np.int64)
        unit[fixed_mask] = fk_codes
        unit[free_idx] = fk_n + group
        units = Units.build(inst, unit, fk_n + G)
        fixed_route = np.zeros(fk_n, dtype=np.int64)
        fixed_route[fk_codes] = fixed_of
    U = fk_n + G
    is_int = np.zeros(U, dtype=bool)
    is_int[fk_n:] = integer
    units = replace(units, integer=is_int)
    fixed = np.full(U, -1, dtype=np.int64)
    fixed[:fk_n] = fixed_route
    allowed = np.ones((U, R), dtype=bool)
    allowed[fk_n:] = inst.elig[units.rep[fk_n:]] if loan_allowed is None else loan_allowed
    prob = formulate(inst, units, fixed=fixed, allowed=allowed)
    small, keep, xf = drop_fixed_columns(prob)
    return prob, small, keep, xf, units, fixed, fk_n, free_idx



@dataclass(frozen=True, eq=False)
class Placed:
    """What a whole-loan MIP over some free loans gave."""

    route: np.ndarray  # the plan: free loans where the MIP put them, a fractional one on its largest share
    objective: float  # the MIP's objective, inf when it found no plan
    bound: float  # its dual bound (a bound on the restricted problem only)
    status: SolveStatus
    nodes: int
    fractional: np.ndarray | None = None  # n bool: continuous free loans the solution splits


def place(ctx: Context, inst: Instance, route: np.ndarray, sums: FixedSums, allowed: np.ndarray | None,
          nodes: int, start_route: np.ndarray | None = None, target: float | None = None,
          rel_gap: float | None = None, binary: np.ndarray | None = None) -> Placed:
    """Whole-loan MIP: free loans (route -1) are binary over their allowed routes; every other
    loan keeps its route and is aggregated by (class, route), so the MIP stays small.

    ``nodes`` is the branch-and-bound budget (work, not time); ``start_route`` a whole-loan plan to
    start from (HiGHS drops it when it is not feasible); ``target`` stops the MIP at an incumbent
    that good. ``binary`` (n bool): only those free loans are whole-loan decisions, the others
    continuous (a relax-and-fix step). Charges the nodes used to the context's work budget.
    """
    R = inst.R
    free = route < 0
    integer = True if binary is None else binary[np.flatnonzero(free)]
    prob, small, keep, xf, units, unit_route, fk_n, free_idx = restricted(inst, route, sums, allowed, integer=integer)
    start = None
    if start_route is not None:
        unit_route = unit_route.copy()
        unit_route[fk_n:] = start_route[free_idx]
        start = assignment_vector(inst, prob, units, unit_route)[keep]
    gap = rel_gap if rel_gap is not None else ctx.options.gap_tolerance / 10
    sol = ctx.solve(small, SolveOptions(mip_rel_gap=gap, objective_target=target, start=start, node_limit=int(nodes)))
    used = int(sol.detail.get("nodes", 0))
    ctx.work.charge("mip_nodes", 1000 * max(used, 1))
    if sol.x is None:
        out = route.copy()
        out[free] = R if start_route is None else start_route[free]
        return Placed(out, np.inf, float(sol.bound), sol.status, used)
    full = xf.copy()
    full[keep] = sol.x
    T = unit_fractions(prob, full)[fk_n:]
    choice = T.argmax(axis=1)
    top = T[np.arange(len(free_idx)), choice]
    out = route.copy()
    if binary is None:
        out[free_idx] = np.where(top > 0.5, choice, R)
        return Placed(out, float(sol.objective), float(sol.bound), sol.status, used)
    out[free_idx] = choice
    fractional = np.zeros(inst.n, dtype=bool)
    fractional[free_idx] = top < 1 - 1e-9
    return Placed(out, float(sol.objective), float(sol.bound), sol.status, used, fractional)


def assignment_vector(inst: Instance, prob: Problem, units: Units, unit_route: np.ndarray) -> np.ndarray:
    """The column values of a whole-unit assignment (``R`` = unfunded), totals and shortfalls."""
    R = inst.R
    x = np.zeros(prob.n_cols)
    x[:prob.n_pairs] = (unit_route[prob.pair_unit] == prob.pair_route).astype(float)
    x[prob.n_pairs:prob.n_pairs + prob.n_units] = (unit_route == R).astype(float)
    F = R - 1
    on = unit_route < F
    totals = np.bincount(unit_route[on], weights=inst.share[unit_route[on]] * units.P[on], minlength=F)
    x[prob.total_col] = totals
    has = prob.shortfall_col >= 0
    x[prob.shortfall_col[has]] = np.maximum(inst.daily_min[:F][has] - totals[has], 0.0)
    hard = prob.hard_cols >= 0
    x[prob.hard_cols[hard]] = np.maximum(inst.daily_min_hard[:F][hard] - totals[hard], 0.0)
    if prob.count_col is not None:
        has_n = prob.count_col >= 0
        n_of = np.bincount(unit_route[on], weights=units.count[on].astype(float), minlength=F)
        x[prob.count_col[has_n]] = n_of[has_n]
    if prob.use_col is not None:
        used = prob.use_col >= 0
        x[prob.use_col[used]] = (totals[used] > 0).astype(float)
    if prob.funded_col >= 0:
        x[prob.funded_col] = float(units.P[unit_route < R].sum())
    return x


