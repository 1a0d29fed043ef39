"""From a compiled day to a whole-loan plan with a valid lower bound.

How the solve scales with loan *profiles* rather than loans
-----------------------------------------------------------
1. **Exact classes.** Loans that agree on every discrete thing a rule reads (eligibility for
   each route, segment membership, obligor slot, and expected life when it takes few values)
   get one class id, computed by factorising whole columns.
2. **Bins refined where the LP needs them.** Inside a class, loans still differ on continuous
   fields (weighted-average fields, and expected life when it is continuous). A *bin* is a set of
   loans of one class; the bin LP gives all loans of a bin the same route fractions, so it is a
   restriction of the loan-level LP and its optimum ``UB`` is achievable. Its row duals ``y``
   then give a **valid lower bound** on the loan-level LP by Lagrangian relaxation of every
   coupling row: each loan independently takes its cheapest reduced-cost option,

       LB(y) = sum_rows y_k b_k + sum_i p_i min(penalty, min_f rc_if(y)) + sum_aux min(d_j lo_j, d_j hi_j),

   which holds for any sign-feasible ``y``. When every loan of every bin has the same reduced-cost
   argmin, ``LB = UB`` (the bin LP is then exact); otherwise each bin is split by its loans'
   argmin and the LP is solved again. Bins only ever split, so ``UB`` never rises, and the loop
   ends when ``(UB - LB) / UB`` is below ``lp_tolerance``.
3. **Whole loans.** A basic solution of the bin LP splits at most as many bins as there are
   coupling rows, but a split bin may hold thousands of loans. When the split bins hold more
   than ``max_split_loans``, each big one is cut where the LP's route fractions put the
   boundaries (its loans laid end to end by principal: one chunk per route and a single loan at
   each boundary), and a small LP over the chunks alone, every other bin fixed where it is,
   splits them again (the bin LP's solution, every chunk taking its bin's fractions, is
   feasible for it); its big split chunks are cut in turn. Then one LP takes the split bins' (or
   chunks') loans one by one, every other bin fixed where it is: the bin LP's
   solution is feasible for it, so its objective can only fall, and a basic solution leaves
   fractional about as many *loans* as there are binding coupling rows. It starts from the basis
   the same end-to-end layout gives (every loan basic on the route its place falls in, a loan at
   a boundary on both). The fractional loans alone, over all their eligible routes, are the
   first MIP; then, with their neighbours by principal in their bin, binary columns of a MIP in
   which all other loans are fixed, so the MIP is small whatever the size of the day. Short
   rounds free more loans, the cheapest to move at the LP prices, and a refill MIP funds what
   whole loans left unfunded.
4. **Exact check.** The whole-loan plan is evaluated row by row in float64 at loan level; any
   row over its limit (the MIP's tolerances are relative) is repaired by moving the fewest
   loans to unfunded, which can only reduce every ``<=`` row's left side. The plan's gap is
   measured against the best ``LB`` found.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd

from .backends import Basis, SolveOptions, SolveStatus, get_backend
from .errors import SolverError
from .evaluate import ENGINE_TOL, evaluate, obligor_values, repair, whole_objective
from .formulation import Problem, RowKind, Units, drop_fixed_columns, formulate
from .instance import ConcFamily, Instance
from .polish import RowModel, polish

Progress = Callable[[str], None]

# loan-by-loan pricing of at least this many loans runs on up to WORKERS threads
PARALLEL_LOANS = 1 << 17
WORKERS = min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class PlanOptions:
    solver: str = "highs"
    time_limit: float = 300.0  # seconds for the whole solve
    gap_tolerance: float = 1e-5  # a plan within this gap of the LP bound is reported optimal
    lp_tolerance: float | None = None  # refinement stops at this LP gap (default gap_tolerance / 10)
    max_refinements: int = 30
    # quantile bins per continuous field before refinement; None: 2 below 7.5M loans (the cold
    # first LP is the dearest solve: 5M took 41 s against 58 s with 4), 4 from 7.5M (bigger bins
    # split into more loans, and cutting them costs more LPs than the first one saves: 10M took
    # 113 s against 97 s with 4). Measured on the seeded scale days, one run each
    initial_bins: int | None = None
    free_unit_size: int = 16  # split bins larger than this are cut before the MIP
    split_window: int = 8  # loans either side of a split loan (by principal, same uncut bin) also free in the MIP
    max_cuts: int = 12  # LP re-solves cutting split bins (each usually moves the split to fewer loans)
    split_lp: bool = True  # an LP over the split bins' loans one by one before the whole-loan MIP
    max_split_loans: int = 10000  # no more cuts once the split chunks hold this few loans (the split LP takes them one by one)
    # a cut also splits each big split bin or chunk into this many runs of equal loan count: the
    # split moves to a smaller chunk each time (5M: 13 chunk LPs leaving 71,516 loans with 1;
    # 11 leaving 5,921 with 4; one run each)
    chunk_pieces: int = 4
    first_neighbourhood: int = 0  # loans per route, cheapest to move, freed with the split loans in the first round
    neighbourhood_per_route: int = 40  # loans per route freed in the second round (then twice as many each round)
    neighbourhood_rounds: int = 5  # rounds of the whole-loan MIP, each followed by a refill and freeing 2x more loans
    mip_rel_gap: float | None = None  # default: a tenth of gap_tolerance
    accept_fraction: float = 0.9  # the whole-loan rounds stop at a gap of this fraction of gap_tolerance
    mip_time_limit: float = 10.0  # solver seconds for the whole-loan rounds in all
    mip_round_time: float = 2.0  # for each round's neighbourhood MIP
    fractional_time: float = 0.5  # for the MIP over the fractional loans alone (it finds the first incumbent)
    first_round_time: float = 2.0  # for the first round (fractional loans and their neighbours)
    # a warm re-solve (a what-if) gives each round and refill at most this long, refills at most
    # this many loans, and polishes between rounds: an analyst waits on it, and the polish does
    # most of what a longer round would
    warm_round_time: float = 1.0
    warm_fractional_time: float = 0.2
    warm_refill_loans: int = 500
    refill_loans: int = 2000  # at most this many unfunded loans (smallest first) in the refill MIP
    refill_time_limit: float = 2.0
    eager_obligor_rows: int = 500  # up to this many obligor rows all go into the LP; beyond, they are lazy
    obligor_rounds: int = 4  # after the whole-loan rounds, MIPs fixing the obligor rows still broken
    polish: bool = True  # in a warm re-solve, after each whole-loan round short of the target, moves of small loans into the slack
    # from this many loans the whole-loan MIPs take their fixed loans' sums from a table kept up
    # to date as loans move (``FixedSums``); below, summing the loans per MIP costs milliseconds
    fixed_table_loans: int = 500_000


@dataclass(frozen=True, eq=False)
class WarmStart:
    """What a later solve of a similar day can reuse: the classes, the refined bins, the final
    LP basis and the whole-loan assignment."""

    route_ids: tuple[str, ...]
    cls: np.ndarray
    bins: np.ndarray
    basis: Basis | None
    shape: tuple[int, int]  # (rows, cols) of the LP the basis belongs to
    route: np.ndarray
    obligor_active: tuple[tuple[str, str], ...] = ()  # (route id, borrower) of the obligor rows in the LP
    # whole-loan plans of other similar days (a sweep's earlier points, its base): each that holds
    # every limit of the new day is a candidate incumbent too
    incumbents: tuple[np.ndarray, ...] = ()
    objective: float = float("nan")  # of ``route``, and the final LP's objective of the solve that made it
    lp_objective: float = float("nan")


@dataclass(frozen=True, eq=False)
class Solved:
    """What the engine hands to the plan builder."""

    route: np.ndarray  # n: route index per loan, R for unfunded
    evaluation: pd.DataFrame | None  # every row evaluated on ``route`` (see evaluate.evaluate)
    lower_bound: float
    lp_objective: float
    lp_duals: pd.DataFrame  # one row per LP row with kind/route/ref/label/dual/activity
    totals_lp: np.ndarray  # A_f from the LP
    status: str
    solver: str
    solver_version: str
    timings: dict[str, float]
    stats: dict[str, float] = field(default_factory=dict)
    warm: WarmStart | None = None


def _dense(a: np.ndarray) -> tuple[np.ndarray, int]:
    codes, uniq = pd.factorize(a, use_na_sentinel=False)  # a missing value is a value of its own
    return np.asarray(codes, dtype=np.int64), len(uniq)


_COUNTDOWN: dict[int, np.ndarray] = {}


def _countdown(n: int) -> np.ndarray:
    """``n-1, ..., 0`` (a view of one cached array per size: big days ask for it often)."""
    if n not in _COUNTDOWN:
        _COUNTDOWN.clear()
        _COUNTDOWN[n] = np.arange(n, dtype=np.int64)
    return _COUNTDOWN[n][::-1]


def _dense_radix(code: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Dense ids of codes in ``[0, k)`` in order of first appearance, as a factorisation gives,
    from a presence table and its running count: no hashing, several times faster on millions
    of loans."""
    present = np.zeros(k, dtype=bool)
    present[code] = True
    remap = np.cumsum(present, dtype=np.int64) - 1
    ids = remap[code]
    m = int(remap[-1]) + 1
    first = np.empty(m, dtype=np.int64)
    first[ids[::-1]] = _countdown(len(ids))  # the last write per id is its first loan
    rank = np.empty(m, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(m)
    return rank[ids], m


def combine_keys(keys: list[np.ndarray], n: int) -> tuple[np.ndarray, int]:
    """One dense id per distinct tuple of the key columns (exact, no hashing collisions).

    Mixed-radix arithmetic on the key codes, factorised (hashed) only when the radix product
    would overflow; ids in order of first appearance, so they depend only on the partition the
    keys make and on the order of the loans, not on how the keys are composed. On big days every
    pass over the loans counts: the arithmetic is in place, and a key of small codes starting at
    zero is used as it is.
    """
    if not n:
        return np.zeros(0, dtype=np.int64), 0
    code: np.ndarray | None = None
    k = 1
    for key in keys:
        key = np.asarray(key)
        if key.dtype.kind in "iu" and key.dtype.itemsize <= 8:
            lo, hi = int(key.min()), int(key.max())
            if hi - lo < 1 << 24:  # small integer codes: an offset, no hashing
                kn = hi - lo + 1
                safe = lo == 0 and np.can_cast(key.dtype, np.int64, "safe")  # (not uint64)
                kc = key if safe else np.subtract(key, lo, dtype=np.int64)
            else:
                kc, kn = _dense(key)
        else:
            kc, kn = _dense(key)
        if code is None:
            code, k = np.array(kc, dtype=np.int64), kn  # a copy: the loop works in place
            continue
        if k * kn >= 1 << 62:
            code, k = _dense(code)
        np.multiply(code, kn, out=code)
        code += kc
        k *= kn
    if code is None:
        return np.zeros(n, dtype=np.int64), 1
    return _dense_radix(code, k) if k <= max(4 * n, 1 << 20) else _dense(code)


def loan_classes(inst: Instance) -> tuple[np.ndarray, int, list[str]]:
    """Class id per loan, and the continuous fields left to the bin refinement."""
    n = inst.n
    keys: list[np.ndarray] = []
    bits = np.packbits(inst.elig, axis=1)
    pad = (-bits.shape[1]) % 8
    if pad:
        bits = np.concatenate([bits, np.zeros((n, pad), dtype=np.uint8)], axis=1)
    words = bits.view(np.uint64)
    keys.extend(words[:, j] for j in range(words.shape[1]))
    # A loan's segment in a family matters only where it is eligible for the family's route. Loans
    # of one class share their eligibility, so families with the same filter and ``per`` column
    # (the same limit at several funders) need one key between them: the segment wherever the
    # loan is eligible for any of their routes. Same partition, a pass per distinct limit.
    groups: dict[str, tuple[np.ndarray, ConcFamily]] = {}
    for fam in inst.conc:
        sig = json.dumps(fam.spec.model_dump(mode="json", include={"where", "per"}), sort_keys=True)
        if sig in groups:
            groups[sig][0][:] |= inst.elig[:, fam.route]
        else:
            groups[sig] = (np.ascontiguousarray(inst.elig[:, fam.route]), fam)
    for anywhere, fam in groups.values():
        member = anywhere & fam.where
        keys.append(np.where(member, 0 if fam.per_codes is None else fam.per_codes, -1))
    if inst.obligor_rows:
        keys.append(inst.obligor_slot)
    continuous = list(inst.fields)
    if n:
        life_codes, nlife = _dense(inst.life)
        if nlife <= 256:
            keys.append(life_codes)
        else:
            continuous.append("__life__")
    cls, k = combine_keys(keys, n)
    return cls, k, continuous


def _field_values(inst: Instance, name: str) -> np.ndarray:
    return inst.life if name == "__life__" else inst.fields[name]


def initial_bins(inst: Instance, cls: np.ndarray, continuous: list[str], q: int) -> tuple[np.ndarray, int]:
    keys = [cls]
    if q > 1:
        for name in continuous:
            v = _field_values(inst, name)
            finite = v[np.isfinite(v)]
            if len(finite) == 0:
                continue
            edges = np.unique(np.quantile(finite, np.linspace(0, 1, q + 1)[1:-1]))
            keys.append(np.searchsorted(edges, np.nan_to_num(v, nan=-np.inf)))
    return combine_keys(keys, inst.n)


@dataclass(frozen=True, eq=False)
class Dual:
    """Row duals arranged for the loan-level Lagrangian."""

    const: float  # sum_k y_k b_k plus the auxiliary columns' terms
    base: np.ndarray  # classes x R: per-unit reduced cost not depending on L or fields
    life_coef: np.ndarray  # R
    field_coef: dict[str, np.ndarray]  # field -> R


def _eligible_principal(inst: Instance, cls: np.ndarray | None = None,
                        cls_rep: np.ndarray | None = None) -> np.ndarray:
    """Per funder route, the principal of the loans eligible for it (no loans x routes float
    copy); from the classes' principal when given (a class's loans share their eligibility)."""
    if cls is None or cls_rep is None:
        return np.array([inst.principal[inst.elig[:, f]].sum() for f in range(inst.R - 1)])
    per_class = np.bincount(cls, weights=inst.principal, minlength=len(cls_rep))
    return per_class @ inst.elig[cls_rep, :inst.R - 1]


def arrange_duals(inst: Instance, prob: Problem, y: np.ndarray, x: np.ndarray,
                  cls_rep: np.ndarray, eligible_principal: np.ndarray | None = None) -> Dual:
    """Turn LP row duals into per-class, per-route reduced-cost pieces (clipping signs)."""
    R = inst.R
    y = y.copy()
    y[np.isneginf(prob.row_lo) & (y > 0)] = 0.0  # '<=' rows: y <= 0
    y[np.isposinf(prob.row_hi) & (y < 0)] = 0.0  # '>=' rows: y >= 0
    kind = prob.rows["kind"].to_numpy()
    route = prob.rows["route"].to_numpy()
    ref = prob.rows["ref"].to_numpy()
    not_assign = kind != RowKind.ASSIGN.value
    bound = np.where(y < 0, prob.row_hi, np.where(y > 0, prob.row_lo, 0.0))
    const = float(np.sum(np.where(not_assign & (y != 0), y * bound, 0.0)))

    # auxiliary columns: A_f in [0, implied max], z_f in [0, daily_min]
    aux = np.arange(prob.n_pairs + prob.n_units, prob.n_cols)
    d = prob.c[aux] - prob.A[:, aux].T @ y
    hi = prob.col_hi[aux].copy()
    F = R - 1
    if eligible_principal is None:
        eligible_principal = _eligible_principal(inst, cls, cls_rep)
    hi[:F] = np.minimum(hi[:F], inst.share[:F] * eligible_principal)
    const += float(np.sum(np.minimum(d * prob.col_lo[aux], d * hi)))

    ncls = len(cls_rep)
    base = np.broadcast_to(inst.k0, (ncls, R)).copy()
    field_coef = {k: np.zeros(R) for k in inst.fields}
    s = inst.share
    for i in np.flatnonzero(not_assign & (y != 0)):
        k, r, j, yi = kind[i], route[i], ref[i], y[i]
        if k == RowKind.TOTAL.value:
            base[:, r] -= yi * s[r]
        elif k == RowKind.PLATFORM_CAPACITY.value:
            base -= yi * inst.platform_share[None, :]
        elif k == RowKind.CONCENTRATION.value:
            fam, seg = _segment_of(inst, j)
            member = fam.member_code(cls_rep)
            code = 0 if fam.per_codes is None else seg.code
            base[member == code, r] -= yi * s[r]
        elif k in (RowKind.WA_MIN.value, RowKind.WA_MAX.value):
            t = inst.wa[j]
            b = t.min if k == RowKind.WA_MIN.value else t.max
            field_coef[t.field][r] -= yi * s[r]
            base[:, r] += yi * s[r] * b
        elif k == RowKind.OBLIGOR.value:
            o = inst.obligor_rows[j]
            base[inst.obligor_slot[cls_rep] == o.slot, r] -= yi * s[r]
    base[~inst.elig[cls_rep]] = np.inf
    return Dual(const, base, inst.k1.copy(), field_coef)


def _segment_of(inst: Instance, ref: int):
    for fam in inst.conc:
        if ref < len(fam.segments):
            return fam, fam.segments[ref]
        ref -= len(fam.segments)
    raise IndexError(ref)  # pragma: no cover


@dataclass(frozen=True, eq=False)
class Pricing:
    """Each loan's cheapest option and runner-up at the LP prices (R = unfunded)."""

    best: np.ndarray
    second: np.ndarray
    move_cost: np.ndarray  # (rc_second - rc_best) * principal: what moving the loan costs


def lagrangian(inst: Instance, dual: Dual, cls: np.ndarray, idx: np.ndarray | None = None,
               chunk: int = 1 << 13) -> tuple[float, Pricing]:
    """Loan-level Lagrangian terms, and each loan's cheapest option and runner-up.

    Over the loans ``idx`` (default all): the returned total is ``dual.const`` plus their terms,
    the pricing arrays are indexed like ``idx``. Reduced costs per unit of principal are built as
    one (loans x routes+1) block per chunk: the class part is a gather, life and fields enter as
    outer products. Chunks are small enough for a block to stay in cache, and on a big day two
    threads take them in turn (numpy releases the GIL in each step); the total adds the chunks'
    terms in order, so it does not depend on the threads.
    """
    R = inst.R
    idx = np.arange(inst.n) if idx is None else idx
    m = len(idx)
    best_route = np.empty(m, dtype=np.int64)
    second_route = np.empty(m, dtype=np.int64)
    move_cost = np.empty(m)
    base = np.concatenate([dual.base, np.full((dual.base.shape[0], 1), inst.penalty)], axis=1)
    life_coef = np.append(dual.life_coef, 0.0)
    fields = [(inst.fields[k], np.append(c, 0.0)) for k, c in dual.field_coef.items() if c.any()]

    def price(start: int) -> float:
        sl = slice(start, min(m, start + chunk))
        loans = idx[sl]
        p = inst.principal[loans]
        rc = base[cls[loans]]
        rc += inst.life[loans, None] * life_coef[None, :]
        for values, coef in fields:
            rc += np.nan_to_num(values[loans])[:, None] * coef[None, :]
        rows = np.arange(rc.shape[0])
        arg = rc.argmin(axis=1)
        best = rc[rows, arg]
        rc[rows, arg] = np.inf
        arg2 = rc.argmin(axis=1)
        second = rc[rows, arg2]
        best_route[sl] = arg
        second_route[sl] = arg2
        move_cost[sl] = (np.minimum(second, inst.penalty) - best) * p
        return float(np.dot(p, best))

    starts = range(0, m, chunk)
    if m >= PARALLEL_LOANS and WORKERS > 1:
        with ThreadPoolExecutor(WORKERS) as pool:
            terms = list(pool.map(price, starts))
    else:
        terms = [price(a) for a in starts]
    total = dual.const + math.fsum(terms)
    return total, Pricing(best_route, second_route, move_cost)


def bin_bound(inst: Instance, dual: Dual, cls: np.ndarray, bins: np.ndarray, nb: int,
              chunk: int = 1 << 13) -> tuple[float, np.ndarray]:
    """The same Lagrangian bound as :func:`lagrangian`, and each loan's cheapest option, priced
    per bin wherever a bin's loans provably agree.

    A loan's reduced cost on route ``r`` is linear in its continuous values (life, the fields the
    duals weigh): ``rc_r(z) = base_r + coef_r . z``. The set of ``z`` where ``r`` is cheapest is an
    intersection of half-spaces, hence convex; so when ``r`` is cheapest at every corner of the
    box spanned by a bin's values, it is cheapest for every loan of the bin, and the bin's terms
    sum exactly from its aggregates: ``base_r P + coef_r . sum_i p_i z_i``. Only the loans of bins
    whose corners disagree are priced one by one, and those are the bins refinement splits.
    """
    R = inst.R
    base = np.concatenate([dual.base, np.full((dual.base.shape[0], 1), inst.penalty)], axis=1)
    dims = [(inst.life, np.append(dual.life_coef, 0.0))]
    dims += [(np.nan_to_num(inst.fields[k]), np.append(c, 0.0)) for k, c in dual.field_coef.items() if c.any()]
    bin_cls = np.zeros(nb, dtype=np.int64)
    bin_cls[bins] = cls
    p = inst.principal
    rc0 = base[bin_cls]  # nb x (R+1)
    corners: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (lo, hi, coef) of varying dims
    lin = np.zeros((nb, R + 1))  # sum_i p_i coef . z_i per bin, route
    for values, coef in dims:
        lo = np.full(nb, np.inf)
        hi = np.full(nb, -np.inf)
        np.minimum.at(lo, bins, values)
        np.maximum.at(hi, bins, values)
        lin += np.bincount(bins, weights=p * values, minlength=nb)[:, None] * coef[None, :]
        if np.array_equal(lo, hi):
            rc0 = rc0 + lo[:, None] * coef[None, :]
        else:
            corners.append((lo, hi, coef))
    arg = rc0.argmin(axis=1) if not corners else None
    agree = np.ones(nb, dtype=bool)
    for mask in range(1 << len(corners)):
        rc = rc0.copy()
        for d, (lo, hi, coef) in enumerate(corners):
            rc += np.where(mask >> d & 1, hi, lo)[:, None] * coef[None, :]
        a = rc.argmin(axis=1)
        if arg is None:
            arg = a
        else:
            agree &= a == arg
    rows = np.flatnonzero(agree)
    P = np.bincount(bins, weights=p, minlength=nb)
    r = arg[rows]
    total = dual.const + float(np.dot(base[bin_cls[rows], r], P[rows]) + lin[rows, r].sum())
    best = arg[bins]
    loans = np.flatnonzero(~agree[bins])
    if len(loans):
        sub_total, pricing = lagrangian(inst, dual, cls, loans, chunk)
        total += sub_total - dual.const
        best[loans] = pricing.best
    return total, best


def _unit_fractions(prob: Problem, x: np.ndarray, R: int) -> np.ndarray:
    """U x (R+1) matrix of route fractions per unit (last column: unfunded)."""
    T = np.zeros((prob.n_units, R + 1))
    T[prob.pair_unit, prob.pair_route] = x[:prob.n_pairs]
    T[:, R] = x[prob.n_pairs:prob.n_pairs + prob.n_units]
    return T


def _cheapest_per_group(group: np.ndarray, cost: np.ndarray, k: int, cut: bool = True) -> np.ndarray:
    """Mask of the ``k`` lowest-cost members of every group (group -1 is ignored); ties go to
    the earlier loan, so the choice is reproducible."""
    out = np.zeros(len(group), dtype=bool)
    members = np.flatnonzero(group >= 0)
    if len(members) == 0 or k <= 0:
        return out
    if cut and len(members) > 64 * (1 << 10):
        # on a big day, a sample's k-th lowest cost per group is at least the group's own k-th
        # lowest: the loans at or below it hold the answer (ties included), and are few
        g = group[members]
        sg, sc = g[::32], cost[members[::32]]
        picked = _cheapest_per_group(sg, sc, k, cut=False)
        kth = np.full(int(g.max()) + 1, -np.inf)
        np.maximum.at(kth, sg[picked], sc[picked])
        counts = np.bincount(sg[picked], minlength=len(kth))
        kth[counts < k] = np.inf  # a group with fewer than k sampled loans: no cut
        keep = members[cost[members] <= kth[g]]
        sub = _cheapest_per_group(group[keep], cost[keep], k, cut=False)
        out[keep[sub]] = True
        return out
    g = group[members]
    small = int(g.max()) < (1 << 16) - 1
    order = np.argsort(g.astype(np.uint16) if small else g, kind="stable")  # radix sort when small
    g = g[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(g)) + 1, len(g)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx = members[order[a:b]]  # ascending loan index
        if len(idx) > k:
            c = cost[idx]
            kth = np.partition(c, k - 1)[k - 1]
            below = idx[c < kth]
            idx = np.concatenate([below, idx[c == kth][:k - len(below)]])
        out[idx] = True
    return out


def _end_to_end(inst: Instance, bins: np.ndarray, big: np.ndarray, P: np.ndarray):
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
    idx, b, lo, hi, starts = _end_to_end(inst, bins, big, P)
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
    idx, b, lo, hi, _ = _end_to_end(inst, bins, big, P)
    seg_hi = np.cumsum(T[b], axis=1)
    seg_lo = seg_hi - T[b]
    overlap = np.minimum(hi[:, None], seg_hi) - np.maximum(lo[:, None], seg_lo)
    return idx, (overlap > 1e-12) & (T[b] > 1e-9)


def _near_split(inst: Instance, bins: np.ndarray, split: np.ndarray, window: int) -> np.ndarray:
    """``split`` widened to the loans within ``window`` places (largest principal first) of a
    split loan in the same bin of ``bins``."""
    hit = np.unique(bins[split])
    idx = np.flatnonzero(np.isin(bins, hit))
    rank = _rank_within(bins[idx], -inst.principal[idx])
    width = int(rank.max()) + 2 * window + 2
    key = bins[idx] * width + rank + window  # positions shifted so that rank - window >= 0
    centre = key[split[idx]]
    near = np.unique((centre[:, None] + np.arange(-window, window + 1)[None, :]).ravel())
    out = split.copy()
    out[idx[np.isin(key, near)]] = True
    return out


def _rank_within(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    order = np.lexsort((key, group))
    g = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(group)) - first
    return rank


def inherit_basis(old: Problem, basis: Basis, x_old: np.ndarray, new: Problem, parent: np.ndarray,
                  R: int) -> Basis:
    """A starting basis for a refined LP: each child bin takes its parent's statuses.

    The first child of a parent keeps the parent's pattern; every other child gets exactly one
    basic column (the parent's largest route) so that the count of basics still matches the
    count of rows. Coupling rows and auxiliary columns keep their statuses (same order).
    """
    lookup = np.full((old.n_units, R), -1, dtype=np.int64)
    lookup[old.pair_unit, old.pair_route] = np.arange(old.n_pairs)
    U = new.n_units
    pu, pr = new.pair_unit, new.pair_route
    oc = lookup[parent[pu], pr]
    col = np.zeros(new.n_cols, dtype=np.int8)
    col[:new.n_pairs] = np.where(oc >= 0, basis.col[np.maximum(oc, 0)], 0)
    col[new.n_pairs:new.n_pairs + U] = basis.col[old.n_pairs + parent]
    col[new.n_pairs + U:] = basis.col[old.n_pairs + old.n_units:]
    row = np.empty(new.n_rows, dtype=np.int8)
    row[:U] = basis.row[parent]
    row[U:] = basis.row[old.n_units:]

    first = np.zeros(U, dtype=bool)
    _, idx = np.unique(parent, return_index=True)
    first[idx] = True
    extra = ~first
    if extra.any():
        T = np.zeros((old.n_units, R + 1))
        T[old.pair_unit, old.pair_route] = x_old[:old.n_pairs]
        T[:, R] = x_old[old.n_pairs:old.n_pairs + old.n_units]
        best = T[parent].argmax(axis=1)  # per new unit
        sel = extra[pu]
        col[:new.n_pairs][sel] = np.where(pr[sel] == best[pu[sel]], 1, 0)
        ucol = new.n_pairs + np.flatnonzero(extra)
        col[ucol] = np.where(best[extra] == R, 1, 0)
        row[:U][extra] = 0
    return Basis(col, row)


class Clock:
    def __init__(self, progress: Progress | None):
        self.timings: dict[str, float] = {}
        self.progress = progress
        self._t = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + (now - self._t)
        self._t = now

    def say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)


def restrict_obligor(inst: Instance, keep: np.ndarray) -> Instance:
    """The instance with only the obligor rows ``keep``: a relaxation of ``inst``.

    The loans of borrowers without a kept row lose their slot, so they aggregate freely again.
    """
    rows = [inst.obligor_rows[j] for j in keep]
    old = np.unique(np.array([o.slot for o in rows], dtype=np.int64))
    new_of = np.full(len(inst.obligor_borrowers) + 1, -1, dtype=np.int64)
    new_of[old] = np.arange(len(old))
    slot = new_of[inst.obligor_slot]  # -1 maps to the trailing -1
    return replace(inst, obligor_slot=slot, obligor_borrowers=tuple(inst.obligor_borrowers[k] for k in old),
                   obligor_rows=tuple(replace(o, slot=int(new_of[o.slot])) for o in rows))


def solve_instance(inst: Instance, options: PlanOptions = PlanOptions(),
                   progress: Progress | None = None, warm: WarmStart | None = None) -> Solved:
    """Plan a day: the LP over refined bins, a valid bound, whole loans.

    Obligor limits are lazy when there are many. A borrower's row needs the borrower's loans kept apart from everyone
    else's (classes of their own), and on a big day thousands of borrowers could bind, which would
    make most classes singletons and the LP several times larger. So the LP leaves out every
    obligor row (a relaxation: its bound stays valid for the whole day) except those a warm start
    found binding; the whole-loan plan is then checked against every row, and the loans of the
    few borrowers whose rows it breaks are placed again with those rows in the MIP.
    """
    # a few rows cost little: all of them from the start
    active = np.full(len(inst.obligor_rows), len(inst.obligor_rows) <= options.eager_obligor_rows)
    if inst.obligor_rows and warm is not None:
        index = {(inst.route_ids[o.route], o.borrower): j for j, o in enumerate(inst.obligor_rows)}
        for label in warm.obligor_active:
            if label in index:
                active[index[label]] = True
    sub = restrict_obligor(inst, np.flatnonzero(active)) if not active.all() else inst
    solved = _solve(sub, inst, options, progress, warm, active)
    labels = tuple((inst.route_ids[o.route], o.borrower) for o, a in zip(inst.obligor_rows, active) if a)
    return replace(solved, warm=replace(solved.warm, obligor_active=labels)) if solved.warm is not None else solved


def _solve(inst: Instance, full: Instance, options: PlanOptions, progress: Progress | None,
           warm: WarmStart | None, active: np.ndarray) -> Solved:
    """One solve of ``inst`` (``full`` with the obligor rows ``active`` only); ``full`` judges
    the whole-loan plan, and ``active`` gains the obligor rows the plan had to be fixed for."""
    clock = Clock(progress)
    start = time.perf_counter()
    backend = get_backend(options.solver)
    R = inst.R
    n = inst.n

    def remaining() -> float:
        return max(1.0, options.time_limit - (time.perf_counter() - start))

    if n == 0:
        return _empty(inst, backend)

    clock.say(f"aggregating {n:,} loans")
    cls, ncls, continuous = loan_classes(inst)
    cls_rep = np.zeros(ncls, dtype=np.int64)
    cls_rep[cls[::-1]] = np.arange(n)[::-1]
    reuse = (warm is not None and warm.route_ids == inst.route_ids and len(warm.cls) == n
             and np.array_equal(warm.cls, cls))
    if reuse:
        # same classes: start from the refined bins, and from the final basis if the LP is alike
        bins, nb = warm.bins, int(warm.bins.max()) + 1
    else:
        q = options.initial_bins if options.initial_bins is not None else (2 if n < 7_500_000 else 4)
        bins, nb = initial_bins(inst, cls, continuous, q)
    clock.lap("aggregate")

    best_lb = -np.inf
    eligible_principal = _eligible_principal(inst, cls, cls_rep)
    timed_out = False
    lp_sol = prob = None
    parent: np.ndarray | None = None
    it = 0
    stats: dict[str, float] = {"classes": ncls, "simplex_iterations": 0}

    def solve_lp(units: Units, parent: np.ndarray | None):
        new = formulate(inst, units)
        clock.lap("formulate")
        start = None
        if parent is not None and lp_sol is not None and lp_sol.basis is not None:
            start = inherit_basis(prob, lp_sol.basis, lp_sol.x, new, parent, R)
        elif lp_sol is None and reuse and warm.basis is not None and warm.shape == (new.n_rows, new.n_cols):
            start = warm.basis
        sol = backend.solve(new, SolveOptions(time_limit=remaining(), basis=start))
        clock.lap("lp")
        stats["simplex_iterations"] += sol.detail.get("iterations", 0)
        return new, sol

    while True:
        it += 1
        units = Units.build(inst, bins, nb)
        new_prob, new_sol = solve_lp(units, parent)
        solved = new_sol.x is not None and new_sol.row_dual is not None
        if lp_sol is not None and (not solved or new_sol.status == SolveStatus.TIME_LIMIT):
            # out of time mid-refinement: the last solved LP and its bound still stand
            bins, nb, units = prev_bins
            timed_out = True
            break
        if not solved:
            raise SolverError(f"the LP over {nb} bins ended with status {new_sol.status} "
                              f"({new_sol.detail.get('model_status')})")
        prob, lp_sol = new_prob, new_sol
        if lp_sol.status == SolveStatus.TIME_LIMIT:
            timed_out = True
        dual = arrange_duals(inst, prob, lp_sol.row_dual, lp_sol.x, cls_rep, eligible_principal)
        lb, cheapest = bin_bound(inst, dual, cls, bins, nb)
        best_lb = max(best_lb, lb)
        clock.lap("bound")
        ub = lp_sol.objective
        lp_gap = (ub - best_lb) / max(abs(ub), 1e-9)
        clock.say(f"refinement {it}: {nb:,} bins, LP {ub:,.2f}, bound {best_lb:,.2f}, gap {lp_gap:.2e}")
        lp_tol = options.lp_tolerance if options.lp_tolerance is not None else options.gap_tolerance / 10
        if lp_gap <= lp_tol or it >= options.max_refinements or timed_out:
            break
        new_bins, new_nb = combine_keys([bins, cheapest], n)
        if new_nb == nb:
            break
        parent = np.zeros(new_nb, dtype=np.int64)
        parent[new_bins] = bins
        prev_bins = (bins, nb, units)
        bins, nb = new_bins, new_nb
    stats.update({"refinements": it, "bins": nb, "lp_gap": float(lp_gap)})

    uncut = bins  # loans next to a split point in a bin are alike
    T = _unit_fractions(prob, lp_sol.x, R)
    lp_duals = prob.rows.copy()
    lp_duals["dual"] = lp_sol.row_dual
    lp_duals["activity"] = prob.A @ lp_sol.x
    lp_duals = lp_duals[lp_duals["kind"] != RowKind.ASSIGN.value].reset_index(drop=True)
    totals_lp = lp_sol.x[prob.total_col]
    split = T.max(axis=1) < 1 - 1e-9
    loan_split = split[bins]
    loan_route = T.argmax(axis=1)[bins]  # the LP's route per loan (a split bin's loans: its largest share)
    bin_support = T[:, :R] > 1e-9  # the routes the LP gives each bin (a loan: its bin's)
    sums = FixedSums(inst, cls, n >= options.fixed_table_loans)  # the MIPs' fixed loans per (class, route)
    stats["split_bins"] = int(split.sum())
    free_support = bin_support[bins[loan_split]]
    crash = None
    if options.split_lp and loan_split.sum() > options.split_window and not timed_out:
        crash = _split_crash(inst, bins, split, T, units.P, prob, lp_sol.basis)
        big = split & (units.count > options.free_unit_size)
        if big.any() and units.count[split].sum() > options.max_split_loans:
            # too many loans in split bins to take one by one: cut the big ones into chunks first
            res = _chunk_lps(inst, bins, big, T, units.P, loan_route, loan_split, bin_support, sums, options,
                             backend, remaining, clock, stats)
            if res is not None:
                loan_route, loan_split, free_support, crash = res
    if crash is not None:
        # the split bins' (or chunks') loans one by one: few of them stay fractional
        res = _split_lp(inst, loan_route, loan_split, sums, free_support, backend, remaining(), clock, crash)
        clock.lap("lp")
        if res is not None:
            loan_route, loan_split, _ = res  # the support stays the bin's: neighbours may trade into it
    fractional = loan_split  # the start of the first MIP leaves only these unfunded
    lp_route = loan_route
    # the LP leaves loans unfunded that some funder could take: money is short, the unfunded
    # penalty prices the binding rows, and each unit of slack whole loans leave in them costs
    # much; a warm re-solve then polishes the first MIP's plan before the rounds
    short = bool(((lp_route == R) & ~fractional & inst.elig.any(axis=1)).any())
    if options.split_window and loan_split.any():
        # the loans next to a fractional one by principal in the same bin are alike: free too,
        # so whole loans can trade
        loan_split = _near_split(inst, uncut, loan_split, options.split_window)
    stats.update({"split_loans": int(loan_split.sum()), "lp_objective": float(lp_sol.objective)})
    clock.say(f"whole loans: {int(split.sum())} split bins, {int(loan_split.sum())} loans to place")

    # Whole loans. Free: every fractional loan and its neighbours, and the loans that are cheapest
    # to move at the LP prices (small loans nearly indifferent between two routes): when whole
    # loans cannot fill a binding limit exactly, those are what the MIP trades to close the gap.
    # per route (and among the unfunded), the loans there that are cheapest to move make room;
    # when a round misses the target, the next frees twice as many, starting from its plan
    # each loan's cheapest and runner-up options at the last refinement's prices: for the free
    # loans of a round, and (one pass over every loan) once a round frees a neighbourhood
    pricing: Pricing | None = None
    # the MIPs aim at half the gap tolerance; the rounds stop once a plan is within accept_fraction of it
    target = best_lb + abs(best_lb) * options.gap_tolerance / 2
    good_enough = best_lb + abs(best_lb) * options.gap_tolerance * options.accept_fraction
    mip_status = SolveStatus.OPTIMAL
    # ``current`` is the plan the rounds build on (the LP's rounding, then each round's result);
    # ``best`` is the cheapest whole-loan plan known, which may be the warm start's
    current, current_obj = loan_route, np.inf
    best, best_obj = current, np.inf
    # a warm start's whole-loan plan is an incumbent when it still holds every limit of this day;
    # when it is already within the gap tolerance of this day's bound, no MIP is needed at all
    if warm is not None and warm.route_ids == inst.route_ids:
        for candidate in (warm.route, *warm.incumbents):
            if len(candidate) != n:
                continue
            ev = evaluate(full, candidate)
            if not (ev["hard"] & (ev["excess"] > ENGINE_TOL)).any():
                obj = whole_objective(inst, candidate)
                if obj < best_obj:
                    best, best_obj = candidate, obj
                    stats["warm_objective"] = best_obj
    # the same LP optimum and no better plan than the warm start's: the solve that made it
    # already searched this problem (a what-if that changed a limit that does not bind, the
    # points of a sweep past where the limit binds), and its rounds would only repeat that search
    settled = (warm is not None and np.isfinite(warm.objective)
               and best_obj <= warm.objective + 1e-10 * max(abs(warm.objective), 1.0)  # (summation order)
               and abs(lp_sol.objective - warm.lp_objective) <= 1e-12 * max(abs(warm.lp_objective), 1.0))
    if settled:
        stats["settled_by_warm_start"] = 1
    mip_left = options.mip_time_limit
    # the MIPs see the active obligor rows only; a plan that breaks another one is no incumbent:
    # its rows join the MIP's instance, and the next round places those borrowers' loans again
    mip_inst = inst
    pending = np.zeros(n, dtype=bool)

    def obligor_broken(plan: np.ndarray) -> bool:
        nonlocal mip_inst, pending
        if not full.obligor_rows:
            return False
        broken = _broken_obligor(full, plan)
        if len(broken) == 0:
            return False
        clock.say(f"{len(broken):,} obligor rows broken: placing those borrowers' loans again")
        active[broken] = True
        mip_inst = restrict_obligor(full, np.flatnonzero(active))
        slots = np.unique(np.array([full.obligor_rows[j].slot for j in broken], dtype=np.int64))
        pending = np.isin(full.obligor_slot, slots)
        return True

    row_model: RowModel | None = None

    def polished(plan: np.ndarray, obj: float) -> tuple[np.ndarray, float]:
        """The slack whole loans leave in the binding rows, filled by single and paired moves of
        small loans: the subset-sum part of rounding, which branch and bound is slow at."""
        nonlocal row_model
        if not (options.polish and warm is not None and np.isfinite(obj) and obj > good_enough):
            return plan, obj
        if row_model is None:
            row_model = RowModel.build(full)
        new, moved = polish(full, plan, row_model)
        clock.lap("polish")
        new_obj = whole_objective(inst, new) if moved else obj
        if new_obj < obj:
            stats["polished_loans"] = stats.get("polished_loans", 0) + moved
            return new, new_obj
        return plan, obj

    # (warm: the MIP over the fractional loans alone seldom improves after its first 0.2 s; its
    # plan then goes to the polish and the rounds)
    fractional_time = options.warm_fractional_time if warm is not None else options.fractional_time
    alone_failed = False  # the fractional loans alone could not be placed
    if fractional.any() and best_obj > good_enough and not settled:
        # (a warm start's plan, when it is not good enough, is no better a start than this)
        # first the fractional loans alone, over every route they are eligible for, every other
        # loan where the split LP put it: a tiny MIP whose plan is often within the tolerance
        # already, and otherwise the incumbent the first round starts from
        trial = np.where(fractional, -1, loan_route)
        first, spent, obj = _place_split_loans(inst, trial, sums, None, backend, options,
                                               min(fractional_time, mip_left), clock, target,
                                               np.where(fractional, R, loan_route))
        mip_left -= spent
        alone_failed = not np.isfinite(obj)
        if alone_failed and warm is not None:
            # leaving the fractional loans unfunded broke a row: a concentration or a weighted-
            # average test, which loans outside a segment or beyond a threshold keep. For a
            # warm re-solve, whose rounds are short, the repair frees the fewest loans that mend
            # it; those join the fractional loans, and the MIP starts from the repaired plan,
            # near the LP. (Cold, the wide first round below finds better plans from scratch.)
            unfunded = np.where(fractional, R, loan_route)
            start_plan, _, _ = repair(inst, unfunded)
            trial = np.where(fractional | (start_plan != unfunded), -1, loan_route)
            first, spent, obj = _place_split_loans(inst, trial, sums, None, backend, options,
                                                   min(fractional_time, mip_left), clock, target,
                                                   start_plan)
            mip_left -= spent
            alone_failed = not np.isfinite(obj)
        clock.lap("mip")
        if np.isfinite(obj):
            current, current_obj = first, obj
            if obligor_broken(current):
                current_obj = np.inf
            else:
                if short:
                    # (only then: otherwise the first round's MIP, which starts from this plan,
                    # does what the polish would; see the README on the what-if suite)
                    current, current_obj = polished(current, current_obj)
                if current_obj < best_obj:
                    best, best_obj = current, current_obj
    k = options.first_neighbourhood  # the first round frees the loans of split bins and a few more
    if alone_failed:
        # no whole-loan plan moves only the fractional loans (every other loan fills the binding
        # limits exactly): the first round also frees the loans cheapest to move on every route
        # many loans free and a plan far off: that round looks for a feasible plan, which the
        # refill then completes, so it is kept short
        k = max(k, options.neighbourhood_per_route)
        first_budget = options.fractional_time
    else:
        first_budget = options.first_round_time
    # ``mip_time_limit`` is solver time: on a big day, building each round's MIP costs seconds
    # that should not starve the solver; the plan's ``time_limit`` still bounds the whole solve
    overall_end = start + options.time_limit
    rounds = 0
    round_cap = options.warm_round_time if warm is not None else np.inf
    refill_options = (replace(options, refill_loans=min(options.refill_loans, options.warm_refill_loans))
                      if warm is not None else options)
    refilled = np.nan  # the objective of the last refill's plan
    while (best_obj > good_enough and not settled and rounds < options.neighbourhood_rounds and mip_left > 1e-3
           and time.perf_counter() < overall_end):
        # after an obligor fix only those borrowers' loans move (plus the neighbourhood)
        free = loan_split
        if warm is not None:
            # a warm re-solve's plan drifts from the LP in the rounds; the loans off their LP
            # route are free too, so the MIP's relaxation is the LP's again (cold, the wide first
            # round moves many loans, and freeing them all makes the next rounds slow)
            free = free | (current != lp_route)
        route = np.where(pending if pending.any() else free, -1, current)
        if k and not pending.any():
            if pricing is None:
                pricing = lagrangian(inst, dual, cls)[1]
            cand = ~loan_split & (pricing.second < R)
            if not cand.any() and rounds:
                break  # no loan has anywhere else to go: a round would free the same loans again
            route[_cheapest_per_group(np.where(cand, current, -1), pricing.move_cost, k)] = -1
        # each free loan may take its bin's LP routes, its current one and its two cheapest at
        # the LP prices (a loan of a borrower placed again: any)
        free_idx = np.flatnonzero(route < 0)
        allowed = bin_support[bins[free_idx]]
        on = current[free_idx]
        allowed[np.arange(len(free_idx)), np.minimum(on, R - 1)] |= on < R
        free_pricing = lagrangian(inst, dual, cls, free_idx)[1]
        for pick in (free_pricing.best, free_pricing.second):
            ok = pick < R
            allowed[np.flatnonzero(ok), pick[ok]] = True
        allowed[pending[free_idx]] = True
        allowed &= inst.elig[free_idx]
        stats["free_loans"] = int((route < 0).sum())
        if pending.any():
            mip_start = np.where(pending, R, current)
        else:
            # without a plan yet, the LP's whole bins with the split loans unfunded: often feasible,
            # and HiGHS drops a start that is not
            mip_start = current if np.isfinite(current_obj) else (
                warm.route if reuse else np.where(fractional, R, current))
        budget = min(first_budget if rounds == 0 else options.mip_round_time, mip_left, round_cap,
                     max(0.0, overall_end - time.perf_counter()))
        new_route, spent, obj = _place_split_loans(mip_inst, route, sums, allowed, backend, options, budget,
                                                   clock, target, mip_start)
        mip_left -= spent
        if obj < current_obj or pending.any():
            current, current_obj = new_route, obj
        rounds += 1
        clock.lap("mip")
        if np.isfinite(current_obj) and current_obj > good_enough and (warm is None or current_obj != refilled):
            # (warm: a plan the last refill already started from would give the same MIP again)
            current, current_obj = _refill(mip_inst, current, current_obj, sums, backend, refill_options, clock,
                                           target, min(options.refill_time_limit, remaining(), round_cap), stats)
            refilled = current_obj
            clock.lap("refill")
        pending[:] = False
        if np.isfinite(current_obj) and obligor_broken(current):
            current_obj = np.inf
            continue
        current, current_obj = polished(current, current_obj)
        if current_obj < best_obj:
            best, best_obj = current, current_obj
        elif rounds > 1 and warm is not None:
            # a warm re-solve stops at a round that finds nothing better: a wider one seldom
            # does, and an analyst waits on it (cold, the next, wider round often gets there)
            break
        k = max(2 * k, options.neighbourhood_per_route)
    stats["neighbourhood_rounds"] = rounds
    if rounds == 0 and not settled and np.isfinite(best_obj):
        best, best_obj = polished(best, best_obj)
    if best_obj > best_lb + abs(best_lb) * options.gap_tolerance and (mip_left <= 1e-3
                                                                      or time.perf_counter() >= overall_end):
        mip_status = SolveStatus.TIME_LIMIT
    route = best if np.isfinite(best_obj) else current

    if full.obligor_rows:
        route = _enforce_obligor(full, active, route, sums, backend, options, clock, target, stats,
                                 min(options.refill_time_limit, remaining()))
    route, moved, evaluation = repair(full, route)
    stats["repaired_loans"] = moved
    clock.lap("repair")

    status = "time_limit" if (timed_out or mip_status == SolveStatus.TIME_LIMIT) else "solved"
    warm_out = WarmStart(inst.route_ids, cls, bins, lp_sol.basis, (prob.n_rows, prob.n_cols), route)
    return Solved(warm=warm_out, route=route, evaluation=evaluation, lower_bound=float(best_lb), lp_objective=float(lp_sol.objective),
                  lp_duals=lp_duals, totals_lp=totals_lp, status=status, solver=backend.name,
                  solver_version=backend.version(), timings=clock.timings, stats=stats)


def _broken_obligor(full: Instance, route: np.ndarray) -> np.ndarray:
    """Indices of the obligor rows of ``full`` that ``route`` breaks."""
    limit = np.array([o.limit for o in full.obligor_rows], dtype=float)
    return np.flatnonzero(obligor_values(full, route) - limit > ENGINE_TOL)


def _enforce_obligor(full: Instance, active: np.ndarray, route: np.ndarray, sums: FixedSums, backend,
                     options: PlanOptions, clock: Clock, target: float, stats: dict,
                     time_left: float) -> np.ndarray:
    """Place again the loans of every borrower whose obligor row the plan breaks, with the rows.

    Each round adds the broken rows to ``active`` and solves a small MIP: those borrowers' loans
    free over all their eligible routes, every other loan where it is (aggregated by class, route
    and now obligor slot), every active row present. Whatever is still broken after
    ``obligor_rounds`` rounds is left to the repair step.
    """
    deadline = time.perf_counter() + time_left
    fixed_rounds = 0
    for _ in range(options.obligor_rounds):
        broken = _broken_obligor(full, route)
        if len(broken) == 0 or time.perf_counter() >= deadline:
            break
        clock.say(f"{len(broken):,} obligor rows broken: placing those borrowers' loans again")
        active[broken] = True
        sub = restrict_obligor(full, np.flatnonzero(active))
        slots = np.unique(np.array([full.obligor_rows[j].slot for j in broken], dtype=np.int64))
        free = np.isin(full.obligor_slot, slots)
        trial = np.where(free, -1, route)
        # those loans unfunded is a feasible start: it only lowers every obligor row
        new_route, _, obj = _place_split_loans(sub, trial, sums, None, backend, options,
                                               deadline - time.perf_counter(), clock, target,
                                               np.where(free, full.R, route))
        fixed_rounds += 1
        if not np.isfinite(obj):
            break
        route = new_route
    clock.lap("obligor")
    stats.update({"obligor_rows": int(active.sum()), "obligor_rows_all": len(full.obligor_rows),
                  "obligor_rounds": fixed_rounds})
    return route


def _refill(inst: Instance, current: np.ndarray, current_obj: float, sums: FixedSums, backend,
            options: PlanOptions, clock: Clock, target: float, time_left: float,
            stats: dict) -> tuple[np.ndarray, float]:
    """Fund what whole loans left unfunded, in the slack they left behind.

    A plan cut short may leave loans unfunded that the LP funded; with every other loan fixed,
    placing them (the smallest first) is a small knapsack MIP that starts from ``current``.
    """
    R = inst.R
    unf = np.flatnonzero((current == R) & inst.elig.any(axis=1))
    if len(unf) == 0:
        return current, current_obj
    unf = unf[np.argsort(inst.principal[unf], kind="stable")[:options.refill_loans]]
    route = current.copy()
    route[unf] = -1
    new_route, _, obj = _place_split_loans(inst, route, sums, None, backend, options, time_left,
                                           clock, target, current)
    stats["refill_loans"] = stats.get("refill_loans", 0) + len(unf)
    if obj < current_obj - 1e-9:
        stats["refilled"] = stats.get("refilled", 0) + int(((current == R) & (new_route < R)).sum())
        return new_route, obj
    return current, current_obj


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
    small anyway (``fits``); otherwise ``_restricted`` sums the fixed loans directly.
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


def _restricted(inst: Instance, route: np.ndarray, sums: FixedSums, loan_allowed: np.ndarray | None,
                integer: bool, free_group: np.ndarray | None = None):
    """The model with free loans (route -1) over their allowed routes, one unit each (or one per
    ``free_group``: a dense id per free loan, in index order), and every other loan fixed where
    it is, aggregated by (class, route) and moved into the row bounds.

    ``loan_allowed``: the free units' allowed routes (one row each), or None for every route
    they are eligible for. Returns the full problem, the small one HiGHS sees, the kept columns,
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


def _chunk_lps(inst: Instance, bins: np.ndarray, big: np.ndarray, T: np.ndarray, P: np.ndarray,
               loan_route: np.ndarray, loan_split: np.ndarray, bin_support: np.ndarray, sums: FixedSums,
               options: PlanOptions, backend, remaining: Callable[[], float], clock: Clock, stats: dict):
    """Cut the big split bins into chunks until the split ones hold few loans.

    Each bin in ``big`` is cut where the LP's route fractions fall on its loans laid end to end
    (:func:`_cut_at_fractions`): a chunk per route and a single loan at each boundary. An LP over
    the chunks of the split bins (every other bin fixed where the bin LP put it, in the row
    bounds) is small, and the bin LP's solution is feasible for it (every chunk taking its bin's
    fractions gives the bin's sums), so its objective can only fall. Its split chunks are cut
    again while they hold more than ``max_split_loans`` loans. Returns the route per loan, the
    loans of split chunks, their routes (one row per such loan) and the split LP's crash, or
    None when an LP does not solve in time.
    """
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
        prob, small, keep, xf, units, _, fk_n, _ = _restricted(inst, route, sums, bin_support[bins[rep]],
                                                                 integer=False, free_group=gid)
        sol = backend.solve(small, SolveOptions(time_limit=remaining()))
        stats["simplex_iterations"] += sol.detail.get("iterations", 0)
        stats["cuts"] = stats.get("cuts", 0) + 1
        if sol.x is None or sol.status != SolveStatus.OPTIMAL or sol.basis is None:
            return None
        x = xf.copy()
        x[keep] = sol.x
        Tg = _unit_fractions(prob, x, R)[fk_n:]
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


def _split_lp(inst: Instance, route: np.ndarray, free: np.ndarray, sums: FixedSums, free_support: np.ndarray,
              backend, time_left: float, clock: Clock, crash=None):
    """The LP over the loans of split bins, one loan per unit, every other loan where it is.

    A bin the LP splits holds loans that differ a little in principal, life and score; taken one
    by one, a basic solution of this LP splits at most as many loans as there are binding
    coupling rows, whatever the size of the bins. Each loan may use the routes its bin used, so
    the bin LP's solution (every loan taking its bin's fractions) is feasible here: the
    objective can only fall, and the bound is untouched. Returns the route per loan (fractional
    loans: their largest share), the mask of fractional loans and the LP objective, or None when
    the LP does not solve in time.
    """
    R = inst.R
    trial = np.where(free, -1, route)
    prob, small, keep, xf, units, _, fk_n, free_idx = _restricted(inst, trial, sums, free_support,
                                                                  integer=False)
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
    sol = backend.solve(small, SolveOptions(time_limit=max(0.0, time_left), basis=start))
    if sol.x is None or sol.status != SolveStatus.OPTIMAL:
        return None
    x = xf.copy()
    x[keep] = sol.x
    T = _unit_fractions(prob, x, R)[fk_n:]
    out = route.copy()
    out[free_idx] = T.argmax(axis=1)
    frac = np.zeros(inst.n, dtype=bool)
    frac[free_idx] = T.max(axis=1) < 1 - 1e-9
    clock.say(f"split bins' {len(free_idx):,} loans one by one: {int(frac.sum())} fractional, "
              f"LP {sol.objective:,.2f}")
    return out, frac, float(sol.objective)


def _place_split_loans(inst: Instance, route: np.ndarray, sums: FixedSums, loan_allowed: np.ndarray | None,
                       backend, options: PlanOptions, time_left: float, clock: Clock,
                       target: float, start_route: np.ndarray | None) -> tuple[np.ndarray, float, float]:
    """Whole-loan MIP: free loans (route -1) are binary over their allowed routes; every other
    loan keeps its route and is aggregated by (class, route), so the MIP stays small.

    ``start_route`` (optional): a feasible whole-loan assignment to start from.
    Returns the assignment, the solver's seconds and the MIP objective (inf when none was found).
    """
    R = inst.R
    free = route < 0
    prob, small, keep, xf, units, unit_route, fk_n, free_idx = _restricted(inst, route, sums, loan_allowed,
                                                                           integer=True)
    start = None
    if start_route is not None:
        unit_route = unit_route.copy()
        unit_route[fk_n:] = start_route[free_idx]
        start = _assignment_vector(inst, prob, units, unit_route)[keep]
    rel_gap = options.mip_rel_gap if options.mip_rel_gap is not None else options.gap_tolerance / 10
    sol = backend.solve(small, SolveOptions(time_limit=max(0.0, time_left), mip_rel_gap=rel_gap,
                                            objective_target=target, start=start))
    clock.say(f"whole-loan MIP over {len(free_idx):,} loans: {sol.status}, objective {sol.objective:,.2f}")
    if sol.x is None:
        out = route.copy()
        out[free] = R if start_route is None else start_route[free]
        return out, sol.seconds, np.inf
    full = xf.copy()
    full[keep] = sol.x
    T = _unit_fractions(prob, full, R)
    choice = T[fk_n:].argmax(axis=1)
    chosen = T[fk_n:][np.arange(len(free_idx)), choice] > 0.5
    out = route.copy()
    out[free_idx] = np.where(chosen, choice, R)
    return out, sol.seconds, float(sol.objective)


def _assignment_vector(inst: Instance, prob: Problem, units: Units, unit_route: np.ndarray) -> np.ndarray:
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
    return x


def _empty(inst: Instance, backend) -> Solved:
    return Solved(route=np.zeros(0, dtype=np.int64), evaluation=None, lower_bound=0.0, lp_objective=0.0,
                  lp_duals=pd.DataFrame(columns=["kind", "route", "ref", "label", "dual", "activity"]),
                  totals_lp=np.zeros(inst.R - 1), status="solved", solver=backend.name,
                  solver_version=backend.version(), timings={}, stats={})
