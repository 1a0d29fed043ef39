"""The funders' terms: what is few and meaningful, as pydantic models.

The YAML/JSON document of ``contract.md`` parses into :class:`Terms`. Unknown keys are errors
(a typo such as ``daly_max`` must never be silently ignored), and every problem in the document is
reported at once with its key path.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .errors import Collector, InputError, Problem

Scalar = Union[str, int, float, bool]


class _Strict(BaseModel):
    # every number in the terms is finite: NaN or infinity is an error naming its key
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: A funder or platform id: it names files (``funders/<id>.csv``), so it is a plain name — letters
#: (any script), digits, ``_``, ``-``, ``.`` and inner spaces, starting with a letter or digit,
#: at most 128 characters; never a path separator, NUL, a leading dot or a trailing space or dot.
ID_PATTERN = re.compile(r"\w(?:[\w.\- ]{0,126}[\w\-])?")
#: The most funders one terms document may hold (each is a route of the day's program).
MAX_FUNDERS = 5_000


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a plain name: use letters, digits, '_', '-', '.' or inner "
            "spaces, start with a letter or digit, at most 128 characters (ids name files)"
        )
    return value


def _iso_date(value: Any) -> Any:
    """Dates are ``YYYY-MM-DD`` only (no ISO week or ordinal forms), and must exist."""
    if isinstance(value, str):
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(f"{value!r} is not a date in the form YYYY-MM-DD")
        try:
            return dt.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid date: {exc}") from None
    return value


class InRule(_Strict):
    """The loan's value is one of ``values``."""

    values: tuple[Scalar, ...]

    @model_serializer
    def _contract(self) -> list:
        return list(self.values)


class RangeRule(_Strict):
    """``min <= value <= max`` (both inclusive, either optional)."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> "RangeRule":
        if self.min is None and self.max is None:
            raise ValueError("a range needs 'min' and/or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    @model_serializer
    def _contract(self) -> dict:
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}


class NotInRule(_Strict):
    """The loan's value is present and not one of ``not_in``."""

    not_in: tuple[Scalar, ...]

    @model_serializer
    def _contract(self) -> dict:
        return {"not_in": list(self.not_in)}


Rule = Union[InRule, RangeRule, NotInRule]


def parse_rule(raw: Any) -> Rule:
    """``[a, b]`` -> in; ``{min, max}`` -> range; ``{not_in: [...]}``; ``{in: [...]}``; a scalar -> in."""
    if isinstance(raw, (InRule, RangeRule, NotInRule)):
        return raw
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise ValueError("an empty list admits no loan; remove the rule or list values")
        return InRule(values=tuple(raw))
    if isinstance(raw, dict):
        keys = set(raw)
        if keys == {"in"}:
            return parse_rule(list(raw["in"]))
        if keys == {"not_in"}:
            vals = raw["not_in"]
            if not isinstance(vals, (list, tuple)):
                raise ValueError("'not_in' takes a list of values")
            return NotInRule(not_in=tuple(vals))
        if keys and keys <= {"min", "max"}:
            return RangeRule(**raw)
        raise ValueError(
            f"unknown rule keys {sorted(keys)}; expected a list, {{min, max}}, {{in: [...]}} "
            "or {not_in: [...]}"
        )
    if isinstance(raw, (str, int, float, bool)):
        return InRule(values=(raw,))
    raise ValueError(f"cannot read a rule from {raw!r}")


RuleMap = dict[str, Rule]


def _parse_rule_map(value: Any) -> dict[str, Rule]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of column -> rule")
    out: dict[str, Rule] = {}
    for col, raw in value.items():
        try:
            out[str(col)] = parse_rule(raw)
        except (ValueError, ValidationError) as exc:
            raise ValueError(f"rule on '{col}': {_first_message(exc)}") from None
    return out


def _first_message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
    return str(exc)


class Basis(StrEnum):
    NEW = "new"
    PORTFOLIO = "portfolio"


class FunderKind(StrEnum):
    BANK = "bank"
    ABS_WAREHOUSE = "abs_warehouse"
    TRUST = "trust"
    OTHER = "other"


class Concentration(_Strict):
    """A concentration limit: the segment's share of the funder's amount is at most ``max_share``."""

    name: str
    where: dict[str, Rule] = Field(default_factory=dict)
    per: str | None = None
    max_share: float
    basis: Basis | None = None
    #: what the share counts: the funder amount (default) or the number of loans (today's: basis new)
    measure: Literal["amount", "count"] | None = None

    _parse_where = field_validator("where", mode="before")(lambda cls, v: _parse_rule_map(v))

    @model_validator(mode="after")
    def _count_basis(self) -> "Concentration":
        if self.measure == "count" and self.basis == Basis.PORTFOLIO:
            raise ValueError("a share of the loan count is over today's loans: basis new")
        return self

    @property
    def counts(self) -> bool:
        return self.measure == "count"

    @field_validator("max_share")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"max_share must lie in [0, 1], got {v}")
        return v

    def columns(self) -> set[str]:
        return set(self.where) | ({self.per} if self.per else set())


class WeightedAverage(_Strict):
    """The amount-weighted mean of ``field`` is within [min, max]: over today's allocation (basis
    ``new``, the default) or over the funder's existing book plus today's loans (``portfolio``:
    the book's outstanding and its ``<field>_sum`` from the portfolio file)."""

    field: str
    min: float | None = None
    max: float | None = None
    basis: Basis | None = None  # None: new

    @model_validator(mode="after")
    def _bounds(self) -> "WeightedAverage":
        if self.min is None and self.max is None:
            raise ValueError("a weighted-average test needs 'min' and/or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


NonNegative = Annotated[float, Field(ge=0)]


class RateRule(_Strict):
    """One line of a rate grid: loans matching every rule of ``where`` get ``rate``."""

    where: dict[str, Rule]
    rate: float

    _parse_where = field_validator("where", mode="before")(lambda cls, v: _parse_rule_map(v))

    @field_validator("where")
    @classmethod
    def _some(cls, v: dict) -> dict:
        if not v:
            raise ValueError("a grid line needs at least one rule in 'where' (use 'default' for the rest)")
        return v


class RateGrid(_Strict):
    """A price that depends on the loan: the first line whose rules the loan meets, else ``default``.
    Written as a list: ``[{where: {...}, rate: r}, ..., {default: r}]``."""

    lines: tuple[RateRule, ...]
    default: float

    @model_serializer
    def _contract(self) -> list:
        return [{"where": {c: r.model_dump(mode="json") for c, r in line.where.items()}, "rate": line.rate}
                for line in self.lines] + [{"default": self.default}]

    def columns(self) -> set[str]:
        return {c for line in self.lines for c in line.where}


def _parse_price(value: Any) -> Any:
    """A number, or a rate grid given as a list ending with ``{default: r}``."""
    if isinstance(value, RateGrid) or not isinstance(value, (list, tuple)):
        return value
    if not value or not isinstance(value[-1], dict) or set(value[-1]) != {"default"}:
        raise ValueError("a rate grid is a list of {where: {...}, rate: r} lines ending with {default: r}")
    lines = []
    for k, item in enumerate(value[:-1]):
        if not isinstance(item, dict) or set(item) != {"where", "rate"}:
            raise ValueError(f"grid line {k + 1}: expected {{where: {{...}}, rate: r}}, got {item!r}")
        try:
            lines.append(RateRule(where=item["where"], rate=item["rate"]))
        except (ValueError, ValidationError) as exc:
            raise ValueError(f"grid line {k + 1}: {_first_message(exc)}") from None
    try:
        return RateGrid(lines=tuple(lines), default=value[-1]["default"])
    except ValidationError as exc:
        raise ValueError(f"grid default: {_first_message(exc)}") from None


Price = Union[float, RateGrid]


class Funder(_Strict):
    id: str = Field(min_length=1)
    _check_id = field_validator("id")(lambda cls, v: check_id(v, "funder id"))
    name: str | None = None
    kind: FunderKind = FunderKind.OTHER
    funding_share: float
    cost_of_funds: Price  # a number, or a rate grid by the loan's attributes
    upfront_fee: Price = 0.0
    daily_max: NonNegative | None = None
    daily_min: NonNegative | None = None
    #: a hard minimum: a plan must give this funder at least this much today (a day that cannot is
    #: infeasible, and the error names the rows that conflict)
    daily_min_hard: NonNegative | None = None
    #: all or nothing: the funder gets nothing today or at least this much (a pool's minimum
    #: purchase, a warehouse's minimum draw)
    min_if_used: NonNegative | None = None
    #: charged once when the funder takes any loan today (a draw fee, a pool's set-up cost)
    fixed_cost: NonNegative | None = None
    #: an originations column of per-loan amounts that the caps (daily_max, monthly_max, facility
    #: headroom) count in place of the principal: each loan counts ``funding_share x column``
    cap_measure: str | None = Field(default=None, min_length=1)
    #: the book a portfolio-basis weighted average runs over, given in the terms instead of the
    #: portfolio file: ``{outstanding: E, <field>: its average over the book, ...}``
    weighted_average_base: dict[str, float] | None = None
    shortfall_fee: NonNegative = 0.01
    monthly_max: NonNegative | None = None  # quota per calendar month (the batch paces it over the month)
    monthly_min: NonNegative | None = None  # soft monthly minimum, shortfall charged at shortfall_fee
    facility_limit: NonNegative | None = None
    outstanding: NonNegative = 0.0
    eligibility: dict[str, Rule] = Field(default_factory=dict)
    concentration: tuple[Concentration, ...] = ()
    weighted_average: tuple[WeightedAverage, ...] = ()
    obligor_limit: NonNegative | None = None
    #: this funder's own cap on its share of the day's funded principal (over the platform's
    #: ``max_funder_share`` for it)
    max_share_of_day: float | None = Field(default=None, gt=0, le=1)

    _parse_elig = field_validator("eligibility", mode="before")(lambda cls, v: _parse_rule_map(v))
    _parse_prices = field_validator("cost_of_funds", "upfront_fee", mode="before")(lambda cls, v: _parse_price(v))

    @field_validator("funding_share")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError(f"funding_share must lie in (0, 1], got {v}")
        return v

    @field_validator("weighted_average_base")
    @classmethod
    def _wa_base(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if "outstanding" not in v:
            raise ValueError("needs 'outstanding' (the book's amount) and the book's average of each field")
        bad = sorted(k for k, x in v.items() if not math.isfinite(x) or (k == "outstanding" and x < 0))
        if bad:
            raise ValueError(f"must be finite numbers (outstanding >= 0): {bad}")
        return v

    @model_validator(mode="after")
    def _min_max(self) -> "Funder":
        if self.daily_min is not None and self.daily_max is not None and self.daily_min > self.daily_max:
            raise ValueError(f"daily_min {self.daily_min} is above daily_max {self.daily_max}")
        cap = self.day_cap
        if self.min_if_used is not None and cap is not None and self.min_if_used > cap:
            raise ValueError(f"min_if_used {self.min_if_used} is above what the day may use ({cap}: "
                             "daily_max, monthly_max); the funder could never be used")
        if self.daily_min_hard is not None and cap is not None and self.daily_min_hard > cap:
            raise ValueError(f"daily_min_hard {self.daily_min_hard} is above what the day may use ({cap}: "
                             "daily_max, monthly_max)")
        if self.monthly_min is not None and self.monthly_max is not None and self.monthly_min > self.monthly_max:
            raise ValueError(f"monthly_min {self.monthly_min} is above monthly_max {self.monthly_max}")
        names = [c.name for c in self.concentration]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"concentration names repeat: {dup}")
        return self

    @property
    def day_cap(self) -> float | None:
        """What one day may use: ``daily_max``, and never more than a whole month's quota."""
        caps = [c for c in (self.daily_max, self.monthly_max) if c is not None]
        return min(caps) if caps else None

    def columns(self) -> set[str]:
        cols = set(self.eligibility)
        for price in (self.cost_of_funds, self.upfront_fee):
            if isinstance(price, RateGrid):
                cols |= price.columns()
        for c in self.concentration:
            cols |= c.columns()
        cols |= {w.field for w in self.weighted_average}
        if self.obligor_limit is not None:
            cols.add("borrower_id")
        if self.cap_measure:
            cols.add(self.cap_measure)
        return cols


class Platform(_Strict):
    id: str = Field(default="platform", min_length=1)
    _check_id = field_validator("id")(lambda cls, v: check_id(v, "platform id"))
    cost_of_capital: float
    daily_capacity: NonNegative | None = None
    max_bank_share: float = Field(default=0.70, gt=0, le=1)
    #: per unit of unfunded principal: a number, or the name of an originations column holding
    #: each loan's own value (what funding that loan is worth; 0 or more)
    unfunded_penalty: float | str = 1.0
    eligibility: dict[str, Rule] = Field(default_factory=dict)
    #: funder diversification: no funder's amount above this share of the day's funded principal
    max_funder_share: float | None = Field(default=None, gt=0, le=1)

    _parse_elig = field_validator("eligibility", mode="before")(lambda cls, v: _parse_rule_map(v))

    @field_validator("unfunded_penalty", mode="before")
    @classmethod
    def _penalty(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("expected a number > 0 or the name of an originations column")
        if isinstance(v, (int, float)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"a number must be finite and > 0, got {v}")
            return float(v)
        if isinstance(v, str) and v.strip():
            return v
        raise ValueError("expected a number > 0 or the name of an originations column")

    @property
    def penalty_column(self) -> str | None:
        """The originations column of per-loan values, when the penalty is one."""
        return self.unfunded_penalty if isinstance(self.unfunded_penalty, str) else None


class Group(_Strict):
    """Funders that share limits (all state banks, one servicer's pools, all ABS warehouses):
    a cap on their total funder amount today and/or on its share of the day's funded principal."""

    name: str = Field(min_length=1)
    _check_name = field_validator("name")(lambda cls, v: check_id(v, "group name"))
    members: tuple[str, ...] = Field(min_length=1)
    daily_max: NonNegative | None = None
    max_share_of_day: float | None = Field(default=None, ge=0, le=1)
    #: a segment's share of the members' total today (over today's loans: basis new)
    concentration: tuple[Concentration, ...] = ()
    #: a field's amount-weighted average over the members' loans today (basis new)
    weighted_average: tuple[WeightedAverage, ...] = ()

    @model_validator(mode="after")
    def _limits(self) -> "Group":
        if self.daily_max is None and self.max_share_of_day is None and not self.concentration \
                and not self.weighted_average:
            raise ValueError("a group needs 'daily_max', 'max_share_of_day', 'concentration' and/or "
                             "'weighted_average'")
        if any(w.basis == Basis.PORTFOLIO for w in self.weighted_average):
            raise ValueError("a group's weighted average is over the members' loans of today: basis new")
        dup = sorted({m for m in self.members if self.members.count(m) > 1})
        if dup:
            raise ValueError(f"members repeat: {dup}")
        names = [c.name for c in self.concentration]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"concentration names repeat: {dup}")
        if any(c.basis == Basis.PORTFOLIO for c in self.concentration):
            raise ValueError("a group's concentration is over the members' loans of today: basis new")
        return self

    def columns(self) -> set[str]:
        cols: set[str] = set()
        for c in self.concentration:
            cols |= c.columns()
        return cols | {w.field for w in self.weighted_average}


class Terms(_Strict):
    """The whole funders document: the platform and its funders."""

    platform: Platform
    funders: tuple[Funder, ...] = ()
    groups: tuple[Group, ...] = ()
    as_of: dt.date | None = None  # the day the balances (outstanding) were taken; the batch adds later days

    _as_of = field_validator("as_of", mode="before")(lambda cls, v: _iso_date(v))

    @field_validator("funders", mode="before")
    @classmethod
    def _count(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)) and len(v) > MAX_FUNDERS:
            raise ValueError(f"{len(v)} funders; one terms document holds at most {MAX_FUNDERS}")
        return v

    @model_validator(mode="after")
    def _ids(self) -> "Terms":
        ids = [f.id for f in self.funders]
        seen: set[str] = set()
        dup = sorted({i for i in ids if i in seen or seen.add(i)})
        if dup:
            raise ValueError(f"duplicate funder ids: {dup}")
        if self.platform.id in ids:
            raise ValueError(
                f"funder id '{self.platform.id}' is the platform's id; give the funder another id"
            )
        names = [g.name for g in self.groups]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate group names: {dup}")
        known = set(ids)
        for g in self.groups:
            unknown = [m for m in g.members if m not in known]
            if unknown:
                raise ValueError(f"group '{g.name}' names members that are not funders: {unknown}"
                                 + (" (the platform cannot be a member)" if self.platform.id in unknown else ""))
        return self

    @property
    def route_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.funders) + (self.platform.id,)

    def columns(self) -> set[str]:
        cols = set(self.platform.eligibility)
        if self.platform.penalty_column:
            cols.add(self.platform.penalty_column)
        for f in self.funders:
            cols |= f.columns()
        for g in self.groups:
            cols |= g.columns()
        return cols

    def canonical_json(self) -> str:
        return json.dumps(_without_unset_extensions(self.model_dump(mode="json")), sort_keys=True,
                          separators=(",", ":"))

    def document(self) -> dict[str, Any]:
        """The contract's document form (what a YAML file of these terms would hold)."""
        return _without_unset_extensions(self.model_dump(mode="json", exclude_none=True))


def _without_unset_extensions(doc: dict[str, Any]) -> dict[str, Any]:
    """Terms written before groups and diversification existed keep their canonical form (and so
    their digest): the later keys appear only when they are set."""
    if not doc.get("groups"):
        doc.pop("groups", None)
    for g in doc.get("groups", []):
        if not g.get("weighted_average", ()):
            g.pop("weighted_average", None)
    plat = doc.get("platform", {})
    if plat.get("max_funder_share") is None:
        plat.pop("max_funder_share", None)
    for f in doc.get("funders", []):
        for key in ("max_share_of_day", "daily_min_hard", "min_if_used", "fixed_cost", "cap_measure",
                    "weighted_average_base"):
            if f.get(key, 0) is None:
                f.pop(key)
        for w in f.get("weighted_average", []):
            if w.get("basis") is None:
                w.pop("basis", None)
    for c in [c for f in doc.get("funders", []) for c in f.get("concentration", [])] + \
            [c for g in doc.get("groups", []) for c in g.get("concentration", [])]:
        if c.get("measure", 0) is None:
            c.pop("measure")
    return doc


# --- loading -------------------------------------------------------------------------------


def _loc(loc: tuple[Any, ...], doc: dict[str, Any]) -> str:
    """Turn a pydantic location into a key path with funder ids, e.g. ``funders[bank_a].daly_max``."""
    parts: list[str] = []
    node: Any = doc
    for item in loc:
        if isinstance(item, int) and isinstance(node, list):
            entry = node[item] if item < len(node) and isinstance(node[item], dict) else {}
            ident = entry.get("id") or entry.get("name")
            parts[-1] = f"{parts[-1]}[{ident if ident else item}]" if parts else f"[{item}]"
            node = node[item] if item < len(node) else None
        else:
            if str(item).startswith(("function-", "tagged-union")):
                continue
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


def terms_from_dict(doc: Any, source: str = "funders") -> Terms:
    """Validate a funders document, collecting every problem with its key path."""
    problems = Collector()
    if not isinstance(doc, dict):
        raise InputError(Problem(source, "", "expected a mapping with 'platform' and 'funders'"))
    try:
        terms = Terms.model_validate(doc)
    except RecursionError:
        raise InputError(Problem(source, "", "the document is nested too deeply")) from None
    except ValidationError as exc:
        for err in exc.errors():
            where = _loc(tuple(err["loc"]), doc)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown key '{err['loc'][-1]}' (check the spelling; allowed keys are in contract.md)"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            problems.add(source, where, msg)
        problems.raise_if_any()
        raise  # pragma: no cover - unreachable
    bank_cap = terms.platform.max_bank_share
    for f in terms.funders:
        if f.kind == FunderKind.BANK and f.funding_share > bank_cap + 1e-12:
            problems.add(
                source,
                f"funders[{f.id}].funding_share",
                f"a bank's funding_share {f.funding_share} is above max_bank_share {bank_cap} "
                "(the platform must fund at least the rest)",
            )
    problems.raise_if_any()
    return terms


#: How deep a terms document may nest (the contract's deepest key is about six levels down).
MAX_DEPTH = 32


class _DuplicateKey(ValueError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (YAML would keep the last value silently),
    documents nested deeper than :data:`MAX_DEPTH`, and keeps dates as text so that they are
    checked as ``YYYY-MM-DD`` by the model."""

    def compose_node(self, parent, index):  # type: ignore[override]
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"the document nests deeper than {MAX_DEPTH} levels ({mark})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(f"key '{key}' is given twice (line {key_node.start_mark.line + 1})")
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


# timestamps stay strings: the model checks their form and that the day exists
_StrictLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(f"key '{k}' is given twice")
        out[k] = v
    return out


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a terms document may hold")


def parse_document(text: str, source: str, as_json: bool) -> Any:
    """Parse a YAML or JSON terms document strictly; every failure is an :class:`InputError`."""
    kind = "JSON" if as_json else "YAML"
    try:
        if as_json:
            return json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_json_constant)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise InputError(Problem(source, "", f"{exc}; each key may appear once")) from None
    except RecursionError:
        raise InputError(Problem(source, "", f"malformed {kind}: nested too deeply")) from None
    except (yaml.YAMLError, ValueError) as exc:
        raise InputError(Problem(source, "", f"malformed {kind}: {exc}")) from None


def load_terms(path: str | Path) -> Terms:
    """Read a funders document from YAML or JSON."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(Problem(str(p), "", f"cannot read the file: {exc}")) from None
    doc = parse_document(text, str(p), p.suffix.lower() == ".json")
    return terms_from_dict(doc, str(p))


__all__ = [
    "Basis",
    "Concentration",
    "Funder",
    "FunderKind",
    "Group",
    "ID_PATTERN",
    "InRule",
    "NotInRule",
    "Platform",
    "RangeRule",
    "RateGrid",
    "RateRule",
    "Rule",
    "Terms",
    "WeightedAverage",
    "check_id",
    "load_terms",
    "parse_document",
    "parse_rule",
    "terms_from_dict",
]
