"""Phase 3, split: from the bin LP to an LP over loans, with as few fractional loans as rows.

A basic solution of the bin LP splits at most as many bins as there are coupling rows, but a
split bin can hold thousands of loans. When the split bins hold more than ``max_split_loans``,
the big ones are cut into chunks where the LP's fractions fall on their loans laid end to end (a
chunk per route, a single loan at each boundary), and a small LP over the chunks alone, every
other bin fixed, splits them again; big split chunks are cut in turn. Then one LP takes the
split bins' (or chunks') loans one by one, every other loan fixed where the bin LP put it: the
bin LP's solution is feasible for it, so its objective can only fall, and a basic solution of it
leaves fractional only about as many *loans* as there are binding coupling rows. It starts from
the basis the same end-to-end layout gives (every loan basic on the route its place falls in, a
loan at a boundary on both).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..backends import Basis, SolveOptions, SolveStatus
from ..formulation import Problem
from ..instance import Instance
from .classes import combine_keys
from .context import Context
from .refine import Relaxation, unit_fractions
from .restricted import FixedSums, restricted


@dataclass(frozen=True, eq=False)
class Split:
    """Every loan's LP route, and the few loans the LP over loans leaves fractional."""

    route: np.ndarray  # n: the LP's route per loan (a fractional loan: its largest share; R = unfunded)
    fractional: np.ndarray  # n bool
    bins: np.ndarray  # n: each loan's bin of the bin LP
    bin_support: np.ndarray  # bins x R bool: the routes the bin LP gives each bin some of
    objective: float  # the objective of the last LP (at most the bin LP's)
    free: np.ndarray | None = None  # n bool: the loans the LP over loans took one by one
    free_support: np.ndarray | None = None  # (free loans) x R: the routes each of them could take
    basis: Basis | None = None  # that LP's final basis

    def support(self, loans: np.ndarray) -> np.ndarray:
        """``len(loans) x R``: the routes the bin LP gives each loan's bin some of."""
        return self.bin_support[self.bins[loans]]


def split(ctx: Context, relax: Relaxation, sums: FixedSums) -> Split:
    """The bin LP's solution taken down to loans (see the module's docstring)."""
    inst, opts = ctx.inst, ctx.options
    R = inst.R
    T = relax.fractions
    bins, units = relax.bins, relax.units
    split_bins = T.max(axis=1) < 1 - 1e-9
    route = T.argmax(axis=1)[bins]  # a split bin's loans: its largest share
    fractional = split_bins[bins]
    bin_support = T[:, :R] > 1e-9
    ctx.stats["split_bins"] = int(split_bins.sum())
    objective = relax.objective
    if opts.split_lp and fractional.any() and not relax.stopped:
        free_support = bin_support[bins[fractional]]
        crash = _split_crash(inst, bins, split_bins, T, units.P, relax.prob, relax.sol.basis)
        big = split_bins & (units.count > opts.free_unit_size)
        if big.any() and units.count[split_bins].sum() > opts.max_split_loans:
            # too many loans in split bins to take one by one: cut the big ones into chunks first
            res = _chunk_lps(ctx, bins, big, T, units.P, route, fractional, bin_support, sums)
            if res is not None:
                route, fractional, free_support, crash = res
        if crash is not None:
            free = fractional
            res = loan_lp(ctx, route, free, sums, free_support, crash=crash)
            ctx.clock.lap("lp")
            if res is not None:
                ctx.stats.update({"fractional_loans": int(res.fractional.sum()),
                                  "split_lp_objective": float(res.objective)})
                return Split(res.route, res.fractional, bins, bin_support, res.objective, free, free_support,
                             res.basis)
    ctx.stats.update({"fractional_loans": int(fractional.sum()), "split_lp_objective": float(objective)})
    return Split(route, fractional, bins, bin_support, objective)


def _chunk_lps(ctx: Context, bins: np.ndarray, big: np.ndarray, T: np.ndarray, P: np.ndarray,
               loan_route: np.ndarray, loan_split: np.ndarray, bin_support: np.ndarray, sums: FixedSums):
    """Cut the big split bins into chunks until the split ones hold few loans.

    Each bin in ``big`` is cut where the LP's route fractions fall on its loans laid end to end
    (:func:`_cut_at_fractions`): a chunk per route and a single loan at each boundary. An LP over
    the chunks of the split bins (every other bin fixed where the bin LP put it, in the row
    bounds) is small, and the bin LP's solution is feasible for it (every chunk taking its bin's
    fractions gives the bin's sums), so its objective can only fall. Its split chunks are cut
    again while they hold more than ``max_split_loans`` loans. Returns the route per loan, the
    loans of split chunks, their routes (one row per such loan) and the split LP's crash, or
    None when an LP does not solve (the safety stop).
    """
    inst, options, clock = ctx.inst, ctx.options, ctx.clock
    R = inst.R
    n = inst.n
    free = loan_split
    free_idx = np.flatnonzero(free)
    chunk = _cut_at_fractions(inst, bins, big, T, P, options.chunk_pieces)
    gid, G = combine_keys([bins[free_idx], chunk[free_idx]], len(free_idx))
    route = np.where(free, -1, loan_route)
    for it in range(options.max_cuts + 1):
        clock.say(f"cutting {int(big.sum())} split bins: an LP over {G:,} chunks of {len(free_idx):,} loans")
        rep = np.zeros(G, dtype=np.int64)
        rep[gid[::-1]] = free_idx[::-1]
        prob, small, keep, xf, units, _, fk_n, _ = restricted(inst, route, sums, bin_support[bins[rep]],
                                                                integer=False, free_group=gid)
        sol = ctx.solve(small)
        ctx.count("simplex_iterations", sol.detail.get("iterations", 0))
        ctx.count("cuts")
        if sol.x is None or sol.status != SolveStatus.OPTIMAL or sol.basis is None:
            return None
        x = xf.copy()
        x[keep] = sol.x
        Tg = unit_fractions(prob, x)[fk_n:]
        count = units.count[fk_n:]
        split_g = Tg.max(axis=1) < 1 - 1e-9
        big = split_g & (count > options.free_unit_size)
        if not big.any() or count[split_g].sum() <= options.max_split_loans or it == options.max_cuts:
            break
        # the big split chunks, cut again at their own fractions
        gb = np.full(n, G, dtype=np.int64)  # (G: every loan outside the chunks)
        gb[free_idx] = gid
        Pg = np.append(units.P[fk_n:], 1.0)
        sub = _cut_at_fractions(inst, gb, np.append(big, False), np.vstack([Tg, np.zeros(R + 1)]), Pg,
                                options.chunk_pieces)
        gid, G = combine_keys([gid, sub[free_idx]], len(free_idx))
    out = loan_route.copy()
    out[free_idx] = Tg.argmax(axis=1)[gid]
    loans_split = np.zeros(n, dtype=bool)
    loans_split[free_idx] = split_g[gid]
    # the split LP's crash: the split chunks' loans laid end to end; the coupling rows and the
    # auxiliary columns as this LP left them (they close both problems' column lists)
    gb = np.full(n, G, dtype=np.int64)
    gb[free_idx] = gid
    ext_split, ext_T = np.append(split_g, False), np.vstack([Tg, np.zeros(R + 1)])
    loans, on = _end_to_end_routes(inst, gb, ext_split, ext_T, np.append(units.P[fk_n:], 1.0))
    n_aux = prob.n_cols - prob.n_pairs - prob.n_units
    crash = (loans, on, sol.basis.row[prob.n_units:], sol.basis.col[len(sol.basis.col) - n_aux:])
    support = (Tg[:, :R] > 1e-9)[gid[split_g[gid]]]
    clock.lap("lp")
    return out, loans_split, support, crash


def _split_crash(inst: Instance, bins: np.ndarray, split: np.ndarray, T: np.ndarray, P: np.ndarray,
                 prob: Problem, basis: Basis | None):
    """What the split LP's starting basis is built from: per loan of a split bin, the routes it is
    basic on when the bin's loans are laid end to end (each whole on one route, a loan at a
    boundary on two), and the bin LP's statuses of the coupling rows and the auxiliary columns."""
    if basis is None:
        return None
    loans, on = _end_to_end_routes(inst, bins, split, T, P)
    return loans, on, basis.row[prob.n_units:], basis.col[prob.n_pairs + prob.n_units:]


@dataclass(frozen=True, eq=False)
class LoanLP:
    route: np.ndarray  # every loan's route (a fractional loan: its largest share)
    fractional: np.ndarray  # n bool
    fractions: np.ndarray  # (fractional loans) x (R+1), in index order
    objective: float
    basis: Basis | None


def loan_lp(ctx: Context, route: np.ndarray, free: np.ndarray, sums: FixedSums, free_support: np.ndarray,
            crash=None, basis: Basis | None = None, tighten: dict[str, float] | None = None) -> LoanLP | None:
    """The LP over the loans of split bins, one loan per unit, every other loan where it is.

    A bin the LP splits holds loans that differ a little in principal, life and score; taken one
    by one, a basic solution of this LP splits at most as many loans as there are binding
    coupling rows, whatever the size of the bins. Each loan may use the routes its bin used, so
    the bin LP's solution (every loan taking its bin's fractions) is feasible here: the
    objective can only fall, and the bound is untouched. None when the LP does not solve.

    ``basis`` starts it from an earlier solve of the same LP; ``tighten`` (row label -> amount)
    moves those rows' limits inwards by the amount (the whole-loan search's rounding margins).
    """
    inst = ctx.inst
    R = inst.R
    trial = np.where(free, -1, route)
    prob, small, keep, xf, units, _, fk_n, free_idx = restricted(inst, trial, sums, free_support, integer=False)
    start = None
    if crash is not None:
        # a starting basis: every loan of a split bin whole on the route its place on the line
        # gives it, a loan at a boundary basic on both routes; the rows and the auxiliary columns
        # as the bin LP left them. Its point is the bin LP's split, but for the loans' differing
        # lives and fields, so it starts close to feasible and close to optimal
        loans, on, coupling_rows, aux_cols = crash
        m_assign = prob.n_units
        if (prob.n_rows - m_assign == len(coupling_rows) and len(free_idx) == len(loans)
                and prob.n_cols - prob.n_pairs - prob.n_units == len(aux_cols)):
            unit_of = fk_n + np.searchsorted(free_idx, loans)
            basic = np.zeros((prob.n_units, R + 1), dtype=bool)
            basic[unit_of] = on
            col = np.zeros(prob.n_cols, dtype=np.int8)
            col[:prob.n_pairs] = basic[prob.pair_unit, prob.pair_route]
            col[prob.n_pairs:prob.n_pairs + prob.n_units] = basic[:, R]
            col[prob.n_pairs + prob.n_units:] = aux_cols
            row = np.zeros(prob.n_rows, dtype=np.int8)
            row[:fk_n] = 1  # the fixed units' assignment rows are empty in the small problem
            row[m_assign:] = coupling_rows
            start = Basis(col[keep], row)
    if basis is not None:
        start = basis
    if tighten:
        lo, hi = small.row_lo.copy(), small.row_hi.copy()
        labels = prob.rows["label"].to_numpy()
        kinds = prob.rows["kind"].to_numpy()
        for i in np.flatnonzero(np.isin(labels, list(tighten))):
            d = tighten[labels[i]]
            if kinds[i] in ("weighted_average_min", "daily_min_hard"):  # the LP's '>=' form of the row
                lo[i] += d
            else:
                hi[i] -= d
        small = replace(small, row_lo=lo, row_hi=hi)
    sol = ctx.solve(small, SolveOptions(basis=start))
    ctx.count("simplex_iterations", sol.detail.get("iterations", 0))
    if sol.x is None or sol.status != SolveStatus.OPTIMAL:
        return None
    x = xf.copy()
    x[keep] = sol.x
    T = unit_fractions(prob, x)[fk_n:]
    out = route.copy()
    out[free_idx] = T.argmax(axis=1)
    is_frac = T.max(axis=1) < 1 - 1e-9
    frac = np.zeros(inst.n, dtype=bool)
    frac[free_idx] = is_frac
    ctx.clock.say(f"{len(free_idx):,} loans one by one: {int(frac.sum())} fractional, LP {sol.objective:,.2f}")
    return LoanLP(out, frac, T[is_frac], float(sol.objective), sol.basis)


def end_to_end(inst: Instance, bins: np.ndarray, big: np.ndarray, P: np.ndarray):
    """The loans of the bins in ``big``, largest first, laid end to end on [0, 1] by principal:
    their indices, bins and the interval ``[lo, hi)`` each covers (in bin order, then largest first)."""
    idx = np.flatnonzero(big[bins])
    b = bins[idx]
    p = inst.principal[idx]
    order = np.lexsort((-p, b))
    idx, b, p = idx[order], b[order], p[order]
    cum = np.cumsum(p)
    starts = np.r_[0, np.flatnonzero(np.diff(b)) + 1] if len(b) else np.zeros(0, dtype=np.int64)
    before = np.repeat(cum[starts] - p[starts], np.diff(np.r_[starts, len(b)]))
    return idx, b, (cum - p - before) / P[b], (cum - before) / P[b], starts



def _cut_at_fractions(inst: Instance, bins: np.ndarray, big: np.ndarray, T: np.ndarray,
                      P: np.ndarray, pieces: int = 1) -> np.ndarray:
    """Chunk ids that cut each bin in ``big`` where the LP splits it.

    The bin's loans, largest first, are laid end to end on [0, 1] by principal, and the LP's
    route fractions of the bin mark boundaries on the same line: the loans between two
    boundaries form one chunk (the LP can keep it whole on that route), and each loan a boundary
    falls inside becomes a chunk of its own. So a bin split over ``s`` routes becomes ``s``
    chunks and at most ``s - 1`` single loans. With ``pieces`` > 1 the line is also cut into
    that many runs of equal loan count, so that a chunk the next LP splits is smaller.
    Loans outside ``big`` get -1.
    """
    n = inst.n
    chunk = np.full(n, -1, dtype=np.int64)
    idx, b, lo, hi, starts = end_to_end(inst, bins, big, P)
    if len(idx) == 0:
        return chunk
    bounds = np.cumsum(T[b], axis=1)[:, :-1]  # inner boundaries of each loan's bin, R of them
    eps = 1e-12
    g_lo = (bounds <= lo[:, None] + eps).sum(axis=1)
    g_hi = (bounds < hi[:, None] - eps).sum(axis=1)
    whole = g_lo == g_hi
    sizes = np.diff(np.r_[starts, len(b)])
    rank = np.arange(len(b)) - np.repeat(starts, sizes)
    piece = rank * pieces // np.repeat(sizes, sizes)  # 0 .. pieces-1 along the line
    chunk[idx] = np.where(whole, g_lo + T.shape[1] * piece, T.shape[1] * pieces + rank)
    return chunk



def _end_to_end_routes(inst: Instance, bins: np.ndarray, big: np.ndarray, T: np.ndarray,
                       P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the loans of the bins in ``big`` laid end to end (see :func:`_cut_at_fractions`), the
    routes (``R`` = unfunded) whose share of the bin each loan's interval overlaps: one for a loan
    between two boundaries, two or more for a loan a boundary falls inside. Returns the loans and
    a (loans x R+1) mask."""
    idx, b, lo, hi, _ = end_to_end(inst, bins, big, P)
    seg_hi = np.cumsum(T[b], axis=1)
    seg_lo = seg_hi - T[b]
    overlap = np.minimum(hi[:, None], seg_hi) - np.maximum(lo[:, None], seg_lo)
    return idx, (overlap > 1e-12) & (T[b] > 1e-9)
