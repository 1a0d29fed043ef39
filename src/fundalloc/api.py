"""The library's front door: load a day from files or DataFrames, and plan it."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .solve import PlanOptions, solve_instance
from .errors import InputError, Problem
from .instance import Instance, compile_instance, file_digest
from .io import (read_bids, read_exposures, read_originations, read_portfolio, validate_bids, validate_exposures,
                 validate_originations, validate_portfolio)
from .plan import Plan, build_plan
from .terms import Terms, load_terms, terms_from_dict

PathLike = str | Path


@dataclass(frozen=True, eq=False)
class Day:
    """A validated day: the loans, the terms and the optional positions, compiled once."""

    loans: pd.DataFrame
    terms: Terms
    portfolio: pd.DataFrame | None
    exposures: pd.DataFrame | None
    instance: Instance
    timings: dict[str, float]
    bids: pd.DataFrame | None = None


def _terms(funders: Terms | dict | PathLike) -> tuple[Terms, str]:
    if isinstance(funders, Terms):
        return funders, "funders"
    if isinstance(funders, dict):
        return terms_from_dict(funders), "funders"
    return load_terms(funders), str(funders)


@dataclass(frozen=True, eq=False)
class DayInputs:
    """A day's inputs, read and validated but not yet compiled."""

    loans: pd.DataFrame
    terms: Terms
    portfolio: pd.DataFrame | None
    exposures: pd.DataFrame | None
    digest: str | None
    sources: dict[str, str]
    bids: pd.DataFrame | None = None


def _optional(table: pd.DataFrame | PathLike | None, name: str, validate, read,
              problems: list[Problem]) -> tuple[pd.DataFrame | None, str]:
    """An optional input, given as a frame or a file: validated (its problems collected), and the
    name its messages use."""
    src = str(table) if table is not None and not isinstance(table, pd.DataFrame) else name
    try:
        if isinstance(table, pd.DataFrame):
            return validate(table, src), src
        if table is not None:
            return read(table), src
    except InputError as exc:
        problems.extend(exc.problems)
    return None, src


def read_day(originations: pd.DataFrame | PathLike, funders: Terms | dict | PathLike,
             portfolio: pd.DataFrame | PathLike | None = None,
             exposures: pd.DataFrame | PathLike | None = None,
             bids: pd.DataFrame | PathLike | None = None) -> DayInputs:
    """Read and validate a day's inputs. Raises :class:`InputError` with every problem found."""
    problems: list[Problem] = []
    terms = None
    try:
        terms, fsrc = _terms(funders)
    except InputError as exc:
        problems.extend(exc.problems)
        fsrc = str(funders) if not isinstance(funders, (dict, Terms)) else "funders"
    needed = terms.columns() if terms else None
    numeric = {w.field for f in terms.funders for w in f.weighted_average} if terms else set()
    if terms is not None and terms.platform.penalty_column:
        numeric.add(terms.platform.penalty_column)
    loans = port = expo = None
    osrc = str(originations) if not isinstance(originations, pd.DataFrame) else "originations"
    try:
        if isinstance(originations, pd.DataFrame):
            loans = validate_originations(originations, osrc, numeric)
        else:
            loans = read_originations(originations, needed, numeric)
    except InputError as exc:
        problems.extend(exc.problems)
    port, psrc = _optional(portfolio, "portfolio", validate_portfolio, read_portfolio, problems)
    expo, xsrc = _optional(exposures, "exposures", validate_exposures, read_exposures, problems)
    bid_table, bsrc = _optional(bids, "bids", validate_bids, read_bids, problems)
    if terms is not None:
        ids = set(terms.route_ids)
        for table, src in ((port, psrc), (expo, xsrc)):
            if table is not None and len(table):
                unknown = sorted(set(table["funder_id"].dropna().astype(str)) - ids)
                if unknown:
                    problems.append(Problem(src, "column 'funder_id'",
                                            f"unknown funder ids {unknown[:10]}; expected one of the funders' ids"))
    if problems:
        raise InputError(problems)
    paths = {"originations": originations, "portfolio": portfolio, "exposures": exposures, "bids": bids}
    digest = None
    if all(v is None or isinstance(v, (str, Path)) for v in paths.values()):
        digest = file_digest(terms, {k: str(v) if v is not None else None for k, v in paths.items()})
    return DayInputs(loans, terms, port, expo, digest,
                     {"funders": fsrc, "originations": osrc, "portfolio": psrc, "exposures": xsrc, "bids": bsrc},
                     bid_table)


def load_day(originations: pd.DataFrame | PathLike, funders: Terms | dict | PathLike,
             portfolio: pd.DataFrame | PathLike | None = None,
             exposures: pd.DataFrame | PathLike | None = None,
             bids: pd.DataFrame | PathLike | None = None) -> Day:
    """Read, validate and compile a day. Raises :class:`InputError` with every problem found.

    ``bids`` (optional): ``loan_id, funder_id, price`` — a funder that bids prices each loan it
    bids on (per unit of principal, 1.0 is par) and takes no loan it did not bid on."""
    t0 = time.perf_counter()
    d = read_day(originations, funders, portfolio, exposures, bids)
    t1 = time.perf_counter()
    inst = compile_instance(d.loans, d.terms, d.portfolio, d.exposures, digest=d.digest, sources=d.sources,
                            bids=d.bids)
    t2 = time.perf_counter()
    return Day(d.loans, d.terms, d.portfolio, d.exposures, inst, {"read_validate": t1 - t0, "compile": t2 - t1},
               d.bids)


def plan(day: Day | PathLike | pd.DataFrame, funders: Terms | dict | PathLike | None = None,
         portfolio: pd.DataFrame | PathLike | None = None, exposures: pd.DataFrame | PathLike | None = None,
         *, bids: pd.DataFrame | PathLike | None = None, options: PlanOptions | None = None,
         progress: Callable[[str], None] | None = None, warm: Plan | None = None, **option_overrides: Any) -> Plan:
    """Plan a day. Pass a :class:`Day`, or the originations and funders (files or objects).

    ``warm``: a plan of a similar day (e.g. the base of a what-if); what did not change between
    the two (classes, refined bins, LP basis, the whole-loan assignment) is reused.
    """
    if not isinstance(day, Day):
        if funders is None:
            raise InputError(Problem("funders", "", "plan() needs the funders' terms"))
        day = load_day(day, funders, portfolio, exposures, bids)
    opts = options or PlanOptions()
    if option_overrides:
        known = set(PlanOptions.__dataclass_fields__)
        unknown = sorted(set(option_overrides) - known)
        if unknown:
            raise InputError([Problem("options", name, f"unknown plan option; expected one of {', '.join(sorted(known))}")
                              for name in unknown])
        opts = replace(opts, **option_overrides)
    t0 = time.perf_counter()
    solved = solve_instance(day.instance, opts, progress, warm.warm if warm is not None else None)
    t1 = time.perf_counter()
    result = build_plan(day.instance, solved, {k: round(v, 4) for k, v in day.timings.items()})
    result.timings["report"] = round(time.perf_counter() - t1, 4)
    result.timings["solve_total"] = round(t1 - t0, 4)
    return result
