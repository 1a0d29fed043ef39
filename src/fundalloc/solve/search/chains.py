"""Ejection chains: a loan moves where it is cheaper, and the loans it pushes out move on.

When every route's limits bind, a loan that is unfunded (or on a dear route) can only take a
cheaper route if room is made there, and the loan that makes room must go somewhere that may be
full as well. A chain is such a sequence: the anchor moves onto route ``r1``; if that breaks one
of ``r1``'s rows, a loan of ``r1`` moves to its own next cheapest route (or to unfunded) to mend
it, which may break that route's rows, and so on, to a depth of a few moves. At each step the
loans tried are those whose leaving mends the broken rows best for the least reduced-cost loss,
singly or in size-matched pairs (so a step can end with almost no slack left, the subset-sum part
of the problem). A chain is made only when it holds every row and lowers the objective exactly;
partial chains are pruned when their funding-cost gain so far is not positive (the
Lin-Kernighan rule). The work charged is the number of candidate moves looked at, plus a fixed
:data:`~.exchange.CALL` per ejection list built and :data:`~.exchange.CHECK` per exact check.
"""

from __future__ import annotations

import numpy as np

from ..rows import TOL, loan_cost
from .exchange import CALL, CHECK, Exchange


class Chains:
    def __init__(self, ex: Exchange, depth: int = 3, breadth: int = 4):
        self.ex, self.depth, self.breadth = ex, depth, breadth
        self.st, self.rows, self.inst, self.pr = ex.state, ex.rows, ex.inst, ex.prices
        self.R = ex.R
        self._coef_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.version = 0

    def _on(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """The movable universe loans on route ``r`` and their coefficients on ``r``'s rows."""
        hit = self._coef_cache.get(r)
        if hit is None:
            U = self.pr.universe
            on = U[(self.st.route[U] == r) & self.ex.movable[U]]
            hit = (on, self.rows.coef(r, on))
            self._coef_cache[r] = hit
        return hit

    def invalidate(self, routes) -> None:
        for r in routes:
            self._coef_cache.pop(int(r), None)

    def _excess(self, loans: list[int], to: list[int]) -> tuple[np.ndarray, np.ndarray, float]:
        """Rows the moves leave over their limits (ids and excess) and their funding-cost gain."""
        st = self.st
        la, ta = np.array(loans, dtype=np.int64), np.array(to, dtype=np.int64)
        ids, change, _ = st._changes(la, ta)
        over = st.act[ids] + change - self.rows.rhs[ids]
        bad = (over > TOL / 10) & (change > 0)
        gain = float(loan_cost(self.inst, la, st.route[la]).sum() - loan_cost(self.inst, la, ta).sum())
        return ids[bad], over[bad], gain

    def _slack_after(self, chain: tuple[list[int], list[int]]) -> np.ndarray:
        """Every row's slack after the chain's moves (obligor rows as they stand)."""
        st = self.st
        slack = self.rows.rhs - st.act
        if chain[0]:
            cid, change, _ = st._changes(np.array(chain[0]), np.array(chain[1]))
            slack = slack.copy()
            slack[cid] -= change
        return slack

    def _fits(self, d: int, loans: np.ndarray, slack: np.ndarray) -> np.ndarray:
        """Whether each loan fits on route ``d`` (every row of ``d``) given ``slack``."""
        if d >= self.R or not len(loans):
            return np.ones(len(loans), dtype=bool)
        ids = self.rows.route_rows[d]
        if not len(ids):
            return np.ones(len(loans), dtype=bool)
        return (self.rows.coef(d, loans) <= slack[ids][:, None] + TOL / 10).all(axis=0)

    def _ejections(self, r: int, bad_ids: np.ndarray, bad_over: np.ndarray, chain: tuple[list[int], list[int]]):
        """Moves of loans off route ``r`` that mend its broken rows, best first: (loans, dests, loss).

        A loan may go to its two next cheapest routes, to unfunded, or to a route an earlier move of
        the chain left; a destination with room for it closes the chain, and such moves rank first."""
        rows, pr, R = self.rows, self.pr, self.R
        on, coef = self._on(r)
        if not len(on):
            return []
        rr = rows.route_rows[r]
        local = np.searchsorted(rr, bad_ids)
        valid = (local < len(rr)) & (rr[np.minimum(local, len(rr) - 1)] == bad_ids)
        if not valid.any():
            return []
        local, need = local[valid], bad_over[valid]
        C = coef[local]  # broken rows x loans on r: what each loan's leaving frees
        used = set(chain[0])
        keep = np.array([i not in used for i in on.tolist()], dtype=bool)
        self.ex.ctx.work.charge("chains", CALL + C.size)
        # the loans whose leaving mends every broken row, and size-matched pairs on the first one
        groups: list[list[int]] = []
        frees = np.flatnonzero((C >= need[:, None] - TOL / 10).all(axis=0) & keep)
        if len(frees):
            over_by = (C[:, frees] - need[:, None]).max(axis=0)
            groups += [[int(j)] for j in frees[np.argsort(over_by, kind="stable")][:2 * self.breadth]]
        pos = np.flatnonzero((C[0] > 0) & keep)
        if 2 <= len(pos) <= 4000:
            small = pos[np.argsort(C[0][pos], kind="stable")]
            v = C[0][small]
            # pairs whose sum just covers the need: for each loan, the smallest partner that suffices
            partner = np.searchsorted(v, need[0] - v - TOL / 10)
            ok = (partner < len(v)) & (partner != np.arange(len(v)))
            idx = np.flatnonzero(ok)
            waste = v[idx] + v[partner[idx]] - need[0]
            for t in idx[np.argsort(waste, kind="stable")][:2 * self.breadth]:
                groups.append([int(small[t]), int(small[partner[t]])])
        if not groups:
            return []
        # each candidate loan's destinations: its next cheapest routes, unfunded, the routes the
        # chain left; whether it fits there after the chain, and what the move loses
        vacated = sorted({int(self.st.route[x]) for x in chain[0]} - {r})
        members = np.unique(np.array([j for g in groups for j in g], dtype=np.int64))
        alt = self.ex.alt[pr.position[on[members]]]
        opts = [alt[:, c] for c in range(alt.shape[1])] + [np.full(len(members), R)] + \
            [np.full(len(members), v) for v in vacated]
        slack = self._slack_after(chain)
        loans_m = on[members]
        best = {}
        for d_col in opts:
            for d in np.unique(d_col).tolist():
                sel = np.flatnonzero((d_col == d) & (d != r))
                if not len(sel):
                    continue
                li = loans_m[sel]
                ok = np.ones(len(sel), dtype=bool) if d >= R else self.inst.elig[li, d]
                lo = pr.loss(li, np.full(len(li), r), np.full(len(li), d))
                ok &= np.isfinite(lo)
                fit = self._fits(d, li, slack)
                for t in np.flatnonzero(ok):
                    key = (not bool(fit[t]), float(lo[t]))
                    m = int(members[sel[t]])
                    if m not in best or key < best[m][0]:
                        best[m] = (key, int(d))
        out = []
        for g in groups:
            if any(j not in best for j in g):
                continue
            loss = sum(best[j][0][1] for j in g)
            closes = all(not best[j][0][0] for j in g)
            out.append((on[g].tolist(), [best[j][1] for j in g], float(loss), closes))
        out.sort(key=lambda x: (not x[3], x[2]))
        return [(a, b, c) for a, b, c, _ in out]

    def _price_of(self, r: int, row: int) -> float:
        return float(self.pr.price[row])

    def from_anchor(self, i: int, r1: int):
        """The best chain starting with loan ``i`` moving onto ``r1`` (moves, dests, trial) or None."""
        best = None
        stack = [([i], [r1], 0)]
        R = self.R
        while stack:
            loans, to, d = stack.pop()
            bad_ids, bad_over, gain = self._excess(loans, to)
            if gain <= 1e-9:
                continue  # the Lin-Kernighan rule: a chain must pay for itself as it goes
            if not len(bad_ids):
                self.ex.ctx.work.charge("chains", CHECK)
                trial = self.st.try_moves(np.array(loans), np.array(to))
                if trial.feasible and trial.delta_objective < -1e-9 and (best is None or trial.delta_objective < best[2].delta_objective):
                    best = (np.array(loans), np.array(to), trial)
                continue
            if d >= self.depth:
                continue
            last = to[-1]
            if last >= R:
                continue
            # mend the route the last move filled (a platform-only row: the platform route's loans)
            r = last
            mine = [k for k in bad_ids.tolist() if self.rows.route[k] == r or k in self.rows.route_rows[r]]
            if not mine:
                continue
            sel = np.isin(bad_ids, mine)
            for more, dests, _ in self._ejections(r, bad_ids[sel], bad_over[sel], (loans, to))[:self.breadth]:
                stack.append((loans + more, to + dests, d + 1))
        return best

    def anchors(self, limit: int) -> list[tuple[int, int]]:
        """(loan, route) pairs worth starting a chain from: unfunded loans onto the routes where
        they cost least (exactly: any funded route beats the penalty) and onto their cheapest at
        the LP prices, and the loans whose reduced-cost loss is largest onto their cheapest route;
        the largest gains first."""
        st, pr, R, inst = self.st, self.pr, self.R, self.inst
        U = pr.universe
        pos = np.arange(len(U))
        on = st.route[U]
        movable = self.ex.movable[U]
        loss = pr.rc[pos, on] - pr.rc.min(axis=1)
        loss[~movable] = 0.0
        cand: list[tuple[float, int, int]] = []
        for j in np.argsort(-loss, kind="stable")[:limit]:
            if loss[j] <= 1e-9:
                break
            for r in np.argsort(pr.rc[j], kind="stable")[:2]:
                r = int(r)
                if r != on[j] and r < R and pr.rc[j, r] < pr.rc[j, on[j]] - 1e-9:
                    cand.append((-float(loss[j]), int(U[j]), r))
        unf = np.flatnonzero((on == R) & movable & np.isfinite(pr.rc[:, :R]).any(axis=1))
        if len(unf):
            loans = U[unf]
            unit = inst.unit_cost(loans)
            unit = np.where(inst.elig[loans], unit, np.inf)
            gain = inst.principal[loans] * (inst.penalty_of(loans) - unit.min(axis=1))
            for j in np.argsort(-gain, kind="stable")[:limit]:
                i = int(loans[j])
                for r in np.argsort(unit[j], kind="stable")[:2]:
                    if np.isfinite(unit[j, r]):
                        cand.append((-float(gain[j]), i, int(r)))
        cand.sort()
        seen, out = set(), []
        for _, i, r in cand:
            if (i, r) not in seen:
                seen.add((i, r))
                out.append((i, r))
        return out[:2 * limit]

    def run(self, max_chains: int, anchors_per_pass: int = 64) -> int:
        made = 0
        while made < max_chains and not self.ex.ctx.work.exhausted and not self.ex.ctx.clock.expired():
            found = None
            for i, r in self.anchors(anchors_per_pass):
                found = self.from_anchor(i, r)
                if found is not None:
                    break
            if found is None:
                break
            loans, to, trial = found
            frm = self.st.route[loans]
            self.st.apply(loans, to, trial)
            self.invalidate(set(frm.tolist()) | set(to.tolist()))
            made += 1
        self.ex.ctx.count("chains", made)
        return made
