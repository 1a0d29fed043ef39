"""A day compiled into arrays: the loans, the routes and every limit, ready to formulate.

Everything here is computed with whole-column operations: eligibility is an ``n x R`` boolean
matrix built rule by rule, a ``per`` concentration keeps one integer code per loan (not one mask
per value), and obligor limits are pre-reduced so that only the few borrowers who can actually
bind keep a row of their own.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import Collector, InputError
from .io import _rows
from .rules import ColumnView, RuleError
from .terms import Basis, Concentration, Funder, RateGrid, Terms

BREACH_TOL = 1e-9
#: a hard minimum's fee in the models, in unfunded penalties per unit of the smallest funding share
#: (an exact penalty: a minimum row's dual is far below it; at 1e4 the rounding MIPs were slow and
#: rounded worse, see the README)
HARD_FEE_FACTOR = 1e2
#: fields of prices by the loan (not weighted-average fields): a loan's value unfunded, and its bid
#: at a bidding route (the names cannot clash with an originations column's: no column name is used)
VALUE_FIELD = "@value"


def bid_field(route_id: str) -> str:
    return f"@bid:{route_id}"


def measure_field(route_id: str) -> str:
    return f"@measure:{route_id}"


#: one over the principal: summed as principal x field it counts loans (the shares of the count)
COUNT_FIELD = "@count"


@dataclass(frozen=True, eq=False)
class Segment:
    """One concentration row: ``E_S + sum_{i in S} a_i <= alpha * (E + A)``."""

    family: int
    route: int
    name: str
    value: Any  # the ``per`` value, or None
    alpha: float
    basis: Basis
    existing_total: float  # E_f
    existing_segment: float  # E_fS
    code: int  # index into the family's per-values, -1 when there is no ``per``
    breached: bool

    @property
    def rhs(self) -> float:
        """``alpha * E_f - E_fS`` (0 on the ``new`` basis)."""
        if self.basis == Basis.NEW:
            return 0.0
        return self.alpha * self.existing_total - self.existing_segment

    @property
    def label(self) -> str:
        return self.name if self.value is None else f"{self.name}[{self.value}]"


@dataclass(frozen=True, eq=False)
class ConcFamily:
    """A concentration limit of one funder, with every row it makes."""

    route: int
    spec: Concentration
    where: np.ndarray  # n bool
    per_codes: np.ndarray | None  # n integer codes, -1 where missing
    per_values: pd.Index | None
    basis: Basis
    segments: tuple[Segment, ...]

    @property
    def counts(self) -> bool:
        """The share is of the number of loans (else of the funder amount)."""
        return self.spec.counts

    def member_code(self, loans: np.ndarray | None = None) -> np.ndarray:
        """Per loan (or per loan in ``loans``): its segment index in this family, or -1."""
        where = self.where if loans is None else self.where[loans]
        if self.per_codes is None:
            return np.where(where, 0, -1)
        return np.where(where, self.per_codes if loans is None else self.per_codes[loans], -1)


@dataclass(frozen=True, eq=False)
class WATest:
    """A weighted-average test; on the portfolio basis with the existing book's outstanding ``E``
    and its sum of outstanding x field ``EW`` (both 0 on the new basis)."""

    route: int
    field: str
    min: float | None
    max: float | None
    existing_total: float = 0.0
    existing_weighted: float = 0.0
    portfolio: bool = False

    def rhs(self, bound: float, sign: float) -> float:
        """The room the existing book leaves the row ``sign * sum_i a_i (w_i - bound) <= rhs``:
        ``sign * (bound * E - EW)``, or 0 when the book is already outside the limit (today's loans
        are then held to it on their own)."""
        return max(0.0, sign * (bound * self.existing_total - self.existing_weighted))

    def breached(self, bound: float, sign: float) -> bool:
        return self.portfolio and sign * (bound * self.existing_total - self.existing_weighted) < -BREACH_TOL * max(
            abs(self.existing_weighted), 1.0)


@dataclass(frozen=True, eq=False)
class ObligorRow:
    route: int
    borrower: str
    slot: int  # obligor slot of the borrower (index into Instance.obligor_borrowers)
    existing: float
    limit: float

    @property
    def rhs(self) -> float:
        return self.limit - self.existing


@dataclass(frozen=True, eq=False)
class GroupRow:
    """One diversification row over several funders: ``sum_{f in G} A_f <= alpha * D + cap``, with
    ``D`` the day's funded principal. A share row has ``cap = 0``, a cap row ``alpha = 0``; the
    platform's ``max_funder_share`` gives one share row per funder (a group of one)."""

    kind: str  # "funder_share", "group_share" or "group_max"
    name: str  # the funder's id (funder_share) or the group's name
    members: tuple[int, ...]  # routes
    alpha: float
    cap: float

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, eq=False)
class GroupConc:
    """A concentration limit of a group: each segment's share of the members' total today,
    ``sum_{f in G} sum_{i in S} a_if <= alpha * sum_{f in G} A_f`` (one segment per ``per`` value)."""

    group: str
    members: tuple[int, ...]
    spec: Concentration
    where: np.ndarray  # n bool
    per_codes: np.ndarray | None
    per_values: pd.Index | None
    segments: tuple[tuple[str, int], ...]  # (label, code: the per value's index, 0 without per)

    @property
    def counts(self) -> bool:
        return self.spec.counts

    def member_code(self, loans: np.ndarray | None = None) -> np.ndarray:
        where = self.where if loans is None else self.where[loans]
        if self.per_codes is None:
            return np.where(where, 0, -1)
        return np.where(where, self.per_codes if loans is None else self.per_codes[loans], -1)


def _group_concentration(terms: Terms, view: ColumnView, elig: np.ndarray, src: dict[str, str],
                         problems: Collector) -> tuple[GroupConc, ...]:
    index = {f.id: r for r, f in enumerate(terms.funders)}
    out: list[GroupConc] = []
    for g in terms.groups:
        members = tuple(sorted(index[m] for m in g.members))
        anywhere = elig[:, list(members)].any(axis=1)
        for c in g.concentration:
            key = f"groups[{g.name}].concentration[{c.name}]"
            ok = _rule_problems(c.where, view, f"{key}.where", src["funders"], problems)
            if c.per is not None and not view.has(c.per):
                problems.add(src["funders"], f"{key}.per", f"'per' names column '{c.per}', which the originations "
                                                            "do not have")
                ok = False
            if not ok:
                continue
            where = view.all_of(c.where)
            if c.per is None:
                out.append(GroupConc(g.name, members, c, where, None, None, ((c.name, 0),)))
                continue
            codes, values = view.codes(c.per)
            counted = codes[anywhere & where & (codes >= 0)]
            present = np.flatnonzero(np.bincount(counted, minlength=len(values)))
            segs = tuple(sorted(((f"{c.name}[{values[k]}]", int(k)) for k in present), key=lambda s: s[0]))
            out.append(GroupConc(g.name, members, c, where, codes, values, segs))
    return tuple(out)


def _group_rows(terms: Terms) -> tuple[GroupRow, ...]:
    index = {f.id: r for r, f in enumerate(terms.funders)}
    out: list[GroupRow] = []
    x = terms.platform.max_funder_share
    for r, f in enumerate(terms.funders):  # a funder's own cap, else the platform's
        share = f.max_share_of_day if f.max_share_of_day is not None else x
        if share is not None:
            out.append(GroupRow("funder_share", f.id, (r,), float(share), 0.0))
    for g in terms.groups:
        members = tuple(sorted(index[m] for m in g.members))
        if g.daily_max is not None:
            out.append(GroupRow("group_max", g.name, members, 0.0, float(g.daily_max)))
        if g.max_share_of_day is not None:
            out.append(GroupRow("group_share", g.name, members, float(g.max_share_of_day), 0.0))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class GroupWA:
    """A group's weighted average over its members' loans today: ``sum_{f in G} sum_i a_if sign
    (w_i - bound) <= 0`` (``sign`` -1 for a minimum, +1 for a maximum)."""

    group: str
    members: tuple[int, ...]
    field: str
    bound: float
    sign: float

    @property
    def kind(self) -> str:
        return "group_weighted_average_min" if self.sign < 0 else "group_weighted_average_max"

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.group}:{self.field}"


@dataclass(frozen=True, eq=False)
class Instance:
    """The day's problem as arrays. Immutable; the engine never changes it."""

    terms: Terms
    loans: pd.DataFrame
    route_ids: tuple[str, ...]
    share: np.ndarray  # funder share s_f; 1 for the platform route
    platform_share: np.ndarray  # platform money per unit of principal on each route
    k1: np.ndarray  # cost per unit of principal per year of life
    k0: np.ndarray  # cost per unit of principal, upfront
    principal: np.ndarray
    life: np.ndarray
    elig: np.ndarray  # n x R bool
    fields: dict[str, np.ndarray]  # weighted-average fields, float64
    conc: tuple[ConcFamily, ...]
    wa: tuple[WATest, ...]
    obligor_slot: np.ndarray  # n int64: slot of a constrained borrower, -1 otherwise
    obligor_borrowers: tuple[str, ...]
    obligor_rows: tuple[ObligorRow, ...]
    daily_max: np.ndarray  # R, inf when none
    headroom: np.ndarray  # R, inf when none (facility_limit - outstanding)
    daily_min: np.ndarray  # R, 0 when none
    shortfall_fee: np.ndarray  # R
    daily_min_hard: np.ndarray  # R, 0 when none
    platform_capacity: float
    penalty: float
    breaches: tuple[dict[str, Any], ...]
    digest: str
    closed: dict[str, str] = field(default_factory=dict)  # route id -> reason it takes nothing
    groups: tuple[GroupRow, ...] = ()  # diversification rows over several funders
    group_conc: tuple[GroupConc, ...] = ()  # groups' concentration limits
    group_wa: tuple[GroupWA, ...] = ()  # groups' weighted averages
    # rate grids: per graded route, each loan's tier and the tiers' k1 and k0 (k1, k0 above hold
    # the grid's default there)
    tier: dict[int, np.ndarray] = field(default_factory=dict)
    tier_k1: dict[int, np.ndarray] = field(default_factory=dict)
    tier_k0: dict[int, np.ndarray] = field(default_factory=dict)
    #: the price of a unit short of a hard minimum in the models (an exact penalty: far above any
    #: dual the row can have, so an LP pays it only when no plan meets the minimum; see
    #: :mod:`fundalloc.solve.conflict`)
    hard_fee: float = 0.0
    use_min: np.ndarray | None = None  # R: min_if_used (0 when none); None: no funder has one
    fixed_cost: np.ndarray | None = None  # R: charged when the route takes any loan; None: none

    @property
    def use_routes(self) -> np.ndarray:
        """Routes whose use is a decision of its own (``min_if_used`` or ``fixed_cost``)."""
        m = np.zeros(self.R, dtype=bool)
        if self.use_min is not None:
            m |= self.use_min > 0
        if self.fixed_cost is not None:
            m |= self.fixed_cost > 0
        return np.flatnonzero(m)

    def fixed_charged(self, totals: np.ndarray) -> float:
        """The fixed costs of the routes a plan uses (``totals``: funder amount per route)."""
        if self.fixed_cost is None:
            return 0.0
        return float(self.fixed_cost[:len(totals)][totals > 0].sum())
    #: per-loan values (the terms name an originations column as ``unfunded_penalty``): the cost
    #: per unit of principal of leaving each loan unfunded; None: ``penalty`` for every loan. Also
    #: the field ``VALUE_FIELD`` (the unfunded option's cost, aggregated like any field)
    loan_penalty: np.ndarray | None = None
    #: routes priced by the bids file: each loan's price there (0 where it has no bid, and is not
    #: eligible). ``k1``/``k0`` of such a route hold its price-free part, ``(1 - s) r_P`` and ``s``;
    #: the price enters as the field ``bid_field(r)`` (``- s q_i``), so loans with different bids
    #: still share a class and the LP aggregates them exactly, like a weighted-average field
    bid_price: dict[int, np.ndarray] = field(default_factory=dict)

    #: routes whose caps count another amount than the principal (``cap_measure``): the field
    #: ``measure_field(route id)`` holds each loan's amount over its principal, so that principal
    #: x field (what units sum) is the amount, and a cap row reads ``sum s_f m_i`` over its loans
    measured: tuple[int, ...] = ()

    @property
    def bid_routes(self) -> tuple[int, ...]:
        return tuple(self.bid_price)

    def cap_amount(self, r: int, loans: np.ndarray) -> np.ndarray:
        """What each loan counts against route ``r``'s caps: ``s_r`` times its principal, or its
        measured amount where the route has a ``cap_measure``."""
        if r in self.measured:
            return self.share[r] * self.principal_fields[measure_field(self.route_ids[r])][loans]
        return self.share[r] * self.principal[loans]

    def penalty_of(self, loans: np.ndarray | None = None) -> np.ndarray | float:
        """The unfunded penalty per unit of principal of ``loans`` (None: every loan, in order)."""
        if self.loan_penalty is None:
            return self.penalty
        return self.loan_penalty if loans is None else self.loan_penalty[loans]

    def rates(self, loans: np.ndarray | None, routes: np.ndarray | int,
              priced: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``k1`` and ``k0`` of each loan on its route (routes ``< R``; one route for all, or one
        each). ``loans`` None: every loan of the day, in order (``routes`` then has one per loan).
        ``priced`` False: a bidding route's price-free part (a unit's price is its field sum)."""
        routes = np.broadcast_to(np.asarray(routes, dtype=np.int64), (self.n,) if loans is None else np.shape(loans))
        k1, k0 = self.k1[routes], self.k0[routes]
        if self.tier or self.bid_price:
            k1, k0 = k1.copy(), k0.copy()
            for r, t in self.tier.items():
                sel = np.flatnonzero(routes == r)
                if len(sel):
                    tk = t[sel if loans is None else loans[sel]]
                    k1[sel], k0[sel] = self.tier_k1[r][tk], self.tier_k0[r][tk]
            for r, q in self.bid_price.items() if priced else ():
                sel = np.flatnonzero(routes == r)
                if len(sel):
                    k0[sel] -= self.share[r] * q[sel if loans is None else loans[sel]]
        return k1, k0

    def rate_matrix(self, loans: np.ndarray, priced: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``len(loans) x R``: ``k1`` and ``k0`` of each loan on every route. ``priced`` False: a
        bidding route's price-free part only (the class-level view, where bids are a field)."""
        K1 = np.broadcast_to(self.k1, (len(loans), self.R)).copy()
        K0 = np.broadcast_to(self.k0, (len(loans), self.R)).copy()
        for r, t in self.tier.items():
            tk = t[loans]
            K1[:, r], K0[:, r] = self.tier_k1[r][tk], self.tier_k0[r][tk]
        if priced:
            for r, q in self.bid_price.items():
                K0[:, r] -= self.share[r] * q[loans]
        return K1, K0

    @cached_property
    def group_segments(self) -> tuple[tuple[GroupConc, str, int], ...]:
        """Every group-concentration row's limit, label and code, by its flat index (its ``ref``)."""
        return tuple((gc, label, code) for gc in self.group_conc for label, code in gc.segments)

    @property
    def has_funded_total(self) -> bool:
        """Whether a row needs the day's funded principal ``D`` (a share-of-day limit)."""
        return any(g.alpha > 0 for g in self.groups)

    @property
    def n(self) -> int:
        return len(self.principal)

    @property
    def R(self) -> int:
        return len(self.route_ids)

    @property
    def platform_route(self) -> int:
        return self.R - 1

    @property
    def funders(self) -> tuple[Funder, ...]:
        return self.terms.funders

    @cached_property
    def principal_life(self) -> np.ndarray:
        """``principal * life`` per loan (what a unit sums for its life-weighted costs)."""
        return self.principal * self.life

    @cached_property
    def principal_fields(self) -> dict[str, np.ndarray]:
        """``principal * field`` per loan for every weighted-average field."""
        return {k: self.principal * v for k, v in self.fields.items()}

    @cached_property
    def segments(self) -> tuple[tuple[ConcFamily, Segment], ...]:
        """Every concentration row's family and segment, by its flat index (``Segment`` order
        within each family, families in order): the ``ref`` of a concentration row."""
        return tuple((fam, s) for fam in self.conc for s in fam.segments)

    def segment_of(self, ref: int) -> tuple[ConcFamily, Segment]:
        return self.segments[ref]

    def unit_cost(self, loans: np.ndarray | None = None) -> np.ndarray:
        """Cost per unit of principal for every (loan, route): ``k1 * L + k0`` (loans x R)."""
        loans = np.arange(self.n) if loans is None else loans
        K1, K0 = self.rate_matrix(loans)
        return self.life[loans, None] * K1 + K0


def file_digest(terms: Terms, paths: dict[str, str | None]) -> str:
    """Digest of the inputs as files: the terms' canonical JSON and each file's bytes."""
    h = hashlib.sha256()
    h.update(terms.canonical_json().encode())
    for name in ("originations", "portfolio", "exposures", "bids"):
        if name == "bids" and paths.get(name) is None:
            continue  # (a day without bids keeps the digest it always had)
        h.update(name.encode())
        path = paths.get(name)
        if path is None:
            h.update(b"none")
            continue
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def _digest(loans: pd.DataFrame, terms: Terms, portfolio: pd.DataFrame | None,
            exposures: pd.DataFrame | None, bids: pd.DataFrame | None = None) -> str:
    h = hashlib.sha256()
    h.update(terms.canonical_json().encode())
    tables = [("loans", loans), ("portfolio", portfolio), ("exposures", exposures)]
    if bids is not None:  # (a day without bids keeps the digest it always had)
        tables.append(("bids", bids))
    for name, table in tables:
        h.update(name.encode())
        if table is None:
            h.update(b"none")
            continue
        cols = sorted(table.columns)
        h.update(",".join(cols).encode())
        if len(table):
            hashed = pd.util.hash_pandas_object(table[cols], index=False).to_numpy()
            h.update(hashed.tobytes())
    return "sha256:" + h.hexdigest()


def _rule_problems(rules: dict, view: ColumnView, where: str, source: str,
                   problems: Collector) -> bool:
    ok = True
    for col, rule in rules.items():
        if not view.has(col):
            problems.add(source, f"{where}.{col}",
                         f"the rule names column '{col}', which the originations do not have")
            ok = False
            continue
        try:
            view.mask(col, rule)
        except RuleError as exc:
            problems.add(source, f"{where}.{col}", str(exc))
            ok = False
    return ok


def compile_instance(
    loans: pd.DataFrame,
    terms: Terms,
    portfolio: pd.DataFrame | None = None,
    exposures: pd.DataFrame | None = None,
    *,
    sources: dict[str, str] | None = None,
    digest: str | None = None,
    bids: pd.DataFrame | None = None,
) -> Instance:
    """Compile validated tables and terms into an :class:`Instance`.

    Raises :class:`InputError` listing every rule that names a missing or mistyped column, a
    portfolio that lacks a segment's column, and an ``unfunded_penalty`` that does not exceed a
    route's cost per unit of principal.
    """
    src = {"funders": "funders", "originations": "originations", "portfolio": "portfolio",
           "exposures": "exposures", "bids": "bids", **(sources or {})}
    problems = Collector()
    view = ColumnView(loans)
    pview = ColumnView(portfolio) if portfolio is not None else None
    funders = terms.funders
    # the borrowers' codes (a hash over every loan's borrower id, the dearest step of a big day's
    # compilation) on a thread of their own, while the rules are compiled: Arrow releases the GIL
    borrower_codes: Future | None = None
    pool = None
    if any(f.obligor_limit is not None for f in funders) and "borrower_id" in loans.columns:
        pool = ThreadPoolExecutor(1)
        borrower_codes = pool.submit(_borrower_codes, loans["borrower_id"])
    try:
        return _compile(loans, terms, portfolio, exposures, src, problems, view, pview, borrower_codes, digest, bids)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _borrower_codes(column: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """Dense codes of the borrower ids by first appearance (-1: none), and the ids coded."""
    ids = pa.chunked_array(pa.array(column.astype("string[pyarrow]"))).combine_chunks()
    enc = pc.dictionary_encode(ids)  # (one chunk: unifying per-chunk dictionaries is far slower)
    codes = enc.indices.fill_null(-1) if enc.null_count else enc.indices
    return codes.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary


def _compile(loans: pd.DataFrame, terms: Terms, portfolio: pd.DataFrame | None, exposures: pd.DataFrame | None,
             src: dict[str, str], problems: Collector, view: ColumnView, pview: ColumnView | None,
             borrower_codes: Future | None, digest: str | None, bids: pd.DataFrame | None = None) -> Instance:
    funders = terms.funders
    plat = terms.platform
    R = len(funders) + 1
    n = len(loans)
    route_ids = terms.route_ids

    # --- routes ------------------------------------------------------------------------------
    share = np.array([f.funding_share for f in funders] + [1.0])
    platform_share = np.array([1.0 - f.funding_share for f in funders] + [1.0])
    rP = plat.cost_of_capital
    k1 = np.array([f.funding_share * _default_rate(f.cost_of_funds) + (1 - f.funding_share) * rP for f in funders]
                  + [rP])
    k0 = np.array([f.funding_share * _default_rate(f.upfront_fee) for f in funders] + [0.0])

    principal = loans["principal"].to_numpy(dtype="float64")
    tenor = loans["tenor_months"].to_numpy(dtype="float64")
    life = (tenor + 1.0) / 24.0
    if "expected_life_years" in loans.columns:
        given = loans["expected_life_years"].to_numpy(dtype="float64", na_value=np.nan)
        life = np.where(np.isnan(given), life, given)

    # --- eligibility -------------------------------------------------------------------------
    # built column by column, so column-major here (a column of a row-major n x R array is a
    # strided pass over all of it); row-major once at the end, which is how the solver reads it
    elig = np.zeros((n, R), dtype=bool, order="F")
    for r, f in enumerate(funders):
        if _rule_problems(f.eligibility, view, f"funders[{f.id}].eligibility", src["funders"], problems):
            elig[:, r] = view.all_of(f.eligibility)
    if _rule_problems(plat.eligibility, view, "platform.eligibility", src["funders"], problems):
        elig[:, R - 1] = view.all_of(plat.eligibility)

    # --- rate grids: a tier per loan where a funder prices by the loan ------------------------
    tier, tier_k1, tier_k0 = {}, {}, {}
    for r, f in enumerate(funders):
        if not isinstance(f.cost_of_funds, RateGrid) and not isinstance(f.upfront_fee, RateGrid):
            continue
        rate_i, rate_v = _grid_tiers(f.cost_of_funds, view, f"funders[{f.id}].cost_of_funds", n, src, problems)
        fee_i, fee_v = _grid_tiers(f.upfront_fee, view, f"funders[{f.id}].upfront_fee", n, src, problems)
        if rate_i is None or fee_i is None:
            continue
        s = f.funding_share
        tier[r] = (rate_i * len(fee_v) + fee_i).astype(np.int32)
        tier_k1[r] = np.repeat(s * rate_v + (1 - s) * rP, len(fee_v))
        tier_k0[r] = np.tile(s * fee_v, len(rate_v))

    bid_price = _bid_prices(bids, loans, terms, elig, src, problems)
    for r in bid_price:  # the price-free part of a bidding route (the price is a field: see Instance)
        s = funders[r].funding_share
        k1[r], k0[r] = (1 - s) * rP, s
        tier.pop(r, None)  # (a bid replaces a rate grid)
        tier_k1.pop(r, None)
        tier_k0.pop(r, None)
    loan_penalty = _loan_penalty(plat, loans, src, problems)

    # --- weighted averages -------------------------------------------------------------------
    fields: dict[str, np.ndarray] = {}
    wa: list[WATest] = []
    for r, f in enumerate(funders):
        for j, t in enumerate(f.weighted_average):
            where = f"funders[{f.id}].weighted_average[{j}].field"
            if t.field.startswith("@"):
                problems.add(src["funders"], where, f"'{t.field}': a field name may not begin with '@' "
                                                    "(reserved for prices by the loan)")
                continue
            if not view.has(t.field):
                problems.add(src["funders"], where,
                             f"the test reads column '{t.field}', which the originations do not have")
                continue
            if t.field not in fields:
                try:
                    fields[t.field] = view.numeric(t.field)
                except RuleError:
                    problems.add(src["funders"], where,
                                 f"column '{t.field}' is not numeric; a weighted average needs numbers")
                    continue
            elig[:, r] &= ~np.isnan(fields[t.field])
            if t.basis == Basis.PORTFOLIO and f.weighted_average_base is not None:  # the book, from the terms
                base = f.weighted_average_base
                if t.field not in base:
                    problems.add(src["funders"], f"funders[{f.id}].weighted_average_base",
                                 f"has no average of '{t.field}' for the portfolio-basis test on it")
                    continue
                E = float(base["outstanding"])
                wa.append(WATest(r, t.field, t.min, t.max, E, E * float(base[t.field]), True))
            elif t.basis == Basis.PORTFOLIO:
                book = _book_sums(f.id, t.field, portfolio, f"funders[{f.id}].weighted_average[{j}].basis", src, problems)
                if book is None:
                    continue
                wa.append(WATest(r, t.field, t.min, t.max, book[0], book[1], True))
            else:
                wa.append(WATest(r, t.field, t.min, t.max))

    # --- concentration -----------------------------------------------------------------------
    breaches: list[dict[str, Any]] = []
    for t in wa:
        for bound, sign, side in ((t.min, -1.0, "min"), (t.max, 1.0, "max")):
            if bound is not None and t.breached(bound, sign):
                breaches.append({
                    "funder_id": funders[t.route].id, "constraint": f"weighted_average_{side}:{t.field}",
                    "kind": f"weighted_average_{side}", "existing_average": t.existing_weighted / t.existing_total
                    if t.existing_total > 0 else None, side: bound,
                    "action": "the book is already outside the limit: today's loans are held to it on their own"})
    conc: list[ConcFamily] = []
    for r, f in enumerate(funders):
        for j, c in enumerate(f.concentration):
            key = f"funders[{f.id}].concentration[{c.name}]"
            ok = _rule_problems(c.where, view, f"{key}.where", src["funders"], problems)
            if c.per is not None and not view.has(c.per):
                problems.add(src["funders"], f"{key}.per",
                             f"'per' names column '{c.per}', which the originations do not have")
                ok = False
            basis = c.basis or (Basis.PORTFOLIO if portfolio is not None and not c.counts else Basis.NEW)
            prows = None
            if basis == Basis.PORTFOLIO and pview is not None:
                missing = [col for col in c.columns() if not pview.has(col)]
                for col in missing:
                    problems.add(src["portfolio"], f"column '{col}'",
                                 f"{key} is on the portfolio basis and reads '{col}', which the "
                                 "portfolio positions do not have")
                if missing:
                    ok = False
                else:
                    prows = (portfolio["funder_id"] == f.id).fillna(False).to_numpy()
            if not ok:
                continue
            where_mask = view.all_of(c.where)
            per_codes = per_values = None
            if c.per is not None:
                per_codes, per_values = view.codes(c.per)
            segs = _segments(len(conc), r, f, c, basis, where_mask, per_codes, per_values,
                             elig[:, r], portfolio, pview, prows)
            for s in segs:
                if s.breached:
                    breaches.append({
                        "funder_id": f.id, "constraint": f"concentration:{s.label}",
                        "kind": "concentration", "existing_share": s.existing_segment / s.existing_total
                        if s.existing_total > 0 else None,
                        "max_share": s.alpha, "existing_segment": s.existing_segment,
                        "existing_total": s.existing_total,
                        "action": "closed: no new loans of this segment go to this funder today",
                    })
                    member = where_mask if per_codes is None else where_mask & (per_codes == s.code)
                    elig[:, r] &= ~member
            conc.append(ConcFamily(r, c, where_mask, per_codes, per_values, basis, tuple(segs)))

    # prices by the loan that enter the costs linearly in principal: aggregated like fields
    if any(c.counts for f in funders for c in f.concentration) or \
            any(c.counts for g in terms.groups for c in g.concentration):
        p = principal
        fields[COUNT_FIELD] = np.divide(1.0, p, out=np.zeros(len(p)), where=p > 0)
    for r, q in bid_price.items():
        fields[bid_field(route_ids[r])] = q
    measured = _measures(funders, loans, fields, route_ids, src, problems)
    if loan_penalty is not None:
        fields[VALUE_FIELD] = loan_penalty

    # --- caps ----------------------------------------------------------------------------------
    daily_max = np.array([f.day_cap if f.day_cap is not None else np.inf for f in funders] + [np.inf])
    headroom = np.array(
        [f.facility_limit - f.outstanding if f.facility_limit is not None else np.inf for f in funders]
        + [np.inf]
    )
    closed: dict[str, str] = {}
    for r, f in enumerate(funders):
        if headroom[r] < 0:
            breaches.append({"funder_id": f.id, "constraint": "facility_headroom", "kind": "facility_headroom",
                             "outstanding": f.outstanding, "facility_limit": f.facility_limit,
                             "action": "closed: outstanding already above the facility limit"})
            closed[f.id] = "facility already above its limit"
            elig[:, r] = False
    daily_min = np.array([f.daily_min or 0.0 for f in funders] + [0.0])
    fee = np.array([f.shortfall_fee for f in funders] + [0.0])
    min_hard = np.array([f.daily_min_hard or 0.0 for f in funders] + [0.0])
    use_min = np.array([f.min_if_used or 0.0 for f in funders] + [0.0])
    fixed_cost = np.array([f.fixed_cost or 0.0 for f in funders] + [0.0])
    if plat.penalty_column is None:
        penalty = float(plat.unfunded_penalty)
    else:  # (the hard minimums' fee scales with it; a missing column is reported below)
        penalty = float(max(loan_penalty.max(), 1.0)) if loan_penalty is not None and n else 1.0
    hard_fee = HARD_FEE_FACTOR * penalty / float(share.min()) if (min_hard > 0).any() else 0.0
    cap = plat.daily_capacity if plat.daily_capacity is not None else np.inf

    # --- obligor limits ------------------------------------------------------------------------
    slot = np.full(n, -1, dtype=np.int64)
    borrowers: list[str] = []
    orows: list[ObligorRow] = []
    if any(f.obligor_limit is not None for f in funders):
        if "borrower_id" not in loans.columns:
            for f in funders:
                if f.obligor_limit is not None:
                    problems.add(src["funders"], f"funders[{f.id}].obligor_limit",
                                 "an obligor limit needs the originations column 'borrower_id'")
        else:
            slot, borrowers, orows = _obligor(borrower_codes.result(), funders, exposures, share, principal,
                                              elig, breaches)

    group_conc = _group_concentration(terms, view, elig, src, problems)
    group_wa = _group_averages(terms, view, elig, fields, src, problems)

    # --- unfunded penalty ----------------------------------------------------------------------
    if n and plat.penalty_column is None:  # (a loan's own value may be below a route's cost: it stays unfunded)
        for r in range(R):
            if elig[:, r].any():
                if r in tier:
                    on = elig[:, r]
                    worst = float((tier_k1[r][tier[r][on]] * life[on] + tier_k0[r][tier[r][on]]).max())
                else:
                    worst = float(k1[r] * life[elig[:, r]].max() + k0[r])
                if worst >= plat.unfunded_penalty:
                    problems.add(src["funders"], "platform.unfunded_penalty",
                                 f"{plat.unfunded_penalty} does not exceed route '{route_ids[r]}''s cost "
                                 f"per unit of principal ({worst:.6g}); raise it above every route's cost")
    problems.raise_if_any()

    elig = np.ascontiguousarray(elig)
    for arr in (elig, principal, life, slot, *fields.values()):
        arr.flags.writeable = False  # the instance is a value: nothing downstream may change it
    return Instance(
        terms=terms, loans=loans, route_ids=route_ids, share=share, platform_share=platform_share,
        k1=k1, k0=k0, principal=principal, life=life, elig=elig, fields=fields, conc=tuple(conc),
        wa=tuple(wa), obligor_slot=slot, obligor_borrowers=tuple(borrowers), obligor_rows=tuple(orows),
        daily_max=daily_max, headroom=headroom, daily_min=daily_min, shortfall_fee=fee,
        daily_min_hard=min_hard, hard_fee=hard_fee,
        use_min=use_min if (use_min > 0).any() else None, fixed_cost=fixed_cost if (fixed_cost > 0).any() else None,
        platform_capacity=float(cap), penalty=penalty, breaches=tuple(breaches),
        digest=digest or _digest(loans, terms, portfolio, exposures, bids), closed=closed,
        groups=_group_rows(terms), tier=tier, tier_k1=tier_k1, tier_k0=tier_k0, group_conc=group_conc, group_wa=group_wa,
        loan_penalty=loan_penalty, bid_price=bid_price, measured=measured,
    )


def _segments(family: int, r: int, f: Funder, c: Concentration, basis: Basis, where_mask: np.ndarray,
              per_codes: np.ndarray | None, per_values: pd.Index | None, elig_r: np.ndarray,
              portfolio: pd.DataFrame | None, pview: ColumnView | None,
              prows: np.ndarray | None) -> list[Segment]:
    """The rows of one concentration limit, with existing positions and breach flags."""
    E = ES_where = 0.0
    pvals: pd.Series | None = None
    if basis == Basis.PORTFOLIO and prows is not None:
        out = portfolio["outstanding"].to_numpy(dtype="float64")
        E = float(out[prows].sum())
        pw = prows & pview.all_of(c.where)
        ES_where = float(out[pw].sum())
        if c.per is not None:
            pvals = pd.Series(out[pw]).groupby(portfolio[c.per][pw].astype(str).to_numpy()).sum()
    segs: list[Segment] = []
    if c.per is None:
        breached = basis == Basis.PORTFOLIO and ES_where > c.max_share * E + BREACH_TOL * max(E, 1.0)
        segs.append(Segment(family, r, c.name, None, c.max_share, basis, E, ES_where, -1, breached))
        return segs
    # one row per value present among today's eligible loans in the where-filter, and per value
    # held in the portfolio (those may be breached even with no new loans today)
    counted = per_codes[elig_r & where_mask & (per_codes >= 0)]
    present = np.flatnonzero(np.bincount(counted, minlength=len(per_values)))  # no sort of n codes
    values = {str(per_values[k]): int(k) for k in present}
    if pvals is not None:
        value_index = {str(v): i for i, v in enumerate(per_values)}
        for v in pvals.index:
            values.setdefault(str(v), value_index.get(str(v), -2))
    for v in sorted(values, key=lambda s: (values[s] < 0, s)):
        code = values[v]
        es = float(pvals.get(v, 0.0)) if pvals is not None else 0.0
        breached = basis == Basis.PORTFOLIO and es > c.max_share * E + BREACH_TOL * max(E, 1.0)
        label_value = per_values[code] if code >= 0 else v
        segs.append(Segment(family, r, c.name, label_value, c.max_share, basis, E, es, code, breached))
    return segs


def _default_rate(price: float | RateGrid) -> float:
    return price.default if isinstance(price, RateGrid) else float(price)


def _grid_tiers(price: float | RateGrid, view: ColumnView, where: str, n: int, src: dict[str, str],
                problems: Collector) -> tuple[np.ndarray | None, np.ndarray]:
    """Per loan, the index of the grid line that prices it (first match; the default last), and
    the rates by index. A plain number is a grid of its default alone."""
    if not isinstance(price, RateGrid):
        return np.zeros(n, dtype=np.int64), np.array([float(price)])
    idx = np.full(n, len(price.lines), dtype=np.int64)
    ok = True
    for k in range(len(price.lines) - 1, -1, -1):  # the first line that matches wins
        line = price.lines[k]
        if not _rule_problems(line.where, view, f"{where}[{k + 1}].where", src["funders"], problems):
            ok = False
            continue
        idx[view.all_of(line.where)] = k
    return (idx if ok else None), np.array([line.rate for line in price.lines] + [price.default])


def _book_sums(fid: str, field: str, portfolio: pd.DataFrame | None, where: str, src: dict[str, str],
               problems: Collector) -> tuple[float, float] | None:
    """A funder's existing book for a portfolio-basis weighted average: its outstanding and its
    ``<field>_sum`` (outstanding x field), summed over the funder's portfolio rows."""
    column = f"{field}_sum"
    if portfolio is None:
        problems.add(src["funders"], where, f"a weighted average on the portfolio basis needs the portfolio "
                                            f"file, with a '{column}' column (outstanding x {field})")
        return None
    if column not in portfolio.columns:
        problems.add(src["portfolio"], f"column '{column}'", f"missing: funder {fid}'s weighted average of "
                                                             f"'{field}' on the portfolio basis needs it")
        return None
    values = pd.to_numeric(portfolio[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad)[:5] + 2
        problems.add(src["portfolio"], f"column '{column}', rows {', '.join(map(str, rows))}",
                     "must be a finite number")
        return None
    mine = (portfolio["funder_id"] == fid).to_numpy(dtype=bool)
    return float(portfolio["outstanding"].to_numpy(dtype=float)[mine].sum()), float(values[mine].sum())


def _obligor(borrower_codes: tuple[np.ndarray, pa.Array], funders: tuple[Funder, ...], exposures: pd.DataFrame | None,
             share: np.ndarray, principal: np.ndarray, elig: np.ndarray,
             breaches: list[dict[str, Any]]) -> tuple[np.ndarray, list[str], list[ObligorRow]]:
    """Pre-reduce obligor limits; return loan slots and the rows that can still bind.

    A loan that alone exceeds its borrower's headroom at a funder is not eligible there; a
    borrower whose eligible loans all fit needs no row. Only the rest get a row (and a slot, so
    that their loans are never aggregated with another borrower's).
    """
    bcodes, buniques = borrower_codes
    ex_rows = exposures is not None and len(exposures) > 0
    # the exposures map to the loans' borrower codes (a borrower without a loan today: -1, none
    # needed) through the day's dictionary, without a hash table over millions of borrowers
    ex_codes = np.zeros(0, dtype=np.int64)
    if ex_rows:
        ex_names = pa.array(exposures["borrower_id"].astype("string[pyarrow]"))
        ex_codes = pc.index_in(ex_names, value_set=buniques).fill_null(-1).to_numpy(
            zero_copy_only=False).astype(np.int64)
    nb = len(buniques)
    has_b = bcodes >= 0
    safe_b = np.where(has_b, bcodes, 0)
    loans_of = np.bincount(bcodes[has_b], minlength=nb)
    has_loans = loans_of > 0  # exposure-only borrowers need nothing
    slot_of_borrower = np.full(nb, -1, dtype=np.int64)
    needed: list[tuple[np.ndarray, np.ndarray, float]] = []  # (route, borrowers, existing) per funder
    # A borrower with one loan today and no exposure cannot break a limit the loan alone fits
    # in: only the loans of borrowers with several loans, or with an exposure, need a sum. On a
    # big day those are a few per cent, so each funder costs a pass over them, not over all loans
    exposed = np.zeros(nb, dtype=bool)
    if ex_rows:
        exposed[ex_codes[ex_codes >= 0]] = True
    watch = np.flatnonzero(has_b & (exposed | (loans_of > 1))[safe_b])
    wb = bcodes[watch]
    ex_amount = exposures["outstanding"].to_numpy(dtype="float64") if ex_rows else None
    for r, f in enumerate(funders):
        if f.obligor_limit is None:
            continue
        existing = np.zeros(nb)
        if ex_rows:
            mine = (exposures["funder_id"] == f.id).to_numpy(dtype=bool) & (ex_codes >= 0)
            existing = np.bincount(ex_codes[mine], weights=ex_amount[mine], minlength=nb)
        over = has_loans & (existing > f.obligor_limit + 1e-9)
        for b in np.flatnonzero(over)[:1000]:
            breaches.append({"funder_id": f.id, "constraint": f"obligor[{buniques[int(b)].as_py()}]", "kind": "obligor",
                             "existing": float(existing[b]), "limit": f.obligor_limit,
                             "action": "closed: no new loans of this borrower go to this funder today"})
        head = f.obligor_limit - existing
        # a loan that alone exceeds its borrower's headroom is not eligible: against the limit
        # for every loan, against the limit less the exposure for the watched ones
        column = elig[:, r] & has_b  # (a copy: the matrix is column-major here)
        column &= share[r] * principal <= f.obligor_limit + 1e-9
        amount = share[r] * principal[watch]
        e = column[watch] & (amount <= head[wb] + 1e-9)
        column[watch] = e
        elig[:, r] = column
        total = np.bincount(wb[e], weights=amount[e], minlength=nb)
        binding = np.flatnonzero(has_loans & (total > head + 1e-9))
        needed.append((np.full(len(binding), r), binding, existing[binding], float(f.obligor_limit)))
    borrowers: list[str] = []
    rows: list[ObligorRow] = []
    if needed:
        route = np.concatenate([x[0] for x in needed])
        who = np.concatenate([x[1] for x in needed])
        ex_amt = np.concatenate([x[2] for x in needed])
        lim = np.concatenate([np.full(len(x[1]), x[3]) for x in needed])
        # slots in order of first appearance, as the rows are listed
        first = np.unique(who, return_index=True)[1]
        slot_borrowers = who[np.sort(first)]
        slot_of_borrower[slot_borrowers] = np.arange(len(slot_borrowers))
        borrowers = [str(x) for x in buniques.take(pa.array(slot_borrowers)).to_pylist()]
        names_of = buniques.take(pa.array(who)).to_pylist()
        rows = [ObligorRow(int(r), str(b), int(sl), float(e), float(li))
                for r, b, sl, e, li in zip(route, names_of, slot_of_borrower[who], ex_amt, lim)]
    slot = np.where(has_b, slot_of_borrower[np.where(has_b, bcodes, 0)], -1)
    return slot.astype(np.int64), borrowers, rows


def _bid_prices(bids: pd.DataFrame | None, loans: pd.DataFrame, terms: Terms, elig: np.ndarray,
                src: dict[str, str], problems: Collector) -> dict[int, np.ndarray]:
    """Per bidding route, each loan's price (per unit of principal, 1.0 par; 0 where none): the
    funder's part then costs ``s_f (1 - price)`` upfront (negative at a premium) in place of its
    cost of funds and fee, and a loan without a bid is not eligible there."""
    if bids is None or not len(bids):
        return {}
    where = src["bids"]
    index = pd.Index(loans["loan_id"].astype(str))
    pos = index.get_indexer(bids["loan_id"].astype(str).to_numpy())
    unknown = pos < 0
    if unknown.any():
        problems.add(where, _rows(unknown), "loan_id not among the originations")
    route_of = {fid: r for r, fid in enumerate(terms.route_ids[:-1])}
    fids = bids["funder_id"].astype(str).to_numpy()
    r_of = np.array([route_of.get(f, -1) for f in fids], dtype=np.int64)
    bad = r_of < 0
    if bad.any():
        what = "the platform does not bid" if terms.platform.id in set(fids[bad]) else "unknown funder id"
        problems.add(where, _rows(bad), f"{what}; expected one of the funders' ids")
    if unknown.any() or bad.any():
        return {}
    price_all = bids["price"].to_numpy(dtype="float64")
    out: dict[int, np.ndarray] = {}
    for r in np.unique(r_of):
        r = int(r)
        sel = r_of == r
        price = np.full(len(loans), np.nan)
        price[pos[sel]] = price_all[sel]
        elig[:, r] &= ~np.isnan(price)
        out[r] = np.nan_to_num(price)
    return out


def _loan_penalty(plat, loans: pd.DataFrame, src: dict[str, str], problems: Collector) -> np.ndarray | None:
    """Per-loan unfunded penalties from the originations column the terms name."""
    col = plat.penalty_column
    if col is None:
        return None
    if col not in loans.columns:
        problems.add(src["funders"], "platform.unfunded_penalty",
                     f"names the column '{col}', which the originations do not have")
        return None
    v = pd.to_numeric(loans[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isfinite(v) | (v < 0)
    if bad.any():
        problems.add(src["originations"], _rows(bad),
                     f"column '{col}' (the unfunded penalty, per unit of principal) must be a number >= 0")
        return None
    return v


def _measures(funders, loans: pd.DataFrame, fields: dict[str, np.ndarray], route_ids, src: dict[str, str],
              problems: Collector) -> tuple[int, ...]:
    """The caps' measured amounts, as fields divided by the principal (so a unit's field sum,
    principal x field, is the measured amount): each loan's column value, >= 0 and finite."""
    out = []
    for r, f in enumerate(funders):
        col = f.cap_measure
        if not col:
            continue
        if col not in loans.columns:
            problems.add(src["funders"], f"funders[{f.id}].cap_measure",
                         f"names the column '{col}', which the originations do not have")
            continue
        v = pd.to_numeric(loans[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        bad = ~np.isfinite(v) | (v < 0)
        if bad.any():
            problems.add(src["originations"], _rows(bad),
                         f"column '{col}' (funders[{f.id}].cap_measure, an amount per loan) must be a number >= 0")
            continue
        p = loans["principal"].to_numpy(dtype="float64")
        fields[measure_field(route_ids[r])] = np.divide(v, p, out=np.zeros(len(v)), where=p > 0)
        out.append(r)
    return tuple(out)


def _group_averages(terms: Terms, view: ColumnView, elig: np.ndarray, fields: dict[str, np.ndarray],
                    src: dict[str, str], problems: Collector) -> tuple[GroupWA, ...]:
    """Groups' weighted averages; a loan without the field is not eligible at the members."""
    index = {f.id: r for r, f in enumerate(terms.funders)}
    out: list[GroupWA] = []
    for g in terms.groups:
        members = tuple(sorted(index[m] for m in g.members))
        for j, w in enumerate(g.weighted_average):
            where = f"groups[{g.name}].weighted_average[{j}].field"
            if w.field.startswith("@") or not view.has(w.field):
                problems.add(src["funders"], where, f"the test reads column '{w.field}', which the originations do not have")
                continue
            if w.field not in fields:
                try:
                    fields[w.field] = view.numeric(w.field)
                except RuleError:
                    problems.add(src["funders"], where, f"column '{w.field}' is not numeric; a weighted average needs numbers")
                    continue
            missing = np.isnan(fields[w.field])
            for m in members:
                elig[:, m] &= ~missing
            for bound, sign in ((w.min, -1.0), (w.max, 1.0)):
                if bound is not None:
                    out.append(GroupWA(g.name, members, w.field, float(bound), sign))
    return tuple(out)
