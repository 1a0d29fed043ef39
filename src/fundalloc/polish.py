"""Filling the slack whole loans leave: a local search on a whole-loan plan.

The LP fills its binding rows exactly; whole loans leave a little slack in each, and every unit
of slack in a binding row costs its shadow price. Closing that gap is a subset-sum problem, at
which branch and bound is slow (the LP relaxation is always fractional, and every subproblem
looks alike) but a greedy over many small loans is quick: a plan with slack ``s`` takes every
single-loan move that improves the objective and fits in ``s``, best first, and then every pair
of moves on one route (one loan in, one out, or two loans trading routes) whose net change fits.

Every hard row of the model is ``sum_i coef_r(i, route_i) <= rhs_r`` over whole loans, with a
coefficient that depends only on the loan and the route it is on (see :class:`RowModel`), so a
move's effect on every row is a short vector, and checking that a move fits is exact: the plan
after a move holds every limit the plan before held. Loans of borrowers with an obligor row stay
where they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .evaluate import ENGINE_TOL
from .instance import Instance


@dataclass(frozen=True, eq=False)
class RowModel:
    """The hard rows as ``coef(i, route) <= rhs`` (obligor rows aside): per route, the rows a
    loan there touches and a function of the loans giving their coefficients."""

    inst: Instance
    rhs: np.ndarray  # m
    route_rows: tuple[np.ndarray, ...]  # per route: its row ids (the platform row last)

    @staticmethod
    def build(inst: Instance) -> "RowModel":
        rhs: list[float] = []
        per_route: list[list[int]] = [[] for _ in range(inst.R)]

        def add(r: int, value: float) -> None:
            per_route[r].append(len(rhs))
            rhs.append(value)

        for r in range(inst.R - 1):
            if np.isfinite(inst.daily_max[r]):
                add(r, inst.daily_max[r])
            if np.isfinite(inst.headroom[r]):
                add(r, max(inst.headroom[r], 0.0))
        for fam in inst.conc:
            for s in fam.segments:
                add(fam.route, 0.0 if s.breached else s.rhs)
        for t in inst.wa:
            if t.min is not None:
                add(t.route, 0.0)
            if t.max is not None:
                add(t.route, 0.0)
        platform = len(rhs)
        if np.isfinite(inst.platform_capacity):
            rhs.append(inst.platform_capacity)
            for r in range(inst.R):
                per_route[r].append(platform)
        return RowModel(inst, np.array(rhs, dtype=float),
                        tuple(np.array(rows, dtype=np.int64) for rows in per_route))

    @property
    def m(self) -> int:
        return len(self.rhs)

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        """``len(route_rows[r]) x len(loans)``: the loans' coefficients on route ``r``'s rows."""
        inst = self.inst
        p = inst.principal[loans]
        a = inst.share[r] * p
        out: list[np.ndarray] = []
        if r < inst.R - 1:
            if np.isfinite(inst.daily_max[r]):
                out.append(a)
            if np.isfinite(inst.headroom[r]):
                out.append(a)
        for fam in inst.conc:
            if fam.route != r:
                continue
            mc = fam.member_code(loans)
            for s in fam.segments:
                code = 0 if fam.per_codes is None else s.code
                member = (mc == code) if code >= 0 else np.zeros(len(loans), dtype=bool)
                out.append(a * member if s.breached else a * (member - s.alpha))
        for t in inst.wa:
            if t.route != r:
                continue
            w = np.nan_to_num(inst.fields[t.field][loans])
            if t.min is not None:
                out.append(a * (t.min - w))
            if t.max is not None:
                out.append(a * (w - t.max))
        if np.isfinite(inst.platform_capacity):
            out.append(inst.platform_share[r] * p)
        return np.array(out, dtype=float).reshape(len(out), len(loans))

    def union(self, a: int, b: int) -> np.ndarray:
        """The rows a move from route ``a`` to route ``b`` touches (route ``R``: none)."""
        R = self.inst.R
        rows_a = self.route_rows[a] if a < R else np.zeros(0, dtype=np.int64)
        rows_b = self.route_rows[b] if b < R else np.zeros(0, dtype=np.int64)
        return np.union1d(rows_a, rows_b)

    def delta(self, a: int, b: int, loans: np.ndarray) -> np.ndarray:
        """``len(union(a, b)) x len(loans)``: how moving each loan from ``a`` to ``b`` changes
        the rows it touches."""
        R = self.inst.R
        u = self.union(a, b)
        out = np.zeros((len(u), len(loans)))
        if a < R and len(self.route_rows[a]):
            out[np.searchsorted(u, self.route_rows[a])] -= self.coef(a, loans)
        if b < R and len(self.route_rows[b]):
            out[np.searchsorted(u, self.route_rows[b])] += self.coef(b, loans)
        return out

    def activity(self, route: np.ndarray) -> np.ndarray:
        """Every row's left side on a whole-loan plan."""
        act = np.zeros(self.m)
        for r in range(self.inst.R):
            on = np.flatnonzero(route == r)
            if len(on) and len(self.route_rows[r]):
                np.add.at(act, self.route_rows[r], self.coef(r, on).sum(axis=1))
        return act


def _loan_cost(inst: Instance, loans: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Each loan's objective term on route ``r`` (``R``: unfunded, at the penalty)."""
    R = inst.R
    funded = r < R
    rr = np.where(funded, r, 0)
    unit = inst.k1[rr] * inst.life[loans] + inst.k0[rr]
    return inst.principal[loans] * np.where(funded, unit, inst.penalty)


@dataclass
class _Moves:
    loan: np.ndarray
    to: np.ndarray
    gain: np.ndarray  # objective decrease
    D: np.ndarray  # moves x tight rows: the change in each


def _candidates(inst: Instance, rows: RowModel, route: np.ndarray, slack: np.ndarray, movable: np.ndarray,
                soft: np.ndarray, per_pair: int, order_by_size: np.ndarray,
                spread_rank: int = 20) -> tuple[_Moves, np.ndarray, np.ndarray]:
    """Candidate moves: per (from, to) pair of routes, the ``per_pair // 2`` smallest loans that
    can make the move and a spread of larger ones, with each move's gain and its change in the
    tight rows (those two moves could fill); whether it fits every other row; the tight rows."""
    R = inst.R
    # the movable loans on each route (index R: unfunded), smallest first
    by_route = order_by_size[np.argsort(route[order_by_size], kind="stable")]
    by_route = by_route[movable[by_route]]
    bounds = np.searchsorted(route[by_route], np.arange(R + 2))
    picked = []
    for a in range(R + 1):
        if a < R and soft[a]:
            continue
        on = by_route[bounds[a]:bounds[a + 1]]
        if len(on) == 0:
            continue
        for b in range(R + 1):
            if b == a or (b < R and soft[b]):
                continue
            cand = on if b == R else on[inst.elig[on, b]]
            if len(cand) > per_pair:
                # the smallest loans, and a spread of sizes up to larger ones: a pair of moves
                # fills a slack with the difference of two loans
                half = per_pair // 2
                spread = cand[half:spread_rank * per_pair]
                pick = np.linspace(0, len(spread) - 1, per_pair - half).astype(np.int64)
                cand = np.concatenate([cand[:half], spread[np.unique(pick)]])
            if len(cand):
                picked.append((a, b, cand))
    # each route's row coefficients once, for every loan that may move onto it or off it
    pool: list[list[np.ndarray]] = [[] for _ in range(R)]
    for a, b, cand in picked:
        for r in (a, b):
            if r < R:
                pool[r].append(cand)
    pools = [np.unique(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in pool]
    coefs = [rows.coef(r, pools[r]) if len(pools[r]) and len(rows.route_rows[r]) else None
             for r in range(R)]
    found = []
    reach = np.zeros(rows.m)
    for a, b, cand in picked:
        gain = _loan_cost(inst, cand, np.full(len(cand), a)) - _loan_cost(inst, cand, np.full(len(cand), b))
        u = rows.union(a, b)
        delta = np.zeros((len(u), len(cand)))
        for r, sign in ((a, -1.0), (b, 1.0)):
            if r < R and coefs[r] is not None:
                delta[np.searchsorted(u, rows.route_rows[r])] += sign * coefs[r][:, np.searchsorted(pools[r], cand)]
        if len(u):
            np.maximum.at(reach, u, np.abs(delta).max(axis=1))
        found.append((cand, b, gain, u, delta))
    tight = np.flatnonzero(slack < 2 * reach)
    pos = np.full(rows.m, -1, dtype=np.int64)
    pos[tight] = np.arange(len(tight))
    loans, tos, gains, Ds, loose_ok = [], [], [], [], []
    for cand, b, gain, u, delta in found:
        D = np.zeros((len(cand), len(tight)))
        at = pos[u]
        D[:, at[at >= 0]] = delta[at >= 0].T
        loose_ok.append((delta[at < 0] <= slack[u[at < 0]][:, None] + ENGINE_TOL / 10).all(axis=0))
        loans.append(cand)
        tos.append(np.full(len(cand), b))
        gains.append(gain)
        Ds.append(D)
    if not loans:
        empty = np.zeros(0, dtype=np.int64)
        return _Moves(empty, empty, np.zeros(0), np.zeros((0, len(tight)))), np.zeros(0, dtype=bool), tight
    return (_Moves(np.concatenate(loans), np.concatenate(tos), np.concatenate(gains), np.concatenate(Ds)),
            np.concatenate(loose_ok), tight)


def polish(inst: Instance, route: np.ndarray, rows: RowModel | None = None, max_passes: int = 4,
           per_pair: int = 60, pair_heads: int = 300) -> tuple[np.ndarray, int]:
    """Improve a feasible whole-loan plan by moves that fit in its slack.

    A pass builds the candidate moves (per pair of routes, including unfunded, the
    ``per_pair`` smallest loans that can make it), then takes, best first, every single move
    that lowers the objective and fits in the slack as the moves before it left it; then, for
    the ``pair_heads`` best moves that do not fit alone, the best partner move that makes room
    for it (one loan in, another out or elsewhere). Rows with more slack than any two moves can
    take are checked once per move, the others (the tight rows) move by move. Returns the plan
    and the number of moves made. Routes with a daily minimum (a soft row with a fee) are left
    out: a move's gain there is not its cost alone.
    """
    R = inst.R
    rows = rows if rows is not None else RowModel.build(inst)
    route = route.copy()
    slack = rows.rhs - rows.activity(route)
    movable = inst.obligor_slot < 0
    soft = inst.daily_min[:R] > 0
    moved_total = 0
    tol = ENGINE_TOL / 10
    order_by_size = np.argsort(inst.principal, kind="stable")
    for _ in range(max_passes):
        mv, loose_ok, tight = _candidates(inst, rows, route, slack, movable, soft, per_pair, order_by_size)
        if len(mv.loan) == 0:
            break
        st = slack[tight].copy()
        done = np.zeros(inst.n, dtype=bool)
        moved = 0
        fits = loose_ok & (mv.D <= st + tol).all(axis=1) & (mv.gain > 1e-9)

        def apply(js) -> bool:
            """Make the moves ``js`` (of distinct loans) when together they fit every row."""
            nonlocal st
            full = np.zeros(rows.m)
            for j in js:
                a, b = int(route[mv.loan[j]]), int(mv.to[j])
                full[rows.union(a, b)] += rows.delta(a, b, mv.loan[j:j + 1])[:, 0]
            if (full > slack + tol).any():
                return False
            slack[:] -= full
            st = slack[tight].copy()
            for j in js:
                route[mv.loan[j]] = mv.to[j]
                done[mv.loan[j]] = True
            return True

        for j in np.flatnonzero(fits)[np.argsort(-mv.gain[fits], kind="stable")]:
            if done[mv.loan[j]] or (mv.D[j] > st + tol).any():
                continue
            moved += apply([j])
        # pairs: a move that does not fit alone, and a partner that makes room for it
        heads = np.flatnonzero(loose_ok & ~done[mv.loan] & (mv.gain > 1e-9))
        heads = heads[np.argsort(-mv.gain[heads], kind="stable")[:pair_heads]]
        partners = np.flatnonzero(loose_ok & ~done[mv.loan])
        Dp, gp, lp = mv.D[partners], mv.gain[partners], mv.loan[partners]
        for j in heads:
            i = mv.loan[j]
            if done[i]:
                continue
            room = st + tol - mv.D[j]
            # the partners that could pay for it, then those that make room
            over = np.flatnonzero(room < 0)  # the rows the move alone overfills: few
            cand = np.flatnonzero((gp > 1e-9 - mv.gain[j]) & (Dp[:, over] <= room[over]).all(axis=1))
            cand = cand[(Dp[cand] <= room).all(axis=1)]
            cand = cand[~done[lp[cand]] & (lp[cand] != i)]
            if len(cand) == 0:
                continue
            k = cand[int(np.argmax(gp[cand]))]
            moved += 2 * apply([j, partners[k]])
        moved_total += moved
        if moved == 0:
            break
    return route, moved_total
