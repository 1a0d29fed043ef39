"""The allocation LP/MIP as arrays. A pure function of the instance and the units; no solver here.

A *unit* is a set of loans that the problem treats alike: an aggregated bin of interchangeable
loans in the LP, a single loan in the whole-loan MIP. Every unit carries sums over its loans
(principal ``P``, principal x life ``PL``, principal x field ``PW``), and a representative loan
whose class attributes (eligibility, segment, obligor slot) all its loans share. Because every
coefficient of the model is linear in principal, the unit LP is exactly the loan-level LP
restricted to giving every loan of a unit the same route fractions.

Variables (columns), in this order:

- ``t[u, f]`` in [0, 1]: the fraction of unit ``u``'s principal routed to ``f`` (only eligible
  pairs exist; sparsity is built from the eligibility masks, never a dense grid);
- ``t[u, unfunded]`` in [0, 1];
- ``A[f]`` >= 0: funder ``f``'s total funder amount today (one per funder);
- ``z[f]`` in [0, daily_min]: shortfall below a soft daily minimum;
- ``h[f]`` in [0, daily_min_hard]: shortfall below a hard minimum, priced at the instance's
  ``hard_fee``, an exact penalty (a plan pays it only when no plan meets the minimum: the solve
  then reports the conflicting rows instead of a plan);
- ``D`` >= 0: the day's funded principal, present only when a share-of-day limit needs it;
- ``N[f]`` >= 0: the number of loans at ``f``, for a funder whose shares count loans;
- ``y[f]`` in [0, 1]: whether funder ``f`` is used, for a funder with ``min_if_used`` or
  ``fixed_cost`` (continuous here: the LP is the relaxation of the use decisions, which
  :mod:`fundalloc.solve.uses` takes one pattern at a time).

Rows are built one family at a time; each family's docstring carries its inequality.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .instance import VALUE_FIELD, Instance, bid_field, measure_field


class RowKind(StrEnum):
    ASSIGN = "assign"
    TOTAL = "total"
    DAILY_MAX = "daily_max"
    FACILITY_HEADROOM = "facility_headroom"
    DAILY_MIN = "daily_min"
    DAILY_MIN_HARD = "daily_min_hard"
    CONCENTRATION = "concentration"
    WA_MIN = "weighted_average_min"
    WA_MAX = "weighted_average_max"
    OBLIGOR = "obligor"
    PLATFORM_CAPACITY = "platform_capacity"
    FUNDED = "funded"
    FUNDER_SHARE = "funder_share"
    GROUP_SHARE = "group_share"
    GROUP_MAX = "group_max"
    GROUP_CONCENTRATION = "group_concentration"
    USE_MIN = "use_min"
    COUNT_TOTAL = "count_total"
    GROUP_WA = "group_weighted_average"
    USE_CAP = "use_cap"


@dataclass(frozen=True, eq=False)
class Units:
    """Aggregated loans: per-unit sums and the loan -> unit map."""

    loan_unit: np.ndarray | None  # n -> unit, -1 for loans outside these units (None: not kept)
    rep: np.ndarray  # U: a representative loan of each unit
    P: np.ndarray
    PL: np.ndarray
    PW: dict[str, np.ndarray]
    count: np.ndarray
    integer: np.ndarray  # U bool: the unit's columns are binary (whole-loan decisions)

    @property
    def U(self) -> int:
        return len(self.P)

    @staticmethod
    def build(inst: Instance, loan_unit: np.ndarray, n_units: int, integer: bool = False) -> "Units":
        """Sum loans into units with ``bincount`` (loans with unit -1 are left out)."""
        inside = loan_unit >= 0
        # the products principal x life and principal x field are the instance's, computed once
        weights = {"P": inst.principal, "PL": inst.principal_life, **inst.principal_fields}
        if inside.all():  # every loan in a unit (the bin LPs): no copies of the loan arrays
            lu, idx = loan_unit, None
        else:
            idx = np.flatnonzero(inside)
            lu = loan_unit[idx]
            weights = {k: w[idx] for k, w in weights.items()}
        sums = {k: np.bincount(lu, weights=w, minlength=n_units) for k, w in weights.items()}
        P, PL = sums.pop("P"), sums.pop("PL")
        PW = {k: sums[k] for k in inst.fields}
        count = np.bincount(lu, minlength=n_units)
        rep = np.zeros(n_units, dtype=np.int64)
        rep[lu[::-1]] = (np.arange(len(lu)) if idx is None else idx)[::-1]  # any member will do: members share their class
        return Units(loan_unit, rep, P, PL, PW, count, np.full(n_units, integer))


@dataclass(frozen=True, eq=False)
class Block:
    """Rows of one family: triplets with local row numbers, bounds and labels."""

    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    kind: RowKind
    route: np.ndarray
    ref: np.ndarray
    label: list[str]
    kinds: np.ndarray | None = None  # per row, when a family holds several kinds of row

    @property
    def m(self) -> int:
        return len(self.lo)

    def row_kinds(self) -> np.ndarray:
        return self.kinds if self.kinds is not None else np.full(self.m, self.kind.value, dtype=object)


@dataclass(frozen=True, eq=False)
class Problem:
    """A solver-neutral LP/MIP: ``min c'x + offset`` s.t. ``row_lo <= A x <= row_hi``, bounds."""

    c: np.ndarray
    A: sp.csc_matrix
    col_lo: np.ndarray
    col_hi: np.ndarray
    row_lo: np.ndarray
    row_hi: np.ndarray
    integer: np.ndarray
    rows: pd.DataFrame  # kind, route, ref, label
    pair_unit: np.ndarray
    pair_route: np.ndarray
    n_units: int
    total_col: np.ndarray  # per funder route: column of A[f]
    shortfall_col: np.ndarray  # per funder route: column of z[f], or -1
    offset: float = 0.0
    funded_col: int = -1  # column of D, the day's funded principal (-1: not in the model)
    hard_col: np.ndarray | None = None  # per funder route: column of h[f] (hard minimum), or -1
    use_col: np.ndarray | None = None  # per funder route: column of y[f] (its use), or -1
    count_col: np.ndarray | None = None  # per funder route: column of N[f] (its loan count), or -1

    @property
    def hard_cols(self) -> np.ndarray:
        """Per funder route: the column of its hard-minimum shortfall, -1 where none."""
        return self.hard_col if self.hard_col is not None else np.full(len(self.total_col), -1, dtype=np.int64)

    @property
    def n_cols(self) -> int:
        return len(self.c)

    @property
    def n_rows(self) -> int:
        return len(self.row_lo)

    @property
    def n_pairs(self) -> int:
        return len(self.pair_unit)


class _Cols:
    """Column numbering shared by every family."""

    def __init__(self, inst: Instance, units: Units):
        el = inst.elig[units.rep]
        self.pair_unit, self.pair_route = np.nonzero(el)
        self.n_pairs = len(self.pair_unit)
        self.U = units.U
        F = inst.R - 1
        self.total = self.n_pairs + self.U + np.arange(F)
        has_min = inst.daily_min[:F] > 0
        self.shortfall = np.full(F, -1, dtype=np.int64)
        self.shortfall[has_min] = self.n_pairs + self.U + F + np.arange(has_min.sum())
        self.n = self.n_pairs + self.U + F + int(has_min.sum())
        has_hard = inst.daily_min_hard[:F] > 0
        self.hard = np.full(F, -1, dtype=np.int64)
        self.hard[has_hard] = self.n + np.arange(has_hard.sum())
        self.n += int(has_hard.sum())
        counted = sorted({fam.route for fam in inst.conc if fam.counts}
                         | {m for gc in inst.group_conc if gc.counts for m in gc.members})
        self.count_total = np.full(F, -1, dtype=np.int64)  # N_f: the loans at f, where a share counts them
        self.count_total[counted] = self.n + np.arange(len(counted))
        self.n += len(counted)
        self.use = np.full(F, -1, dtype=np.int64)
        uses = inst.use_routes
        self.use[uses] = self.n + np.arange(len(uses))
        self.n += len(uses)
        self.funded = -1
        if inst.has_funded_total:
            self.funded = self.n
            self.n += 1
        # pair indices grouped by route, for families that touch one route
        order = np.argsort(self.pair_route, kind="stable")
        bounds = np.searchsorted(self.pair_route[order], np.arange(inst.R + 1))
        self.by_route = [order[bounds[r]:bounds[r + 1]] for r in range(inst.R)]


def _block(kind, rows, cols, vals, lo, hi, route, ref, label) -> Block:
    return Block(np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64),
                 np.asarray(vals, dtype=np.float64), np.asarray(lo, dtype=np.float64),
                 np.asarray(hi, dtype=np.float64), kind, np.asarray(route, dtype=np.int64),
                 np.asarray(ref, dtype=np.int64), list(label))


def define_assignment(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Each unit is routed exactly once: ``sum_f t[u,f] + t[u,unfunded] = 1``."""
    U = units.U
    rows = np.concatenate([cols.pair_unit, np.arange(U)])
    cc = np.concatenate([np.arange(cols.n_pairs), cols.n_pairs + np.arange(U)])
    ones = np.ones(U)
    return _block(RowKind.ASSIGN, rows, cc, np.ones(len(rows)), ones, ones,
                  np.full(U, -1), np.arange(U), [""] * U)


def define_totals(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Funder totals: ``sum_u s_f P_u t[u,f] - A_f = 0`` for every funder."""
    F = inst.R - 1
    sel = cols.pair_route < F
    pu, pr = cols.pair_unit[sel], cols.pair_route[sel]
    rows = np.concatenate([pr, np.arange(F)])
    cc = np.concatenate([np.flatnonzero(sel), cols.total])
    vals = np.concatenate([inst.share[pr] * units.P[pu], -np.ones(F)])
    z = np.zeros(F)
    return _block(RowKind.TOTAL, rows, cc, vals, z, z, np.arange(F), np.arange(F),
                  [f"total:{inst.route_ids[r]}" for r in range(F)])


def _cap_block(inst: Instance, units: Units, cols: _Cols, limits: np.ndarray, kind: RowKind) -> Block:
    """``A_f <= limit_f``; where the funder measures its caps on another amount, ``sum_u s_f M_u
    t[u,f] <= limit_f`` with ``M_u`` the unit's measured amount (a field sum)."""
    F = inst.R - 1
    rs = np.flatnonzero(np.isfinite(limits[:F]))
    k = len(rs)
    on_a = ~np.isin(rs, inst.measured)
    rows, cc, vals = [np.flatnonzero(on_a)], [cols.total[rs[on_a]]], [np.ones(int(on_a.sum()))]
    for j in np.flatnonzero(~on_a):
        r = rs[j]
        pairs = cols.by_route[r]
        rows.append(np.full(len(pairs), j))
        cc.append(pairs)
        vals.append(inst.share[r] * units.PW[measure_field(inst.route_ids[r])][cols.pair_unit[pairs]])
    return _block(kind, np.concatenate(rows), np.concatenate(cc), np.concatenate(vals), np.full(k, -np.inf),
                  limits[rs], rs, rs, [f"{kind.value}:{inst.route_ids[r]}" for r in rs])


def define_daily_max(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Daily maximum: ``A_f <= daily_max_f``."""
    return _cap_block(inst, units, cols, inst.daily_max, RowKind.DAILY_MAX)


def define_facility_headroom(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Facility headroom: ``A_f <= facility_limit_f - outstanding_f``."""
    return _cap_block(inst, units, cols, np.maximum(inst.headroom, 0.0), RowKind.FACILITY_HEADROOM)


def _min_block(inst: Instance, cols: _Cols, kind: RowKind, slack_col: np.ndarray, limits: np.ndarray) -> Block:
    """``A_f + slack_f >= limit_f`` for the funders with a slack column."""
    rs = np.flatnonzero(slack_col >= 0)
    k = len(rs)
    rows = np.concatenate([np.arange(k), np.arange(k)])
    cc = np.concatenate([cols.total[rs], slack_col[rs]])
    return _block(kind, rows, cc, np.ones(2 * k), limits[rs], np.full(k, np.inf),
                  rs, rs, [f"{kind.value}:{inst.route_ids[r]}" for r in rs])


def define_daily_min(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Soft daily minimum: ``A_f + z_f >= daily_min_f`` with ``z_f`` priced at the shortfall fee."""
    return _min_block(inst, cols, RowKind.DAILY_MIN, cols.shortfall, inst.daily_min)


def define_daily_min_hard(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Hard daily minimum: ``A_f + h_f >= daily_min_hard_f``, ``h_f`` at the exact penalty (0 in
    every plan that exists)."""
    return _min_block(inst, cols, RowKind.DAILY_MIN_HARD, cols.hard, inst.daily_min_hard)


def define_uses(inst: Instance, units: Units, cols: _Cols) -> Block:
    """A funder's use ``y_f``: ``A_f - min_if_used_f y_f >= 0`` (nothing, or at least the minimum)
    and ``A_f - U_f y_f <= 0`` with ``U_f`` what the funder could take at most today (its caps,
    its eligible loans' funder amount); ``fixed_cost_f y_f`` in the objective."""
    rs = np.flatnonzero(cols.use >= 0)
    if not len(rs):
        return _block(RowKind.USE_MIN, [], [], [], [], [], [], [], [])
    elig_p = inst.share[rs] * np.array([inst.principal[inst.elig[:, r]].sum() for r in rs])
    caps = np.minimum(inst.daily_max[rs], np.maximum(inst.headroom[rs], 0.0))
    caps = np.where(np.isin(rs, inst.measured), np.inf, caps)  # (a measured cap does not bound A_f)
    U = np.minimum(caps, elig_p)
    m = inst.use_min[rs] if inst.use_min is not None else np.zeros(len(rs))
    k = len(rs)
    rows = np.concatenate([np.arange(k), np.arange(k), k + np.arange(k), k + np.arange(k)])
    cc = np.concatenate([cols.total[rs], cols.use[rs], cols.total[rs], cols.use[rs]])
    vals = np.concatenate([np.ones(k), -m, np.ones(k), -U])
    kinds = np.array([RowKind.USE_MIN.value] * k + [RowKind.USE_CAP.value] * k, dtype=object)
    block = _block(RowKind.USE_MIN, rows, cc, vals, np.concatenate([np.zeros(k), np.full(k, -np.inf)]),
                   np.concatenate([np.full(k, np.inf), np.zeros(k)]), np.concatenate([rs, rs]),
                   np.concatenate([rs, rs]), [f"use_min:{inst.route_ids[r]}" for r in rs]
                   + [f"use_cap:{inst.route_ids[r]}" for r in rs])
    return replace(block, kinds=kinds)


def define_count_totals(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Loan counts, for shares of the count: ``sum_u n_u t[u,f] - N_f = 0`` (``n_u``: the unit's loans)."""
    rs = np.flatnonzero(cols.count_total >= 0)
    rows, cc, vals = [], [], []
    for j, r in enumerate(rs):
        pairs = cols.by_route[r]
        rows.append(np.full(len(pairs) + 1, j))
        cc.append(np.append(pairs, cols.count_total[r]))
        vals.append(np.append(units.count[cols.pair_unit[pairs]].astype(float), -1.0))
    if not len(rs):
        return _block(RowKind.COUNT_TOTAL, [], [], [], [], [], [], [], [])
    z = np.zeros(len(rs))
    return _block(RowKind.COUNT_TOTAL, np.concatenate(rows), np.concatenate(cc), np.concatenate(vals), z, z,
                  rs, rs, [f"count_total:{inst.route_ids[r]}" for r in rs])


def define_concentration(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Concentration: ``sum_{u in S} s_f P_u t[u,f] - alpha A_f <= alpha E_f - E_fS``; a share of the
    loan count (``measure: count``, basis new): ``sum_{u in S} n_u t[u,f] - alpha N_f <= 0``.

    On the ``new`` basis ``E_f = E_fS = 0``. A segment the portfolio already breaches has no row:
    its loans are not eligible for the funder (see :mod:`fundalloc.instance`).
    """
    rows, cc, vals, lo, hi, route, ref, label = [], [], [], [], [], [], [], []
    m = 0
    seg_index = 0
    for fam in inst.conc:
        r = fam.route
        member = fam.member_code(units.rep)
        live = [s for s in fam.segments if not s.breached]
        code_to_row = np.full(max([s.code for s in fam.segments] + [0]) + 2, -1, dtype=np.int64)
        for j, s in enumerate(fam.segments):
            if s.breached:
                continue
            row = m + live.index(s)
            if s.code >= 0 or fam.per_codes is None:
                code_to_row[max(s.code, 0)] = row
        pairs = cols.by_route[r]
        mc = member[cols.pair_unit[pairs]]
        ok = mc >= 0
        target = np.full(len(pairs), -1, dtype=np.int64)
        target[ok] = code_to_row[np.minimum(mc[ok], len(code_to_row) - 1)]
        hit = target >= 0
        p = pairs[hit]
        rows.append(target[hit])
        cc.append(p)
        # a share of the amount: s_f P_u against A_f; of the count: the unit's loans against N_f
        vals.append(units.count[cols.pair_unit[p]].astype(float) if fam.counts else inst.share[r] * units.P[cols.pair_unit[p]])
        k = len(live)
        rows.append(m + np.arange(k))
        cc.append(np.full(k, cols.count_total[r] if fam.counts else cols.total[r]))
        vals.append(np.array([-s.alpha for s in live]))
        lo.append(np.full(k, -np.inf))
        hi.append(np.array([s.rhs for s in live]))
        route.append(np.full(k, r))
        ref.append(seg_index + np.array([fam.segments.index(s) for s in live], dtype=np.int64))
        label += [f"concentration:{inst.route_ids[r]}:{s.label}" for s in live]
        seg_index += len(fam.segments)
        m += k
    if not lo:
        return _block(RowKind.CONCENTRATION, [], [], [], [], [], [], [], [])
    return _block(RowKind.CONCENTRATION, np.concatenate(rows), np.concatenate(cc), np.concatenate(vals),
                  np.concatenate(lo), np.concatenate(hi), np.concatenate(route), np.concatenate(ref), label)


def define_weighted_average(inst: Instance, units: Units, cols: _Cols) -> list[Block]:
    """Weighted averages over today's allocation to ``f``:

    ``sum_u s_f (PW_u - min P_u) t[u,f] >= -(EW - min E)`` and ``sum_u s_f (PW_u - max P_u) t[u,f] <=
    max E - EW``, with the book's outstanding ``E`` and outstanding x field ``EW`` on the portfolio
    basis (0 on the new basis, and 0 room when the book is already outside the limit).
    """
    out = []
    for kind, attr in ((RowKind.WA_MIN, "min"), (RowKind.WA_MAX, "max")):
        rows, cc, vals, route, ref, label, bound = [], [], [], [], [], [], []
        m = 0
        for j, t in enumerate(inst.wa):
            b = getattr(t, attr)
            if b is None:
                continue
            pairs = cols.by_route[t.route]
            pu = cols.pair_unit[pairs]
            rows.append(np.full(len(pairs), m))
            cc.append(pairs)
            vals.append(inst.share[t.route] * (units.PW[t.field][pu] - b * units.P[pu]))
            route.append(t.route)
            ref.append(j)
            bound.append(b)
            label.append(f"{kind.value}:{inst.route_ids[t.route]}:{t.field}")
            m += 1
        if m == 0:
            continue
        room = np.array([inst.wa[j].rhs(b, -1.0 if kind == RowKind.WA_MIN else 1.0) for j, b in zip(ref, bound)])
        lo = -room if kind == RowKind.WA_MIN else np.full(m, -np.inf)
        hi = np.full(m, np.inf) if kind == RowKind.WA_MIN else room
        out.append(_block(kind, np.concatenate(rows), np.concatenate(cc), np.concatenate(vals),
                          lo, hi, route, ref, label))
    return out


def define_obligor(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Single obligor: ``sum_{u of borrower b} s_f P_u t[u,f] <= obligor_limit_f - existing_fb``."""
    if not inst.obligor_rows:
        return _block(RowKind.OBLIGOR, [], [], [], [], [], [], [], [])
    slot = inst.obligor_slot[units.rep]
    rows, cc, vals = [], [], []
    R = inst.R
    key = np.array([o.slot * R + o.route for o in inst.obligor_rows])
    order = np.argsort(key)
    pair_key = slot[cols.pair_unit] * R + cols.pair_route
    has = slot[cols.pair_unit] >= 0
    pos = np.searchsorted(key[order], pair_key[has])
    pos = np.minimum(pos, len(key) - 1)
    match = key[order][pos] == pair_key[has]
    pidx = np.flatnonzero(has)[match]
    rows = order[pos[match]]
    cc = pidx
    vals = inst.share[cols.pair_route[pidx]] * units.P[cols.pair_unit[pidx]]
    k = len(inst.obligor_rows)
    return _block(RowKind.OBLIGOR, rows, cc, vals, np.full(k, -np.inf),
                  [o.rhs for o in inst.obligor_rows], [o.route for o in inst.obligor_rows], np.arange(k),
                  [f"obligor:{inst.route_ids[o.route]}:{o.borrower}" for o in inst.obligor_rows])


def define_platform_capacity(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Platform capacity: ``sum_{u,f} (1 - s_f) P_u t[u,f] + sum_u P_u t[u,platform] <= K_P``."""
    if not np.isfinite(inst.platform_capacity):
        return _block(RowKind.PLATFORM_CAPACITY, [], [], [], [], [], [], [], [])
    n = cols.n_pairs
    vals = inst.platform_share[cols.pair_route] * units.P[cols.pair_unit]
    return _block(RowKind.PLATFORM_CAPACITY, np.zeros(n), np.arange(n), vals, [-np.inf],
                  [inst.platform_capacity], [inst.platform_route], [0],
                  [f"platform_capacity:{inst.route_ids[inst.platform_route]}"])


def define_funded(inst: Instance, units: Units, cols: _Cols) -> Block:
    """The day's funded principal: ``D - sum_f A_f / s_f - sum_u P_u t[u,platform] = 0`` (a funder's
    principal is its amount over its share), present when a share-of-day limit needs ``D``."""
    if cols.funded < 0:
        return _block(RowKind.FUNDED, [], [], [], [], [], [], [], [])
    F = inst.R - 1
    plat = cols.by_route[inst.platform_route]
    cc = np.concatenate([[cols.funded], cols.total, plat])
    vals = np.concatenate([[1.0], -1.0 / inst.share[:F], -units.P[cols.pair_unit[plat]]])
    return _block(RowKind.FUNDED, np.zeros(len(cc)), cc, vals, [0.0], [0.0], [-1], [0], ["funded"])


def define_groups(inst: Instance, units: Units, cols: _Cols) -> Block:
    """Diversification: ``sum_{f in G} A_f - alpha_G D <= cap_G`` for every funder under the
    platform's ``max_funder_share`` (``G = {f}``, ``cap = 0``) and every group's share of the day
    (``cap = 0``) and daily maximum (``alpha = 0``)."""
    if not inst.groups:
        return _block(RowKind.GROUP_MAX, [], [], [], [], [], [], [], [])
    rows, cc, vals = [], [], []
    for k, g in enumerate(inst.groups):
        rows += [k] * len(g.members)
        cc += [int(cols.total[r]) for r in g.members]
        vals += [1.0] * len(g.members)
        if g.alpha > 0:
            rows.append(k)
            cc.append(cols.funded)
            vals.append(-g.alpha)
    m = len(inst.groups)
    route = [g.members[0] if g.kind == "funder_share" else -1 for g in inst.groups]
    block = _block(RowKind.GROUP_MAX, rows, cc, vals, np.full(m, -np.inf), [g.cap for g in inst.groups],
                   route, np.arange(m), [g.label for g in inst.groups])
    return replace(block, kinds=np.array([g.kind for g in inst.groups], dtype=object))


def define_group_concentration(inst: Instance, units: Units, cols: _Cols) -> Block:
    """A group's concentration: ``sum_{f in G} sum_{u in S} s_f P_u t[u,f] - alpha sum_{f in G} A_f <= 0``
    (of the count: ``n_u`` and ``N_f``)."""
    rows, cc, vals, label = [], [], [], []
    m = 0
    for gc in inst.group_conc:
        for lab, code in gc.segments:
            for r in gc.members:
                pairs = cols.by_route[r]
                hit = pairs[gc.member_code(units.rep[cols.pair_unit[pairs]]) == code]
                rows.append(np.full(len(hit) + 1, m))
                if gc.counts:  # of the members' loan count
                    cc.append(np.append(hit, cols.count_total[r]))
                    vals.append(np.append(units.count[cols.pair_unit[hit]].astype(float), -gc.spec.max_share))
                else:
                    cc.append(np.append(hit, cols.total[r]))
                    vals.append(np.append(inst.share[r] * units.P[cols.pair_unit[hit]], -gc.spec.max_share))
            label.append(f"group_concentration:{gc.group}:{lab}")
            m += 1
    if not m:
        return _block(RowKind.GROUP_CONCENTRATION, [], [], [], [], [], [], [], [])
    return _block(RowKind.GROUP_CONCENTRATION, np.concatenate(rows), np.concatenate(cc), np.concatenate(vals),
                  np.full(m, -np.inf), np.zeros(m), np.full(m, -1), np.arange(m), label)


def define_group_weighted_average(inst: Instance, units: Units, cols: _Cols) -> Block:
    """A group's weighted average: ``sum_{f in G} sum_u s_f sign (PW_u - bound P_u) t[u,f] <= 0``
    (``sign`` -1 for a minimum, +1 for a maximum; ``PW_u`` the unit's principal x field)."""
    rows, cc, vals, kinds, label = [], [], [], [], []
    for k, t in enumerate(inst.group_wa):
        for r in t.members:
            pairs = cols.by_route[r]
            pu = cols.pair_unit[pairs]
            rows.append(np.full(len(pairs), k))
            cc.append(pairs)
            vals.append(inst.share[r] * t.sign * (np.nan_to_num(units.PW[t.field][pu]) - t.bound * units.P[pu]))
        kinds.append(t.kind)
        label.append(t.label)
    m = len(inst.group_wa)
    if not m:
        return _block(RowKind.GROUP_WA, [], [], [], [], [], [], [], [])
    block = _block(RowKind.GROUP_WA, np.concatenate(rows), np.concatenate(cc), np.concatenate(vals),
                   np.full(m, -np.inf), np.zeros(m), np.full(m, -1), np.arange(m), label)
    return replace(block, kinds=np.array(kinds, dtype=object))


FAMILIES = (define_assignment, define_totals, define_count_totals, define_daily_max, define_facility_headroom,
            define_daily_min, define_daily_min_hard, define_uses, define_concentration, define_weighted_average, define_obligor,
            define_platform_capacity, define_funded, define_groups, define_group_concentration,
            define_group_weighted_average)


def formulate(inst: Instance, units: Units, fixed: np.ndarray | None = None,
              allowed: np.ndarray | None = None) -> Problem:
    """Build the problem for ``units``.

    ``fixed`` (optional, per unit): a route index (``R`` for unfunded) that the unit is fixed to,
    or -1 for a free unit. Fixed units keep their columns with equal bounds, so the row layout
    and labels do not depend on what is fixed. ``allowed`` (optional, units x R bool) closes the
    columns of routes a free unit may not take (upper bound 0).
    """
    cols = _Cols(inst, units)
    blocks: list[Block] = []
    for fam in FAMILIES:
        out = fam(inst, units, cols)
        blocks.extend(out if isinstance(out, list) else [out])
    offsets = np.cumsum([0] + [b.m for b in blocks])
    rr = np.concatenate([b.rows + o for b, o in zip(blocks, offsets)])
    cc = np.concatenate([b.cols for b in blocks])
    vv = np.concatenate([b.vals for b in blocks])
    A = sp.csc_matrix((vv, (rr, cc)), shape=(int(offsets[-1]), cols.n))
    A.sum_duplicates()
    A.sort_indices()
    rows = pd.DataFrame({
        "kind": np.concatenate([b.row_kinds() for b in blocks]) if blocks else [],
        "route": np.concatenate([b.route for b in blocks]),
        "ref": np.concatenate([b.ref for b in blocks]),
        "label": [lab for b in blocks for lab in b.label],
    })

    F = inst.R - 1
    U = units.U
    pu, pr = cols.pair_unit, cols.pair_route
    c = np.zeros(cols.n)
    k1, k0 = inst.rates(units.rep[pu], pr, priced=False)  # (a unit's loans share their tier: see the classes)
    c[:cols.n_pairs] = k1 * units.PL[pu] + k0 * units.P[pu]
    for r in inst.bid_routes:  # a bid is linear in principal: the unit's sum of principal x price
        on = np.flatnonzero(pr == r)
        c[on] -= inst.share[r] * units.PW[bid_field(inst.route_ids[r])][pu[on]]
    c[cols.n_pairs:cols.n_pairs + U] = (units.PW[VALUE_FIELD] if inst.loan_penalty is not None
                                        else inst.penalty * units.P)
    has_min = cols.shortfall >= 0
    c[cols.shortfall[has_min]] = inst.shortfall_fee[:F][has_min]
    col_lo = np.zeros(cols.n)
    col_hi = np.ones(cols.n)
    col_hi[cols.total] = np.inf
    for r in np.flatnonzero(cols.count_total >= 0):  # N_f: at most the loans that may go to f
        col_hi[cols.count_total[r]] = float(units.count[cols.pair_unit[cols.by_route[r]]].sum())
    col_hi[cols.shortfall[has_min]] = inst.daily_min[:F][has_min]
    has_hard = cols.hard >= 0
    c[cols.hard[has_hard]] = inst.hard_fee
    has_use = cols.use >= 0
    if inst.fixed_cost is not None:
        c[cols.use[has_use]] = inst.fixed_cost[:F][has_use]
    col_hi[cols.hard[has_hard]] = inst.daily_min_hard[:F][has_hard]
    if cols.funded >= 0:
        col_hi[cols.funded] = float(units.P.sum())
    if allowed is not None:
        col_hi[:cols.n_pairs] = np.where(allowed[pu, pr], col_hi[:cols.n_pairs], 0.0)
    integer = np.zeros(cols.n, dtype=bool)
    integer[:cols.n_pairs] = units.integer[pu]
    integer[cols.n_pairs:cols.n_pairs + U] = units.integer
    if fixed is not None:
        fx = fixed[pu]
        pin = fx >= 0
        col_hi[:cols.n_pairs][pin] = (fx[pin] == pr[pin]).astype(float)
        ufix = fixed >= 0
        col_hi[cols.n_pairs:cols.n_pairs + U][ufix] = (fixed[ufix] == inst.R).astype(float)
        col_lo[:cols.n_pairs] = np.where(pin, col_hi[:cols.n_pairs], 0.0)
        col_lo[cols.n_pairs:cols.n_pairs + U] = np.where(ufix, col_hi[cols.n_pairs:cols.n_pairs + U], 0.0)
    return Problem(
        c=c, A=A, col_lo=col_lo, col_hi=col_hi,
        row_lo=np.concatenate([b.lo for b in blocks]), row_hi=np.concatenate([b.hi for b in blocks]),
        integer=integer, rows=rows, pair_unit=pu, pair_route=pr, n_units=U,
        total_col=cols.total, shortfall_col=cols.shortfall, funded_col=cols.funded, hard_col=cols.hard,
        use_col=cols.use, count_col=cols.count_total,
    )


def drop_fixed_columns(problem: Problem) -> tuple[Problem, np.ndarray, np.ndarray]:
    """Move columns with equal bounds into the row bounds and the objective offset.

    Returns the smaller problem (its ``total_col`` and ``shortfall_col`` renumbered, -1 where
    fixed), the indices of the kept columns, and the full-length vector of fixed values (to put
    a solution of the small problem back in place).
    """
    fixed = problem.col_lo == problem.col_hi
    keep = np.flatnonzero(~fixed)
    xf = np.where(fixed, problem.col_lo, 0.0)
    shift = problem.A @ xf
    new_index = np.full(problem.n_cols, -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))

    def moved(col: np.ndarray) -> np.ndarray:
        return np.where(col >= 0, new_index[np.maximum(col, 0)], -1)

    small = Problem(
        c=problem.c[keep], A=problem.A[:, keep], col_lo=problem.col_lo[keep], col_hi=problem.col_hi[keep],
        row_lo=problem.row_lo - shift, row_hi=problem.row_hi - shift, integer=problem.integer[keep],
        rows=problem.rows, pair_unit=problem.pair_unit, pair_route=problem.pair_route,
        n_units=problem.n_units, total_col=moved(problem.total_col), shortfall_col=moved(problem.shortfall_col),
        offset=problem.offset + float(problem.c @ xf),
        funded_col=int(moved(np.array([problem.funded_col]))[0]), hard_col=moved(problem.hard_cols),
        use_col=moved(problem.use_col) if problem.use_col is not None else None,
        count_col=moved(problem.count_col) if problem.count_col is not None else None,
    )
    return small, keep, xf
