"""Exchange search: fill the slack of binding rows with whole loans, one row at a time.

Whole loans leave a little slack in each binding row, and every unit of it costs the row's price.
Closing it is a subset-sum problem, at which branch and bound is slow (its relaxation is always
fractional, and every subproblem looks alike) but thousands of small, nearly interchangeable
loans make easy for moves chosen by their prices: the search takes the row whose slack costs most
and looks for the compound move that lowers the objective most among

- a single move that fills the row (a loan onto its route, or off it when its coefficient is
  negative, e.g. a loan outside a concentration segment; for the platform's capital, a loan onto
  a route that uses more of it);
- a pair: a fill too big for the slack with a counter-move that makes room (one loan in, another
  out or elsewhere), or two fills together; every pair's change is checked against every row it
  touches.

Candidates are the moves cheapest per unit of fill at the LP prices (reduced-cost loss divided
by the fill), plus the smallest fills (fine adjustment). Every move is judged exactly: its effect
on every hard row (obligor rows included) and its true change of objective (shortfall fees
included); only moves that lower the objective are made, so the search ends. A row with no
improving move is set aside until a move changes one of its route's rows. The work charged is the
number of (move, row) checks, plus a fixed :data:`CALL` for each candidate list built and each
exact check (their cost does not shrink with the candidates: a work unit is about a microsecond
of this machine's time, so the budget bounds the search's time as well as deciding it).
"""

from __future__ import annotations

import numpy as np

from ..context import Context

#: work units charged for each candidate set evaluated (a few milliseconds of array work each)
CALL = 5_000
#: work units charged for each compound move checked exactly against every row
CHECK = 500
from ..rows import TOL
from .prices import Prices
from ..state import PlanState


def smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest values, ascending, ties by index (a partial sort: a big
    day's candidate lists are long and only their heads are read)."""
    n = len(values)
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        kth = np.partition(values, k - 1)[k - 1]
        idx = np.flatnonzero(values <= kth)
    else:
        idx = np.arange(n)
    return idx[np.argsort(values[idx], kind="stable")][:k]


class Exchange:
    def __init__(self, ctx: Context, state: PlanState, prices: Prices, movable: np.ndarray,
                 fills: int = 128, counters: int = 256):
        self.ctx, self.state, self.prices = ctx, state, prices
        self.rows = state.rows
        self.inst = state.inst
        self.movable = movable & (prices.position >= 0)  # loans the search may move
        self.movable_universe = prices.universe[self.movable[prices.universe]]
        self.fills, self.counters = fills, counters
        inst = self.inst
        R = inst.R
        self.R = R
        self.platform_row = -1
        for k, kd in enumerate(self.rows.kind):
            if kd == "platform_capacity":
                self.platform_row = k
        # each universe loan's two cheapest alternatives by reduced cost, fixed for the search
        rc = prices.rc
        self.alt = np.argsort(rc, axis=1, kind="stable")[:, :3]
        # row -> (route, local index in that route's rows)
        self.local: dict[int, tuple[int, int]] = {}
        for r in range(R):
            for j, k in enumerate(self.rows.route_rows[r]):
                if int(self.rows.route[k]) == r:
                    self.local[int(k)] = (r, j)
        # a group's rows (several member routes): row -> its members
        self.members = {int(k): self.rows.members(int(k)) for k in np.flatnonzero(self.rows.route < 0)}

    # --- row coefficients ---------------------------------------------------------------------

    def _row_coef(self, k: int, loans: np.ndarray, routes: np.ndarray) -> np.ndarray:
        """Row ``k``'s coefficient of each loan on the given route (0 where the route misses it)."""
        inst = self.inst
        out = np.zeros(len(loans))
        if k == self.platform_row:
            ok = routes < self.R
            out[ok] = inst.platform_share[routes[ok]] * inst.principal[loans[ok]]
            return out
        # a row may touch routes besides its own (a share of the day's principal touches all)
        for r in np.unique(routes[routes < self.R]).tolist():
            ids = self.rows.route_rows[r]
            j = int(np.searchsorted(ids, k))
            if j < len(ids) and ids[j] == k:
                sel = np.flatnonzero(routes == r)
                out[sel] = self.rows.coef(r, loans[sel])[j]
        return out

    # --- candidates ---------------------------------------------------------------------------

    def _moves_for(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The moves that change row ``k``: loans onto its route (for the platform's capital: onto
        the platform's own route, the one that uses most of it), loans off it to their next
        cheapest routes or to unfunded, and (for the platform's capital) unfunded loans onto their
        cheapest routes. Each move's loan, destination, change of row ``k`` and priced loss."""
        st, pr, inst = self.state, self.prices, self.inst
        R = self.R
        U = self.movable_universe
        cur = st.route[U]
        if k in self.members:  # a group's row: onto the member route cheapest at the prices
            routes = self.members[k]
            inside = np.isin(cur, routes)
            onto = U[~inside & inst.elig[U][:, routes].any(axis=1)]
            onto_dest = routes[np.argmin(pr.rc[pr.position[onto]][:, routes], axis=1)]
            on = U[inside]
            alt = self.alt[self.prices.position[on]]
            out_of = ~np.isin(alt, routes)
            first = np.where(out_of[:, 0], alt[:, 0], np.where(out_of[:, 1], alt[:, 1], alt[:, 2]))
            first = np.where(np.isin(first, routes), R, first)
        else:
            r = self.local[k][0] if k != self.platform_row else inst.platform_route
            onto = U[(cur != r) & inst.elig[U, r]]
            onto_dest = np.full(len(onto), r)
            on = U[cur == r]
            alt = self.alt[self.prices.position[on]]
            first = np.where(alt[:, 0] != r, alt[:, 0], alt[:, 1])
        loans = [onto, on, on]
        dest = [onto_dest, first, np.full(len(on), R)]
        if k == self.platform_row:
            # every loan to its next cheapest routes (those that use more or less of the capital)
            loans.append(np.repeat(U, 2))
            dest.append(self.alt[pr.position[U], :2].ravel())
        loans = np.concatenate(loans)
        dest = np.concatenate(dest)
        frm = st.route[loans]
        keep = (dest != frm) & np.isfinite(pr.rc[pr.position[loans], dest])
        loans, dest, frm = loans[keep], dest[keep], frm[keep]
        key = loans * (R + 1) + dest  # one move per (loan, destination), in loan order
        _, first_of = np.unique(key, return_index=True)
        first_of.sort()
        loans, dest, frm = loans[first_of], dest[first_of], frm[first_of]
        dk = self._row_coef(k, loans, dest) - self._row_coef(k, loans, frm)
        loss = pr.loss(loans, frm, dest)
        return loans, dest, dk, loss

    def _fits_elsewhere(self, k: int, loans: np.ndarray, dest: np.ndarray) -> np.ndarray:
        """Whether each single move fits every row it touches but row ``k`` (obligor rows aside)."""
        st, rows = self.state, self.rows
        frm = st.route[loans]
        out = np.zeros(len(loans), dtype=bool)
        slack = st.slack
        key = frm * (self.R + 1) + dest
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for grp in np.split(order, bounds):
            if not len(grp):
                continue
            a, b = int(frm[grp[0]]), int(dest[grp[0]])
            u, d = rows.delta(a, b, loans[grp])
            ok = (d <= slack[u][:, None] + TOL / 10) | (u == k)[:, None]
            out[grp] = ok.all(axis=0)
        return out

    def _pick(self, k: int):
        """The fills and counter-moves considered for row ``k``: the fills cheapest per unit of fill
        at the LP prices; among the fills of most exact gain, those that fit every other row alone
        (moves in their own right, which the LP prices, valuing this row's slack too, rank low);
        the smallest fills; the cheapest counter-moves and the smallest."""
        loans, dest, dk, loss = self._moves_for(k)
        slack = self.state.slack[k]
        fill = np.flatnonzero(dk > 1e-12)
        counter = np.flatnonzero(dk < -1e-12)
        if not len(fill):
            return None
        from ..rows import loan_cost
        st = self.state
        q = self.fills // 4
        by_value = fill[smallest(loss[fill] / dk[fill], q)]
        gain = loan_cost(self.inst, loans[fill], st.route[loans[fill]]) - loan_cost(self.inst, loans[fill], dest[fill])
        top = fill[smallest(-gain, 8 * q)]
        elsewhere = top[self._fits_elsewhere(k, loans[top], dest[top])][:2 * q]
        self.ctx.work.charge("exchange", CALL + len(fill) + len(counter))
        small = fill[smallest(dk[fill], q // 2)]
        fitting = fill[dk[fill] <= slack + TOL]
        fits = fitting[smallest(-dk[fitting], q // 2)]
        chosen = np.unique(np.concatenate([elsewhere, by_value, small, fits]))
        cheap_counter = counter[smallest(loss[counter], self.counters // 2)]
        small_counter = counter[smallest(-dk[counter], self.counters // 2)]
        ctr = np.unique(np.concatenate([cheap_counter, small_counter]))
        return loans, dest, dk, loss, chosen, ctr

    # --- evaluation ---------------------------------------------------------------------------

    def _dense(self, loans: np.ndarray, dest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows touched by the moves (obligor rows aside) and a moves x rows matrix of changes."""
        st, rows = self.state, self.rows
        frm = st.route[loans]
        pairs = sorted(set(zip(frm.tolist(), dest.tolist())))
        touched = np.unique(np.concatenate(
            [np.zeros(0, dtype=np.int64)] + [rows.route_rows[x] for a, b in pairs for x in (a, b) if x < self.R]))
        D = np.zeros((len(loans), len(touched)))
        for a, b in pairs:
            sel = np.flatnonzero((frm == a) & (dest == b))
            u, d = rows.delta(a, b, loans[sel])
            if len(u):
                D[np.ix_(sel, np.searchsorted(touched, u))] = d.T
        return touched, D

    def _compound(self, cl: np.ndarray, cd: np.ndarray, nf: int, k: int):
        """Singles and pairs of the candidate moves ``cl -> cd`` (pairs: one of the first ``nf`` with
        any other) that hold every row, ranked by the objective's fall, best first."""
        st, inst = self.state, self.inst
        from ..rows import loan_cost
        touched, D = self._dense(cl, cd)
        slack = st.slack[touched]
        gain = loan_cost(inst, cl, st.route[cl]) - loan_cost(inst, cl, cd)
        # moves x rows built, pairs x rows checked, and the call itself
        self.ctx.work.charge("exchange", CALL + D.size + nf * len(cl) * max(1, len(touched)))
        options: list[tuple[float, tuple[int, ...]]] = []
        reach = np.abs(D).max(axis=0) if len(D) else np.zeros(len(touched))
        tight = np.flatnonzero(slack < 2 * reach + TOL)
        loose = np.setdiff1d(np.arange(len(touched)), tight)
        fits_loose = (D[:, loose] <= slack[loose] + TOL / 10).all(axis=1)
        Dt, st_t = D[:, tight], slack[tight]
        single = fits_loose & (Dt <= st_t + TOL / 10).all(axis=1)
        for j in np.flatnonzero(single & (gain > 1e-9)):
            options.append((-float(gain[j]), (int(j),)))
        if nf:
            tot = Dt[:nf, None, :] + Dt[None, :, :]
            ok = (tot <= st_t + TOL / 10).all(axis=2) & fits_loose[:nf, None] & fits_loose[None, :]
            ok &= cl[:nf, None] != cl[None, :]
            g = gain[:nf, None] + gain[None, :]
            ok &= g > 1e-9
            a, b = np.nonzero(ok)
            if len(a):
                for t in np.lexsort((b, a, -g[a, b]))[:64]:
                    options.append((-float(g[a[t], b[t]]), (int(a[t]), int(b[t]))))
        options.sort()
        return options

    def best_move(self, k: int):
        """The compound move that lowers the objective most while filling row ``k``, or None."""
        picked = self._pick(k)
        if picked is None:
            return None
        loans, dest, dk, loss, fill, ctr = picked
        cand = np.concatenate([fill, ctr])
        cl, cd = loans[cand], dest[cand]
        for _, js in self._compound(cl, cd, len(fill), k)[:32]:
            ml, md = cl[list(js)], cd[list(js)]
            self.ctx.work.charge("exchange", CHECK)
            trial = self.state.try_moves(ml, md)
            if trial.feasible and trial.delta_objective < -1e-9:
                return ml, md, trial
        return None

    def loss_move(self, i: int):
        """For a loan off its cheapest route: the move to a cheaper route that lowers the
        objective most, alone or with a counter-move that makes room there (a loan on that route
        to its own next cheapest route, or to unfunded)."""
        st, pr = self.state, self.prices
        R = self.R
        pos = pr.position[i]
        a = int(st.route[i])
        rc = pr.rc[pos]
        for b in np.argsort(rc, kind="stable")[:3]:
            b = int(b)
            if b == a or not rc[b] < rc[a] - 1e-9:
                continue
            cl, cd = [np.array([i])], [np.array([b])]
            if b < R:
                U = pr.universe
                on_b = U[(st.route[U] == b) & self.movable[U]]
                on_b = on_b[on_b != i]
                if len(on_b):
                    alt = self.alt[pr.position[on_b]]
                    first = np.where(alt[:, 0] != b, alt[:, 0], alt[:, 1])
                    for d in (first, np.full(len(on_b), R)):
                        ok = np.isfinite(pr.rc[pr.position[on_b], d])
                        loss = pr.loss(on_b[ok], np.full(int(ok.sum()), b), d[ok])
                        take = np.argsort(loss, kind="stable")[:self.counters // 2]
                        cl.append(on_b[ok][take])
                        cd.append(d[ok][take])
            cl_, cd_ = np.concatenate(cl), np.concatenate(cd)
            for _, js in self._compound(cl_, cd_, 1, -1)[:16]:
                ml, md = cl_[list(js)], cd_[list(js)]
                self.ctx.work.charge("exchange", CHECK)
                trial = st.try_moves(ml, md)
                if trial.feasible and trial.delta_objective < -1e-9:
                    return ml, md, trial
        return None

    def run(self, max_moves: int) -> int:
        """Improve the plan until no move of these kinds lowers the objective (or the budget ends):
        each step takes the costliest slack (a row's priced slack) or the costliest loss (a loan's
        reduced cost above its cheapest route's), whichever is larger."""
        st, rows, pr = self.state, self.rows, self.prices
        stuck = np.zeros(rows.m, dtype=bool)
        stuck_loan = np.zeros(len(pr.universe), dtype=bool)
        moved = 0
        eps = 1e-12 * max(abs(st.objective()), 1.0)
        best_rc = pr.rc.min(axis=1)
        span = np.arange(len(pr.universe))
        while moved < max_moves and not self.ctx.work.exhausted and not self.ctx.clock.expired():
            cost = pr.price * np.maximum(st.slack, 0.0)
            cost[stuck | (pr.price <= 0)] = 0.0
            k = int(np.argmax(cost)) if len(cost) else -1
            loss = pr.rc[span, st.route[pr.universe]] - best_rc
            loss[stuck_loan | ~self.movable[pr.universe]] = 0.0
            j = int(np.argmax(loss)) if len(loss) else -1
            top_row = cost[k] if k >= 0 else 0.0
            top_loan = loss[j] if j >= 0 else 0.0
            if max(top_row, top_loan) <= eps:
                break
            if top_loan > top_row:
                found = self.loss_move(int(pr.universe[j]))
                if found is None:
                    stuck_loan[j] = True
                    continue
            else:
                if k != self.platform_row and k not in self.local and k not in self.members:
                    stuck[k] = True  # (an obligor row: its borrower's loans are few; left to the repair)
                    continue
                found = self.best_move(k)
                if found is None:
                    stuck[k] = True
                    continue
            ml, md, trial = found
            frm = st.route[ml]
            st.apply(ml, md, trial)
            moved += len(ml)
            # rows of the routes the move touched may have new moves now, and so may loans
            for r in set(frm.tolist()) | set(md.tolist()):
                if r < self.R:
                    stuck[rows.route_rows[r]] = False
            if self.platform_row >= 0:
                stuck[self.platform_row] = False
            stuck[list(self.members)] = False
            stuck_loan[:] = False
        self.ctx.count("exchange_moves", moved)
        return moved
