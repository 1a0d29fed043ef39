"""Phase 5, repair: a plan that breaks a row is mended by moving the fewest loans to unfunded.

The search only ever offers plans that hold every row, so on a normal solve there is nothing to
do; the repair makes any plan feasible whatever it is given (a start the LP's rounding left over a
limit, an obligor row a lazy LP never saw). Unfunding a loan only lowers the rows of its own route
and the platform's, except a ratio row (a concentration segment, a weighted average) whose other
loans it also leaves; so each round mends one broken row per route, the platform's when it is the
only one left, and repeats: an empty route breaks nothing, so the loop ends.
"""

from __future__ import annotations

import numpy as np

from ..formulation import RowKind
from .rows import TOL, Rows

MIN_KIND = RowKind.DAILY_MIN_HARD.value  # a hard minimum: unfunding cannot mend it (see the fill)
from .state import PlanState


def _pick(weights: np.ndarray, need: float) -> np.ndarray:
    """Indices (into ``weights``) whose removal frees at least ``need``: the smallest single one
    that suffices, else the largest ones in turn."""
    pos = weights > 0
    if need <= 0 or not pos.any():
        return np.zeros(0, dtype=np.int64)
    idx = np.flatnonzero(pos)
    w = weights[idx]
    enough = w >= need
    if enough.any():
        return np.array([idx[enough][np.argmin(w[enough])]])
    order = idx[np.argsort(-w, kind="stable")]
    stop = int(np.searchsorted(np.cumsum(weights[order]), need)) + 1
    return order[:stop]


def repair(rows: Rows, route: np.ndarray, tol: float = TOL, max_rounds: int = 10_000) -> tuple[np.ndarray, int]:
    """Move loans to unfunded until no hard row is over its limit (a hard minimum aside: moving
    loans to unfunded only deepens its shortfall). Returns the plan and the number of loans moved."""
    inst = rows.inst
    R = inst.R
    state = PlanState(rows, route)
    moved = 0
    ob = rows.obligor
    for _ in range(max_rounds):
        over = np.flatnonzero((state.act - rows.rhs > tol) & (rows.kind != MIN_KIND))
        if not len(over):
            return state.route, moved
        chosen: list[int] = []
        seen: set[int] = set()
        for k, r, kind in zip(over, rows.route[over], rows.kind[over]):
            if kind == "platform_capacity":
                continue  # it spans every route: mended when it is the only row left
            if kind == "obligor":
                chosen.append(int(k))  # obligor rows share no loans: all at once
            elif int(r) not in seen:
                seen.add(int(r))
                chosen.append(int(k))
        if not chosen:
            chosen = [int(over[0])]
        for k in chosen:
            need = float(state.act[k] - rows.rhs[k]) + tol
            kind = rows.kind[k]
            if kind == "platform_capacity":
                loans = np.flatnonzero(state.route < R)
                w = np.append(inst.platform_share, 0.0)[state.route[loans]] * inst.principal[loans]
            elif int(rows.route[k]) < 0:  # a group's row: its members' loans (each lowers it)
                members = rows.members(k)
                loans = np.flatnonzero(np.isin(state.route, members))
                w = np.zeros(len(loans))
                for r in members:
                    on = state.route[loans] == r
                    local = int(np.searchsorted(rows.route_rows[r], k))
                    w[on] = rows.coef(int(r), loans[on])[local]
            elif kind == "obligor":
                j = k - ob.offset
                r = int(ob.route[j])
                loans = np.flatnonzero(state.route == r)
                loans = loans[ob.row_of(loans, r) == j]
                w = inst.share[r] * inst.principal[loans]
            else:
                r = int(rows.route[k])
                loans = np.flatnonzero(state.route == r)
                local = int(np.searchsorted(rows.route_rows[r], k))
                w = rows.coef(r, loans)[local] if len(loans) else np.zeros(0)
            pick = loans[_pick(w, need)]
            if not len(pick):  # nothing left that lowers it: empty the route
                pick = loans
            state.apply(pick, np.full(len(pick), R))
            moved += len(pick)
        state.refresh()
    raise RuntimeError("repair did not converge")  # pragma: no cover
