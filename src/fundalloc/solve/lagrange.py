"""LP row duals turned into loan-level prices: the Lagrangian bound and each loan's reduced costs.

For any sign-feasible row duals ``y`` of the coupling rows, relaxing those rows leaves one
problem per loan (take the option of least reduced cost), so

    LB(y) = sum_rows y_k b_k + sum_i p_i min(penalty, min_f rc_if(y)) + sum_aux min(d_j lo_j, d_j hi_j)

is a valid lower bound on every plan, whole-loan or fractional. A loan's reduced cost per unit
of principal is linear in its life and its weighted-average fields, so it is priced from a per
class part and outer products, one cache-sized block of loans at a time.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..formulation import Problem, RowKind
from ..instance import COUNT_FIELD, VALUE_FIELD, Instance, bid_field, measure_field

# loan-by-loan pricing of at least this many loans runs on up to WORKERS threads; the total adds
# the blocks' terms in block order, so it does not depend on the threads
PARALLEL_LOANS = 1 << 17
WORKERS = min(2, os.cpu_count() or 1)


@dataclass(frozen=True, eq=False)
class Dual:
    """Row duals arranged for the loan-level Lagrangian."""

    const: float  # sum_k y_k b_k plus the auxiliary columns' terms
    base: np.ndarray  # classes x R: per-unit reduced cost not depending on life or fields
    life_coef: np.ndarray  # R, or classes x R where a rate grid prices by the loan
    field_coef: dict[str, np.ndarray]  # field -> R + 1 (routes, then unfunded), or classes x (R + 1)
    unfunded: np.ndarray | float = 0.0  # per class (or one for all): the unfunded penalty per unit

    def with_unfunded(self) -> np.ndarray:
        """``base`` with the unfunded option as a last column."""
        pen = np.broadcast_to(np.asarray(self.unfunded, dtype=float), (self.base.shape[0],))
        return np.concatenate([self.base, pen[:, None]], axis=1)


@dataclass(frozen=True, eq=False)
class Pricing:
    """Each loan's cheapest option and runner-up at the LP prices (R = unfunded)."""

    best: np.ndarray
    second: np.ndarray
    move_cost: np.ndarray  # (rc_second - rc_best) * principal: what moving the loan costs


def eligible_principal(inst: Instance, cls: np.ndarray, cls_rep: np.ndarray) -> np.ndarray:
    """Per funder route, the principal of the loans eligible for it, from the classes' principal
    (a class's loans share their eligibility)."""
    per_class = np.bincount(cls, weights=inst.principal, minlength=len(cls_rep))
    return per_class @ inst.elig[cls_rep, :inst.R - 1]


def arrange_duals(inst: Instance, prob: Problem, y: np.ndarray, cls_rep: np.ndarray,
                  eligible: np.ndarray) -> Dual:
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
    hi[:F] = np.minimum(hi[:F], inst.share[:F] * eligible)
    const += float(np.sum(np.minimum(d * prob.col_lo[aux], d * hi)))

    ncls = len(cls_rep)
    K1, base = inst.rate_matrix(cls_rep, priced=False)  # (a class's loans share their tier on a graded route)
    field_coef = {k: np.zeros(R + 1) for k in inst.fields}  # (routes, then unfunded)
    for r in inst.bid_routes:  # a bid: - s q_i per unit of principal on its route
        field_coef[bid_field(inst.route_ids[r])][r] = -inst.share[r]
    if inst.loan_penalty is not None:  # a loan's own value: its cost unfunded
        field_coef[VALUE_FIELD][R] = 1.0
    if COUNT_FIELD in inst.fields:  # shares of the count: one per loan, per class (segments differ)
        field_coef[COUNT_FIELD] = np.zeros((ncls, R + 1))
    s = inst.share
    for i in np.flatnonzero(not_assign & (y != 0)):
        k, r, j, yi = kind[i], route[i], ref[i], y[i]
        if k == RowKind.TOTAL.value:
            base[:, r] -= yi * s[r]
        elif k == RowKind.COUNT_TOTAL.value:  # each loan at r counts one
            field_coef[COUNT_FIELD][:, r] -= yi
        elif k in (RowKind.DAILY_MAX.value, RowKind.FACILITY_HEADROOM.value) and r in inst.measured:
            field_coef[measure_field(inst.route_ids[r])][r] -= yi * s[r]  # its loans' measured amounts
        elif k == RowKind.PLATFORM_CAPACITY.value:
            base -= yi * inst.platform_share[None, :]
        elif k == RowKind.GROUP_CONCENTRATION.value:  # its segment part (the totals' through A_f)
            gc, _, code = inst.group_segments[j]
            inside = gc.member_code(cls_rep) == code
            for m in gc.members:
                if gc.counts:
                    field_coef[COUNT_FIELD][inside, m] -= yi
                else:
                    base[inside, m] -= yi * s[m]
        elif k in ("group_weighted_average_min", "group_weighted_average_max"):
            t = inst.group_wa[j]
            for m in t.members:
                field_coef[t.field][m] -= yi * s[m] * t.sign
                base[:, m] += yi * s[m] * t.sign * t.bound
        elif k == RowKind.FUNDED.value:  # its platform-route part (funders' enter through A_f)
            base[:, inst.platform_route] += yi
        elif k == RowKind.CONCENTRATION.value:
            fam, seg = inst.segment_of(j)
            member = fam.member_code(cls_rep)
            code = 0 if fam.per_codes is None else seg.code
            if fam.counts:
                field_coef[COUNT_FIELD][member == code, r] -= yi
            else:
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
    return Dual(const, base, K1 if inst.tier else inst.k1.copy(), field_coef,
                0.0 if inst.loan_penalty is not None else float(inst.penalty))


def _with_unfunded(coef: np.ndarray) -> np.ndarray:
    """A coefficient per route (or per class and route) with a zero for unfunded appended."""
    return np.concatenate([coef, np.zeros(coef.shape[:-1] + (1,))], axis=-1)


def _per_bin(coef: np.ndarray) -> np.ndarray:
    """A coefficient per route broadcast over the bins (one already per bin stays)."""
    return coef if coef.ndim == 2 else coef[None, :]


def lagrangian(inst: Instance, dual: Dual, cls: np.ndarray, idx: np.ndarray | None = None,
               chunk: int = 1 << 13) -> tuple[float, Pricing]:
    """Loan-level Lagrangian terms, and each loan's cheapest option and runner-up.

    Over the loans ``idx`` (default all): the returned total is ``dual.const`` plus their terms,
    the pricing arrays are indexed like ``idx``. Reduced costs per unit of principal are built as
    one (loans x routes+1) block per chunk: the class part is a gather, life and fields enter as
    outer products. Chunks are small enough for a block to stay in cache, and on a big day two
    threads take them in turn (numpy releases the GIL in each step).
    """
    idx = np.arange(inst.n) if idx is None else idx
    m = len(idx)
    best_route = np.empty(m, dtype=np.int64)
    second_route = np.empty(m, dtype=np.int64)
    move_cost = np.empty(m)
    base = dual.with_unfunded()
    life_coef = _with_unfunded(dual.life_coef)
    fields = [(inst.fields[k], c) for k, c in dual.field_coef.items() if c.any()]  # (c: per route, or per class)

    def price(start: int) -> float:
        sl = slice(start, min(m, start + chunk))
        loans = idx[sl]
        p = inst.principal[loans]
        rc = base[cls[loans]]
        rc += inst.life[loans, None] * (life_coef[cls[loans]] if life_coef.ndim == 2 else life_coef[None, :])
        for values, coef in fields:
            rc += np.nan_to_num(values[loans])[:, None] * (coef[cls[loans]] if coef.ndim == 2 else coef[None, :])
        rows = np.arange(rc.shape[0])
        arg = rc.argmin(axis=1)
        best = rc[rows, arg]
        rc[rows, arg] = np.inf
        arg2 = rc.argmin(axis=1)
        second = rc[rows, arg2]
        best_route[sl] = arg
        second_route[sl] = arg2
        move_cost[sl] = (np.minimum(second, inst.penalty_of(loans)) - best) * p
        return float(np.dot(p, best))

    starts = range(0, m, chunk)
    if m >= PARALLEL_LOANS and WORKERS > 1:
        with ThreadPoolExecutor(WORKERS) as pool:
            terms = list(pool.map(price, starts))
    else:
        terms = [price(a) for a in starts]
    total = dual.const + math.fsum(terms)
    return total, Pricing(best_route, second_route, move_cost)


def unit_reduced_costs(inst: Instance, dual: Dual, cls: np.ndarray, loans: np.ndarray) -> np.ndarray:
    """``len(loans) x (R+1)``: each loan's reduced cost per unit of principal on every route
    (inf where not eligible) and unfunded (the penalty)."""
    base = dual.with_unfunded()
    rc = base[cls[loans]]
    lc = _with_unfunded(dual.life_coef)
    rc = rc + inst.life[loans, None] * (lc[cls[loans]] if lc.ndim == 2 else lc[None, :])
    for k, c in dual.field_coef.items():
        if c.any():
            rc += np.nan_to_num(inst.fields[k][loans])[:, None] * (c[cls[loans]] if c.ndim == 2 else c[None, :])
    return rc


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
    base = dual.with_unfunded()
    bin_cls = np.zeros(nb, dtype=np.int64)
    bin_cls[bins] = cls
    lc = _with_unfunded(dual.life_coef)
    dims = [(inst.life, lc[bin_cls] if lc.ndim == 2 else lc)]
    dims += [(np.nan_to_num(inst.fields[k]), c[bin_cls] if c.ndim == 2 else c)
             for k, c in dual.field_coef.items() if c.any()]
    p = inst.principal
    rc0 = base[bin_cls]  # nb x (R+1)
    corners: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (lo, hi, coef) of varying dims
    lin = np.zeros((nb, R + 1))  # sum_i p_i coef . z_i per bin, route
    for values, coef in dims:
        lo = np.full(nb, np.inf)
        hi = np.full(nb, -np.inf)
        np.minimum.at(lo, bins, values)
        np.maximum.at(hi, bins, values)
        lin += np.bincount(bins, weights=p * values, minlength=nb)[:, None] * _per_bin(coef)
        if np.array_equal(lo, hi):
            rc0 = rc0 + lo[:, None] * _per_bin(coef)
        else:
            corners.append((lo, hi, coef))
    arg = rc0.argmin(axis=1) if not corners else None
    agree = np.ones(nb, dtype=bool)
    for mask in range(1 << len(corners)):
        rc = rc0.copy()
        for d, (lo, hi, coef) in enumerate(corners):
            rc += np.where(mask >> d & 1, hi, lo)[:, None] * _per_bin(coef)
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
