"""Infeasible terms: which limits conflict, as an irreducible infeasible set (IIS).

Every limit of the model can be met by leaving loans unfunded, except a hard minimum
(``daily_min_hard``): it is the one term that can make a day infeasible. The models carry each
hard minimum as ``A_f + h_f >= daily_min_hard_f`` with the shortfall ``h_f`` priced at an exact
penalty (far above any dual the row can have), so every LP and MIP of the solve stays feasible
and an LP pays for ``h_f`` only when no plan meets the minimum. When the solve's LP does, this
module names the conflict:

1. an *elastic* LP gives every limit a violation column at cost 1 (every other cost 0) and
   minimises the total violation; the limits whose violation or dual is non-zero carry the
   conflict (Chinneck's sensitivity filter);
2. a *deletion filter* drops those limits one at a time (in label order, so the answer does not
   depend on the solver's path): a limit whose removal leaves the rest infeasible is left out for
   good; what remains is infeasible, and feasible without any one of its limits.

The LPs are over the solve's own units (its refined bins), which meet the same limits as the loans.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from ..backends import SolveStatus
from ..errors import InputError, Problem as InputProblem
from ..formulation import Problem, RowKind
from .context import Context

#: rows that define a column (totals, the day's funded principal) or route a unit: never a limit
_DEFINITIONS = {RowKind.ASSIGN.value, RowKind.TOTAL.value, RowKind.FUNDED.value, RowKind.DAILY_MIN.value,
                RowKind.COUNT_TOTAL.value}
TOL = 1e-6
MAX_DELETION_ROWS = 200  # rows the deletion filter tries one by one at most


class InfeasibleTerms(InputError):
    """No plan meets the terms: the error names an irreducible set of conflicting limits."""

    def __init__(self, problems: list[InputProblem], head: str):
        super().__init__(problems)
        self.head = head
        self.args = (head + ":\n  " + "\n  ".join(str(p) for p in self.problems),)

    def __str__(self) -> str:
        return self.args[0]


def hard_shortfall(prob: Problem, x: np.ndarray) -> np.ndarray:
    """Per funder route: what an LP solution leaves short of its hard minimum (0 where none)."""
    cols = prob.hard_cols
    out = np.zeros(len(cols))
    has = cols >= 0
    out[has] = x[cols[has]]
    return out


def _candidates(prob: Problem) -> np.ndarray:
    kind = prob.rows["kind"].to_numpy()
    return np.flatnonzero(~np.isin(kind, list(_DEFINITIONS)))


def _as_feasibility(prob: Problem) -> Problem:
    """The same rows with no costs, and no way short of a hard minimum."""
    hi = prob.col_hi.copy()
    hard = prob.hard_cols
    hi[hard[hard >= 0]] = 0.0
    return replace(prob, c=np.zeros(prob.n_cols), col_hi=hi, integer=np.zeros(prob.n_cols, dtype=bool))


def _feasible(ctx: Context, base: Problem, relaxed: np.ndarray) -> bool:
    """Whether ``base`` with the rows in ``relaxed`` (a mask) dropped has a solution."""
    lo = np.where(relaxed, -np.inf, base.row_lo)
    hi = np.where(relaxed, np.inf, base.row_hi)
    sol = ctx.solve(replace(base, row_lo=lo, row_hi=hi))
    if sol.status in (SolveStatus.ERROR, SolveStatus.TIME_LIMIT):
        raise _undecided(sol.status)
    return sol.status != SolveStatus.INFEASIBLE


def _undecided(status: SolveStatus) -> InputError:
    return InputError(InputProblem("funders", "daily_min_hard",
                                   f"no plan meets the hard minimums, and the search for the conflicting "
                                   f"limits stopped ({status})"))


def _elastic_support(ctx: Context, base: Problem, cand: np.ndarray) -> np.ndarray:
    """The candidate rows whose violation or dual is non-zero in the least-violation LP."""
    up = cand[np.isfinite(base.row_hi[cand])]  # lhs may rise above hi: a column -1
    dn = cand[np.isfinite(base.row_lo[cand])]  # lhs may fall below lo: a column +1
    k = len(up) + len(dn)
    E = sp.csc_matrix((np.concatenate([-np.ones(len(up)), np.ones(len(dn))]),
                       (np.concatenate([up, dn]), np.arange(k))), shape=(base.n_rows, k))
    prob = replace(base, A=sp.hstack([base.A, E], format="csc"), c=np.concatenate([base.c, np.ones(k)]),
                   col_lo=np.concatenate([base.col_lo, np.zeros(k)]),
                   col_hi=np.concatenate([base.col_hi, np.full(k, np.inf)]),
                   integer=np.zeros(base.n_cols + k, dtype=bool))
    sol = ctx.solve(prob)
    if sol.status != SolveStatus.OPTIMAL:
        raise _undecided(sol.status)
    viol = np.zeros(base.n_rows)
    np.add.at(viol, np.concatenate([up, dn]), sol.x[base.n_cols:])
    dual = np.abs(sol.row_dual) if sol.row_dual is not None else np.zeros(base.n_rows)
    return cand[(viol[cand] > TOL) | (dual[cand] > TOL)]


def irreducible_set(ctx: Context, prob: Problem) -> list[str]:
    """Labels of an irreducible infeasible set of ``prob``'s limits (hard minimums held hard)."""
    base = _as_feasibility(prob)
    cand = _candidates(base)
    labels = base.rows["label"].to_numpy()
    support = _elastic_support(ctx, base, cand)
    relaxed = np.zeros(base.n_rows, dtype=bool)
    relaxed[cand] = True
    relaxed[support] = False
    if _feasible(ctx, base, relaxed):  # the filter let one go: every limit is a candidate again
        support = cand
        relaxed[:] = False
    if len(support) > MAX_DELETION_ROWS:
        return sorted(str(labels[k]) for k in support)
    for k in sorted(support, key=lambda k: str(labels[k])):
        relaxed[k] = True
        if _feasible(ctx, base, relaxed):
            relaxed[k] = False  # needed: without it the rest can be met
    keep = [k for k in support if not relaxed[k]]
    return sorted(str(labels[k]) for k in keep)


def describe(inst, prob: Problem, labels: list[str]) -> list[InputProblem]:
    """One problem per conflicting limit: its label, its limit in the terms' units."""
    rows = prob.rows.reset_index(drop=True)
    where = {lab: i for i, lab in enumerate(rows["label"])}
    out = []
    for lab in labels:
        i = where[lab]
        lo, hi = prob.row_lo[i], prob.row_hi[i]
        kind = rows["kind"].iloc[i]
        if kind == RowKind.DAILY_MIN_HARD.value:
            r = int(rows["route"].iloc[i])
            supply = float(inst.share[r] * inst.principal[inst.elig[:, r]].sum())
            text = f"must receive at least {lo:,.2f} (its eligible loans give at most {supply:,.2f})"
        elif kind in (RowKind.DAILY_MAX.value, RowKind.FACILITY_HEADROOM.value, RowKind.PLATFORM_CAPACITY.value,
                      RowKind.GROUP_MAX.value):
            text = f"may take at most {hi:,.2f}"
        else:
            text = _WHAT.get(kind, "a limit on the loans the others need")
        out.append(InputProblem("funders", lab, text))
    return out


_WHAT = {
    RowKind.CONCENTRATION.value: "a segment's share of the funder's amount, at most its cap",
    RowKind.WA_MIN.value: "a weighted average over the funder's loans, at least its minimum",
    RowKind.WA_MAX.value: "a weighted average over the funder's loans, at most its maximum",
    RowKind.OBLIGOR.value: "a borrower's exposure at the funder, at most the obligor limit",
    RowKind.FUNDER_SHARE.value: "the funder's share of the day's funded principal, at most its cap",
    RowKind.GROUP_SHARE.value: "the group's share of the day's funded principal, at most its cap",
    RowKind.GROUP_CONCENTRATION.value: "a segment's share of the group's amount, at most its cap",
}


def check_hard_minimums(ctx: Context, prob: Problem, x: np.ndarray) -> bool:
    """After the LP: ``True`` when it meets every hard minimum. Otherwise raise
    :class:`InfeasibleTerms` naming the conflict, or return ``False`` when the minimums can be met
    after all (the penalty was not high enough for this day: the caller raises it and solves again)."""
    short = hard_shortfall(prob, x)
    F = len(short)
    need = ctx.inst.daily_min_hard[:F]
    if not (short > np.maximum(0.005, 1e-9 * need)).any():
        return True
    ctx.clock.say("the LP falls short of a hard minimum: checking whether any plan meets them")
    base = _as_feasibility(prob)
    if _feasible(ctx, base, np.zeros(base.n_rows, dtype=bool)):
        return False
    labels = irreducible_set(ctx, prob)
    raise InfeasibleTerms(describe(ctx.inst, prob, labels),
                          "infeasible terms: no plan meets these limits together, each loan funded "
                          "at most once (an irreducible infeasible set: drop any one and the rest can be met)")


def check_whole_loans(inst, route_totals: np.ndarray) -> None:
    """The LP meets every hard minimum by splitting loans, and no whole-loan plan found does."""
    F = inst.R - 1
    short = np.flatnonzero(inst.daily_min_hard[:F] - route_totals[:F] > 0.005)
    if not len(short):
        return
    problems = [InputProblem("funders", f"daily_min_hard:{inst.route_ids[r]}",
                             f"must receive at least {inst.daily_min_hard[r]:,.2f}; the best whole-loan plan "
                             f"found gives {route_totals[r]:,.2f} (only a plan that splits loans meets it)")
                for r in short]
    raise InfeasibleTerms(problems, "infeasible terms: no whole-loan plan found meets the hard minimums")
