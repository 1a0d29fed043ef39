"""The hard rows over whole loans, encoded once.

Every hard limit of the model is a row ``sum_i coef_k(i, route_i) <= rhs_k`` whose coefficient
depends only on the loan and the route it is on. This module is the one encoding of those rows
that the search, the repair, the evaluation of a plan, its shadow prices and what-if read (the
independent verifier keeps its own, on purpose). One family per kind of limit, each with its
inequality in its docstring:

- :class:`CapRows` — daily maximum and facility headroom;
- :class:`MinRows` — a hard daily minimum (``-A_f <= -min``);
- :class:`ConcentrationRows` — a segment's share of a funder's amount;
- :class:`WeightedAverageRows` — a field's amount-weighted mean over a funder's loans;
- :class:`PlatformRows` — the platform's capital (a row every route touches);
- :class:`GroupConcentrationRows` — a segment's share of a group's total;
- :class:`GroupWeightedAverageRows` — a field's weighted average over a group's loans;
- :class:`GroupRows` — funder diversification: a funder's or a group's share of the day's funded
  principal (rows every route touches) and a group's daily maximum;
- :class:`ObligorRows` — a borrower's exposure at a funder (sparse: at most one row per loan and
  route, so these rows are kept out of the per-route blocks).

A family gives, for a route, its rows and the coefficients of any loans there (``coef``), and
the activity of all its rows under a whole-loan plan in one pass over the loans (``activity``).
Rows carry the LP's labels, so an LP dual finds its row by label.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..formulation import RowKind
from ..instance import Instance

TOL = 1e-6  # currency units: a row is broken when its excess is above this (the contract's is 0.01)


@dataclass(frozen=True, eq=False)
class RouteIndex:
    """The loans on each route of a plan (index R: unfunded) and every loan's funder amount."""

    route: np.ndarray
    on: tuple[np.ndarray, ...]
    amount: np.ndarray  # funder amount per loan (0 when unfunded)
    totals: np.ndarray  # R: funder amount per route (the platform's: its whole loans)

    @staticmethod
    def of(inst: Instance, route: np.ndarray) -> "RouteIndex":
        R = inst.R
        # 16-bit keys: numpy's stable sort is then a radix sort, several times faster on big days
        order = np.argsort(route.astype(np.uint16) if R < (1 << 16) - 1 else route, kind="stable")
        bounds = np.searchsorted(route[order], np.arange(R + 2))
        on = tuple(order[bounds[r]:bounds[r + 1]] for r in range(R + 1))
        amount = np.append(inst.share, 0.0)[route] * inst.principal
        totals = np.bincount(route, weights=amount, minlength=R + 1)[:R]
        return RouteIndex(route, on, amount, totals)


class Family:
    """A kind of row. Subclasses fill ``route``, ``ref``, ``label``, ``rhs`` and ``kind``."""

    kind: RowKind
    route: np.ndarray  # per row: its route (-1 for a row of several routes)
    ref: np.ndarray  # per row: the index of its limit in the instance (segment, test, ...)
    label: list[str]
    rhs: np.ndarray
    offset: int = 0  # id of the family's first row in :class:`Rows`

    @property
    def m(self) -> int:
        return len(self.rhs)

    def rows_on(self, r: int) -> np.ndarray:
        """Local indices of the rows a loan on route ``r`` touches (ascending)."""
        raise NotImplementedError

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        """``len(rows_on(r)) x len(loans)``: the loans' coefficients on route ``r``."""
        raise NotImplementedError

    def activity(self, idx: RouteIndex) -> np.ndarray:
        """Every row's left side under a plan."""
        raise NotImplementedError


class CapRows(Family):
    """Daily maximum ``A_f <= daily_max_f`` and facility headroom ``A_f <= facility_limit_f -
    outstanding_f`` (a facility already above its limit: headroom 0), with ``A_f = sum s_f p_i``;
    a funder with a ``cap_measure`` counts ``sum s_f m_i`` instead (its loans' measured amounts)."""

    sign = 1.0  # the row is ``sign * A_f <= rhs``
    measures = True  # (a minimum counts the funder amount itself)

    def __init__(self, inst: Instance, kind: RowKind, limits: np.ndarray):
        self.inst, self.kind = inst, kind
        F = inst.R - 1
        rs = np.flatnonzero(np.isfinite(limits[:F]))
        self.route = rs
        self.ref = rs
        self.rhs = self.sign * np.maximum(limits[rs], 0.0)
        self.label = [f"{kind.value}:{inst.route_ids[r]}" for r in rs]
        self._row_of = {int(r): k for k, r in enumerate(rs)}

    def rows_on(self, r: int) -> np.ndarray:
        k = self._row_of.get(int(r))
        return np.zeros(0, dtype=np.int64) if k is None else np.array([k])

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        if self.measures:
            return (self.sign * self.inst.cap_amount(int(r), loans))[None, :]
        return (self.sign * self.inst.share[r] * self.inst.principal[loans])[None, :]

    def activity(self, idx: RouteIndex) -> np.ndarray:
        out = self.sign * idx.totals[self.route]
        if self.measures:
            for k, r in enumerate(self.route):
                if int(r) in self.inst.measured:
                    out[k] = self.sign * float(self.inst.cap_amount(int(r), idx.on[int(r)]).sum())
        return out


class MinRows(CapRows):
    """Hard daily minimum ``A_f >= daily_min_hard_f``, written ``-A_f <= -daily_min_hard_f``: a loan
    on ``f`` has the coefficient ``-s_f p_i``. The one row that unfunding cannot mend (the repair
    leaves it to the search's fill, and a plan that breaks it is never delivered)."""

    sign = -1.0
    measures = False

    def __init__(self, inst: Instance):
        super().__init__(inst, RowKind.DAILY_MIN_HARD, np.where(inst.daily_min_hard > 0, inst.daily_min_hard, np.inf))


class ConcentrationRows(Family):
    """Concentration of segment ``S`` at funder ``f``: ``sum_{i in S} a_i - alpha A_f <= alpha E_f -
    E_fS`` (``E = 0`` on the new basis), i.e. a coefficient ``s_f p_i (1[i in S] - alpha)``. A
    segment the portfolio already breaches is closed: ``sum_{i in S} a_i <= 0``."""

    kind = RowKind.CONCENTRATION

    def __init__(self, inst: Instance):
        self.inst = inst
        route, ref, label, rhs, alpha, closed = [], [], [], [], [], []
        self._by_route: dict[int, list[int]] = {}
        self._fam_rows: list[tuple[object, np.ndarray, np.ndarray]] = []  # (family, row ids, codes)
        k = 0
        flat = 0
        for fam in inst.conc:
            ids, codes = [], []
            for s in fam.segments:
                route.append(fam.route)
                ref.append(flat)
                label.append(f"concentration:{inst.route_ids[fam.route]}:{s.label}")
                rhs.append(0.0 if s.breached else s.rhs)
                alpha.append(0.0 if s.breached else s.alpha)
                closed.append(s.breached)
                self._by_route.setdefault(fam.route, []).append(k)
                ids.append(k)
                codes.append(0 if fam.per_codes is None else s.code)
                k += 1
                flat += 1
            self._fam_rows.append((fam, np.array(ids, dtype=np.int64), np.array(codes, dtype=np.int64)))
        self.route = np.array(route, dtype=np.int64)
        self.ref = np.array(ref, dtype=np.int64)
        self.label = label
        self.rhs = np.array(rhs, dtype=float)
        self.alpha = np.array(alpha, dtype=float)
        self.closed = np.array(closed, dtype=bool)

    def rows_on(self, r: int) -> np.ndarray:
        return np.array(self._by_route.get(int(r), []), dtype=np.int64)

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        inst = self.inst
        a = inst.share[r] * inst.principal[loans]
        blocks = []
        for fam, ids, codes in self._fam_rows:
            if fam.route != r or not len(ids):
                continue
            mc = fam.member_code(loans)
            member = (mc[None, :] == codes[:, None]) & (codes[:, None] >= 0)
            w = np.ones(len(loans)) if fam.counts else a  # a share of the count: one per loan
            blocks.append(w[None, :] * (member - self.alpha[ids][:, None]))
        return np.vstack(blocks) if blocks else np.zeros((0, len(loans)))

    def segment_amounts(self, idx: RouteIndex) -> np.ndarray:
        """Per row: today's funder amount of the segment's loans (``sum_{i in S} a_i``), or their
        number where the share counts loans."""
        out = np.zeros(self.m)
        for fam, ids, codes in self._fam_rows:
            if not len(ids):
                continue
            loans = idx.on[fam.route]
            where = fam.where[loans]
            a = np.ones(len(loans)) if fam.counts else idx.amount[loans]
            if fam.per_codes is None:
                out[ids] = a[where].sum()
                continue
            c = fam.per_codes[loans]
            ok = where & (c >= 0)
            seg = np.bincount(c[ok], weights=a[ok], minlength=max(len(fam.per_values), 1))
            out[ids] = np.where(codes >= 0, seg[np.maximum(codes, 0)], 0.0)
        return out

    def bases(self, idx: RouteIndex) -> np.ndarray:
        """Per row: what its share is of, today: the funder amount, or the number of loans."""
        out = idx.totals[self.route].astype(float)
        for fam, ids, _ in self._fam_rows:
            if fam.counts and len(ids):
                out[ids] = float(len(idx.on[fam.route]))
        return out

    def activity(self, idx: RouteIndex) -> np.ndarray:
        return self.segment_amounts(idx) - self.alpha * self.bases(idx)


class WeightedAverageRows(Family):
    """Weighted averages over today's allocation to ``f``: ``sum_i a_i (min - w_i) <= EW - min E`` and
    ``sum_i a_i (w_i - max) <= max E - EW`` (the book's room on the portfolio basis, else 0)."""

    kind = RowKind.WA_MIN  # (both kinds; see ``kinds``)

    def __init__(self, inst: Instance):
        self.inst = inst
        route, ref, label, bound, sign, kinds = [], [], [], [], [], []
        for j, t in enumerate(inst.wa):
            for kind, b, sg in ((RowKind.WA_MIN, t.min, -1.0), (RowKind.WA_MAX, t.max, 1.0)):
                if b is None:
                    continue
                route.append(t.route)
                ref.append(j)
                label.append(f"{kind.value}:{inst.route_ids[t.route]}:{t.field}")
                bound.append(b)
                sign.append(sg)
                kinds.append(kind.value)
        self.route = np.array(route, dtype=np.int64)
        self.ref = np.array(ref, dtype=np.int64)
        self.label = label
        self.rhs = np.array([inst.wa[j].rhs(b, sg) for j, b, sg in zip(ref, bound, sign)], dtype=float)
        self.bound = np.array(bound, dtype=float)
        self.sign = np.array(sign, dtype=float)  # coef = a * sign * (w - bound)
        self.kinds = np.array(kinds, dtype=object)
        self._by_route: dict[int, list[int]] = {}
        for k, r in enumerate(route):
            self._by_route.setdefault(int(r), []).append(k)

    def field(self, k: int) -> str:
        return self.inst.wa[int(self.ref[k])].field

    def rows_on(self, r: int) -> np.ndarray:
        return np.array(self._by_route.get(int(r), []), dtype=np.int64)

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        inst = self.inst
        ids = self._by_route.get(int(r), [])
        a = inst.share[r] * inst.principal[loans]
        out = np.empty((len(ids), len(loans)))
        for row, k in enumerate(ids):
            w = np.nan_to_num(inst.fields[self.field(k)][loans])
            out[row] = a * self.sign[k] * (w - self.bound[k])
        return out

    def weighted_sums(self, idx: RouteIndex) -> np.ndarray:
        """Per row: ``sum_i a_i w_i`` over the route's loans."""
        out = np.zeros(self.m)
        for k in range(self.m):
            loans = idx.on[int(self.route[k])]
            out[k] = float(np.dot(idx.amount[loans], np.nan_to_num(self.inst.fields[self.field(k)][loans])))
        return out

    def activity(self, idx: RouteIndex) -> np.ndarray:
        return self.sign * (self.weighted_sums(idx) - self.bound * idx.totals[self.route])


class PlatformRows(Family):
    """Platform capacity: ``sum_i (1 - s_f) p_i [joint loans] + sum_i p_i [platform loans] <= K_P``."""

    kind = RowKind.PLATFORM_CAPACITY

    def __init__(self, inst: Instance):
        self.inst = inst
        has = np.isfinite(inst.platform_capacity)
        self.route = np.full(int(has), inst.platform_route, dtype=np.int64)
        self.ref = np.zeros(int(has), dtype=np.int64)
        self.label = [f"platform_capacity:{inst.route_ids[inst.platform_route]}"] if has else []
        self.rhs = np.array([inst.platform_capacity]) if has else np.zeros(0)

    def rows_on(self, r: int) -> np.ndarray:
        return np.arange(self.m, dtype=np.int64) if self.m and self.inst.platform_share[r] > 0 else np.zeros(0, np.int64)

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        return (self.inst.platform_share[r] * self.inst.principal[loans])[None, :] if self.m else np.zeros((0, len(loans)))

    def activity(self, idx: RouteIndex) -> np.ndarray:
        if not self.m:
            return np.zeros(0)
        inst = self.inst
        return np.array([float(np.dot(np.append(inst.platform_share, 0.0)[idx.route], inst.principal))])


def _membership(inst: Instance, members: list[tuple[int, ...]]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Rows over several routes: a rows x routes membership matrix, and per route the rows it is in."""
    member = np.zeros((len(members), inst.R), dtype=bool)
    for k, m in enumerate(members):
        member[k, list(m)] = True
    return member, tuple(np.flatnonzero(member[:, r]) for r in range(inst.R))


class GroupConcentrationRows(Family):
    """A group's concentration: ``sum_{f in G} sum_{i in S} a_i - alpha sum_{f in G} A_f <= 0``, i.e. a
    loan on a member route ``r`` has the coefficient ``s_r p_i (1[i in S] - alpha)``."""

    kind = RowKind.GROUP_CONCENTRATION

    def __init__(self, inst: Instance):
        self.inst = inst
        segs = inst.group_segments
        self.route = np.full(len(segs), -1, dtype=np.int64)
        self.ref = np.arange(len(segs), dtype=np.int64)
        self.label = [f"group_concentration:{gc.group}:{lab}" for gc, lab, _ in segs]
        self.rhs = np.zeros(len(segs))
        self.alpha = np.array([gc.spec.max_share for gc, _, _ in segs], dtype=float)
        self.code = np.array([code for _, _, code in segs], dtype=np.int64)
        self.member, self._on = _membership(inst, [gc.members for gc, _, _ in segs])

    def rows_on(self, r: int) -> np.ndarray:
        return self._on[r] if self.m else np.zeros(0, dtype=np.int64)

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        ids = self.rows_on(r)
        a = self.inst.share[r] * self.inst.principal[loans]
        out = np.empty((len(ids), len(loans)))
        for row, k in enumerate(ids):
            gc = self.inst.group_segments[int(k)][0]
            w = np.ones(len(loans)) if gc.counts else a
            out[row] = w * ((gc.member_code(loans) == self.code[k]) - self.alpha[k])
        return out

    def amounts(self, idx: RouteIndex) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the segment's funder amount over the members, and the members' total (their
        loan counts where the share counts loans)."""
        seg, tot = np.zeros(self.m), np.zeros(self.m)
        for k, (gc, _, code) in enumerate(self.inst.group_segments):
            for r in gc.members:
                loans = idx.on[r]
                w = np.ones(len(loans)) if gc.counts else idx.amount[loans]
                seg[k] += float(w[gc.member_code(loans) == code].sum())
                tot[k] += float(len(loans)) if gc.counts else float(idx.totals[r])
        return seg, tot

    def activity(self, idx: RouteIndex) -> np.ndarray:
        if not self.m:
            return np.zeros(0)
        seg, tot = self.amounts(idx)
        return seg - self.alpha * tot


class GroupWeightedAverageRows(Family):
    """A group's weighted average (:class:`~fundalloc.instance.GroupWA`): a loan on a member route
    ``r`` has the coefficient ``s_r p_i sign (w_i - bound)``; the row is ``<= 0``."""

    kind = RowKind.GROUP_WA  # (two kinds; see ``kinds``)

    def __init__(self, inst: Instance):
        self.inst = inst
        g = inst.group_wa
        self.route = np.full(len(g), -1, dtype=np.int64)
        self.ref = np.arange(len(g), dtype=np.int64)
        self.label = [t.label for t in g]
        self.rhs = np.zeros(len(g))
        self.kinds = np.array([t.kind for t in g], dtype=object)
        self.member, self._on = _membership(inst, [t.members for t in g])

    def rows_on(self, r: int) -> np.ndarray:
        return self._on[r] if self.m else np.zeros(0, dtype=np.int64)

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        ids = self.rows_on(r)
        a = self.inst.share[r] * self.inst.principal[loans]
        out = np.empty((len(ids), len(loans)))
        for row, k in enumerate(ids):
            t = self.inst.group_wa[int(k)]
            out[row] = a * t.sign * (np.nan_to_num(self.inst.fields[t.field][loans]) - t.bound)
        return out

    def sums(self, idx: RouteIndex) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the members' amount x field, and their amount."""
        ws, tot = np.zeros(self.m), np.zeros(self.m)
        for k, t in enumerate(self.inst.group_wa):
            for r in t.members:
                loans = idx.on[r]
                ws[k] += float(np.dot(idx.amount[loans], np.nan_to_num(self.inst.fields[t.field][loans])))
                tot[k] += float(idx.totals[r])
        return ws, tot

    def activity(self, idx: RouteIndex) -> np.ndarray:
        if not self.m:
            return np.zeros(0)
        ws, tot = self.sums(idx)
        sign = np.array([t.sign for t in self.inst.group_wa])
        bound = np.array([t.bound for t in self.inst.group_wa])
        return sign * (ws - bound * tot)


class GroupRows(Family):
    """Diversification over several funders (:class:`~fundalloc.instance.GroupRow`):
    ``sum_{f in G} A_f - alpha D <= cap`` with ``D`` the day's funded principal, i.e. a loan on
    route ``r`` has the coefficient ``p_i (s_r 1[r in G] - alpha)``. A share row touches every
    route (each funded loan adds to ``D``), a cap row only its members'."""

    kind = RowKind.GROUP_MAX  # (three kinds; see ``kinds``)

    def __init__(self, inst: Instance):
        self.inst = inst
        g = inst.groups
        self.route = np.array([x.members[0] if x.kind == "funder_share" else -1 for x in g], dtype=np.int64)
        self.ref = np.arange(len(g), dtype=np.int64)
        self.label = [x.label for x in g]
        self.rhs = np.array([x.cap for x in g], dtype=float)
        self.alpha = np.array([x.alpha for x in g], dtype=float)
        self.kinds = np.array([x.kind for x in g], dtype=object)
        R = inst.R
        self.member = np.zeros((len(g), R), dtype=bool)  # rows x routes
        for k, x in enumerate(g):
            self.member[k, list(x.members)] = True
        self._on = tuple(np.flatnonzero(self.member[:, r] | (self.alpha > 0)) for r in range(R))

    def rows_on(self, r: int) -> np.ndarray:
        return self._on[r] if self.m else np.zeros(0, dtype=np.int64)

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        ids = self.rows_on(r)
        per_unit = self.inst.share[r] * self.member[ids, r] - self.alpha[ids]
        return per_unit[:, None] * self.inst.principal[loans][None, :]

    def funded(self, idx: RouteIndex) -> float:
        """``D``: the principal of the funded loans."""
        return float(self.inst.principal[idx.route < self.inst.R].sum())

    def group_amounts(self, idx: RouteIndex) -> np.ndarray:
        """Per row: ``sum_{f in G} A_f``."""
        return self.member[:, :self.inst.R - 1] @ idx.totals[:self.inst.R - 1] if self.m else np.zeros(0)

    def activity(self, idx: RouteIndex) -> np.ndarray:
        if not self.m:
            return np.zeros(0)
        return self.group_amounts(idx) - self.alpha * self.funded(idx)


class ObligorRows(Family):
    """Single obligor: ``existing_fb + sum_{i of b} a_i <= obligor_limit_f`` per (funder, borrower)
    with a row. A loan touches at most one such row per route: its borrower's there, if any."""

    kind = RowKind.OBLIGOR

    def __init__(self, inst: Instance):
        self.inst = inst
        rows = inst.obligor_rows
        self.route = np.array([o.route for o in rows], dtype=np.int64)
        self.ref = np.arange(len(rows), dtype=np.int64)
        self.label = [f"obligor:{inst.route_ids[o.route]}:{o.borrower}" for o in rows]
        self.rhs = np.array([o.rhs for o in rows], dtype=float)
        key = np.array([o.slot * inst.R + o.route for o in rows], dtype=np.int64)
        self._order = np.argsort(key, kind="stable")
        self._keys = key[self._order]

    def row_of(self, loans: np.ndarray, r: np.ndarray | int) -> np.ndarray:
        """Local row of each loan's borrower on route ``r`` (per loan or one for all), -1: none."""
        out = np.full(len(loans), -1, dtype=np.int64)
        if not self.m or not len(loans):
            return out
        slot = self.inst.obligor_slot[loans]
        r = np.broadcast_to(np.asarray(r, dtype=np.int64), slot.shape)
        has = (slot >= 0) & (r < self.inst.R)
        key = slot[has] * self.inst.R + r[has]
        pos = np.minimum(np.searchsorted(self._keys, key), len(self._keys) - 1)
        hit = self._keys[pos] == key
        found = np.full(len(key), -1, dtype=np.int64)
        found[hit] = self._order[pos[hit]]
        out[has] = found
        return out

    def rows_on(self, r: int) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)  # sparse: see ``row_of``

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        return np.zeros((0, len(loans)))

    def activity(self, idx: RouteIndex) -> np.ndarray:
        out = np.zeros(self.m)
        if not self.m:
            return out
        has = np.flatnonzero(self.inst.obligor_slot >= 0)
        r = idx.route[has]
        row = self.row_of(has, r)
        ok = row >= 0
        np.add.at(out, row[ok], idx.amount[has[ok]])
        return out


@dataclass(frozen=True, eq=False)
class Rows:
    """Every hard row: ``lhs_k(route) <= rhs_k``; families in a fixed order, rows numbered through."""

    inst: Instance
    families: tuple[Family, ...]

    @staticmethod
    def build(inst: Instance) -> "Rows":
        fams: list[Family] = [CapRows(inst, RowKind.DAILY_MAX, inst.daily_max),
                              CapRows(inst, RowKind.FACILITY_HEADROOM, inst.headroom),
                              MinRows(inst),
                              ConcentrationRows(inst), WeightedAverageRows(inst), PlatformRows(inst),
                              GroupConcentrationRows(inst), GroupWeightedAverageRows(inst), GroupRows(inst),
                              ObligorRows(inst)]
        off = 0
        for f in fams:
            f.offset = off
            off += f.m
        return Rows(inst, tuple(fams))

    @cached_property
    def m(self) -> int:
        return sum(f.m for f in self.families)

    @cached_property
    def rhs(self) -> np.ndarray:
        return np.concatenate([f.rhs for f in self.families]) if self.families else np.zeros(0)

    @cached_property
    def route(self) -> np.ndarray:
        return np.concatenate([f.route for f in self.families]).astype(np.int64)

    @cached_property
    def ref(self) -> np.ndarray:
        return np.concatenate([f.ref for f in self.families]).astype(np.int64)

    @cached_property
    def kind(self) -> np.ndarray:
        parts = []
        for f in self.families:
            kinds = getattr(f, "kinds", None)
            parts.append(kinds if kinds is not None else np.full(f.m, f.kind.value, dtype=object))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=object)

    @cached_property
    def label(self) -> list[str]:
        return [lab for f in self.families for lab in f.label]

    @cached_property
    def index(self) -> dict[str, int]:
        return {lab: k for k, lab in enumerate(self.label)}

    @property
    def obligor(self) -> ObligorRows:
        return self.families[-1]  # type: ignore[return-value]

    @property
    def groups(self) -> GroupRows:
        return self.families[-2]  # type: ignore[return-value]

    def members(self, k: int) -> np.ndarray:
        """The routes of a row over several funders (a group's: ``route`` -1), ascending."""
        for f in self.families:
            if f.m and f.offset <= k < f.offset + f.m and hasattr(f, "member"):
                return np.flatnonzero(f.member[k - f.offset])
        return np.zeros(0, dtype=np.int64)

    @cached_property
    def route_rows(self) -> tuple[np.ndarray, ...]:
        """Per route (funders, then the platform): the ids of the rows a loan there touches,
        ascending (obligor rows aside)."""
        out = []
        for r in range(self.inst.R):
            ids = [f.offset + f.rows_on(r) for f in self.families if f.m]
            out.append(np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64))
        return tuple(out)

    def coef(self, r: int, loans: np.ndarray) -> np.ndarray:
        """``len(route_rows[r]) x len(loans)``: the loans' coefficients on route ``r``'s rows."""
        blocks = [f.coef(r, loans) for f in self.families if f.m and len(f.rows_on(r))]
        return np.vstack(blocks) if blocks else np.zeros((0, len(loans)))

    def activity(self, route: np.ndarray, idx: RouteIndex | None = None) -> np.ndarray:
        """Every row's left side under a whole-loan plan (route ``R``: unfunded)."""
        idx = idx if idx is not None else RouteIndex.of(self.inst, route)
        parts = [f.activity(idx) for f in self.families]
        return np.concatenate(parts) if parts else np.zeros(0)

    def excess(self, route: np.ndarray) -> np.ndarray:
        return self.activity(route) - self.rhs

    def broken(self, route: np.ndarray, tol: float = TOL) -> np.ndarray:
        """Ids of the rows a plan breaks."""
        return np.flatnonzero(self.excess(route) > tol)

    def delta(self, a: int, b: int, loans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """How moving each loan from route ``a`` to ``b`` (``R``: unfunded) changes the rows
        (obligor rows aside): the row ids it touches and a ``rows x loans`` matrix."""
        R = self.inst.R
        ra = self.route_rows[a] if a < R else np.zeros(0, dtype=np.int64)
        rb = self.route_rows[b] if b < R else np.zeros(0, dtype=np.int64)
        u = np.union1d(ra, rb)
        out = np.zeros((len(u), len(loans)))
        if len(ra):
            out[np.searchsorted(u, ra)] -= self.coef(a, loans)
        if len(rb):
            out[np.searchsorted(u, rb)] += self.coef(b, loans)
        return u, out

    def obligor_delta(self, loans: np.ndarray, a: np.ndarray, b: np.ndarray) -> list[tuple[int, float]]:
        """The obligor rows moves of ``loans`` from ``a`` to ``b`` touch: (row id, change) pairs."""
        ob = self.obligor
        if not ob.m or not len(loans):
            return []
        inst = self.inst
        out: list[tuple[int, float]] = []
        amt_a = np.append(inst.share, 0.0)[a] * inst.principal[loans]
        amt_b = np.append(inst.share, 0.0)[b] * inst.principal[loans]
        ra, rb = ob.row_of(loans, a), ob.row_of(loans, b)
        for k in np.flatnonzero(ra >= 0):
            out.append((ob.offset + int(ra[k]), -float(amt_a[k])))
        for k in np.flatnonzero(rb >= 0):
            out.append((ob.offset + int(rb[k]), float(amt_b[k])))
        return out


def loan_cost(inst: Instance, loans: np.ndarray, routes: np.ndarray) -> np.ndarray:
    """Each loan's funding cost on its route, or the unfunded penalty on its principal (``R``)."""
    R = inst.R
    funded = routes < R
    r = np.where(funded, routes, 0)
    k1, k0 = inst.rates(loans, r)
    unit = k1 * inst.life[loans] + k0
    return inst.principal[loans] * np.where(funded, unit, inst.penalty_of(loans))


def shortfall_cost(inst: Instance, totals: np.ndarray) -> float:
    """The soft minimums' fees: ``sum_f fee_f max(0, daily_min_f - A_f)`` (a hard minimum is a row)."""
    F = inst.R - 1
    short = np.maximum(inst.daily_min[:F] - totals[:F], 0.0)
    return float(np.dot(np.nan_to_num(inst.shortfall_fee[:F]), short))


def objective(inst: Instance, route: np.ndarray) -> float:
    """A whole-loan plan's objective: funding cost, unfunded principal at the penalty, shortfall fees."""
    amount = np.append(inst.share, 0.0)[route] * inst.principal
    funded = route < inst.R
    k1, k0 = inst.rates(None, np.where(funded, route, 0))
    cost = np.where(funded, k1 * inst.principal_life + k0 * inst.principal, 0.0)
    totals = np.bincount(route, weights=amount, minlength=inst.R + 1)[:inst.R]
    unfunded = route == inst.R
    lost = float(np.dot(np.broadcast_to(inst.penalty_of(None), (inst.n,))[unfunded], inst.principal[unfunded]))
    return float(cost.sum() + lost + shortfall_cost(inst, totals))
