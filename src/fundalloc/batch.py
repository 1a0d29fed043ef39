"""The day-end batch: a day's plan from the inbox, state carried across days, paced period quotas,
an outbox with a file for every funder, and nothing half-written.

    fundalloc batch --date 2026-11-23 --inbox IN --outbox OUT [--force] [--pacing lookahead|even|none]

Inbox::

    IN/funders.yaml                    the terms in force (IN/<date>/funders.yaml overrides it that day)
    IN/<date>/originations.csv|parquet the day's loans
    IN/<date>/bids.csv|parquet         optional: the day's bids (loan_id, funder_id, price)
    IN/exposures.csv, IN/portfolio.csv optional: positions before the first batch day (or the terms' as_of)
    IN/forecast.csv                    optional: date,principal of the volume expected on later days

State carried from day to day lives in the store, as one *delta* per day computed from that day's
plan (what each route funded, each borrower's new exposure, each portfolio segment's growth). The
state before day D is the fold of the deltas of the days before D, so replacing a day replaces its
delta and every later day sees the change.

Period quotas (``monthly_max``, ``monthly_min``) are paced over the month, and with
``--pace-facilities`` facility headroom too (a stock that the month's days draw down):

- ``lookahead`` (default): the rest of the month enters one LP as forecast volume (a sample of the
  recent days' loans scaled to the forecast, with every daily limit scaled by the days left), so
  the quota goes to the loans, today's or the month's later ones, where it saves the most; today
  gets what that plan gives today's loans;
- ``even``: the remaining quota divided by the days left;
- ``none``: today may use everything that remains.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .api import load_day, plan as plan_day
from .solve import PlanOptions
from .errors import FundallocError, InputError, Problem
from .io import read_exposures, read_originations, read_portfolio
from .io import write_csv
from .plan import Plan
from .store import Store, frame_to_parquet, parquet_to_frame, sha256
from .store.models import BatchDay, PlanRecord, PlanTable, utcnow
from .terms import Terms, load_terms, terms_from_dict

log = logging.getLogger("fundalloc.batch")

PACINGS = ("lookahead", "even", "none")


class AlreadyRun(FundallocError):
    """The day was run and its outbox is complete; re-running it needs ``--force``."""

    exit_code = 5


# ------------------------------------------------------------------------------------------ inbox
@dataclass(frozen=True)
class Inbox:
    root: Path

    def _one(self, folder: Path, stem: str, exts: tuple[str, ...]) -> Path | None:
        found = [folder / f"{stem}{e}" for e in exts if (folder / f"{stem}{e}").is_file()]
        if len(found) > 1:
            raise InputError(Problem(str(folder), stem, f"more than one file: {[p.name for p in found]}; keep one"))
        return found[0] if found else None

    def funders(self, day: dt.date) -> Path | None:
        exts = (".yaml", ".yml", ".json")
        return self._one(self.root / day.isoformat(), "funders", exts) or self._one(self.root, "funders", exts)

    def originations(self, day: dt.date) -> Path | None:
        return self._one(self.root / day.isoformat(), "originations", (".csv", ".parquet"))

    def bids(self, day: dt.date) -> Path | None:
        return self._one(self.root / day.isoformat(), "bids", (".csv", ".parquet"))

    def start(self, name: str) -> Path | None:
        return self._one(self.root, name, (".csv", ".parquet"))

    def forecast(self) -> Path | None:
        return self._one(self.root, "forecast", (".csv",))


# ------------------------------------------------------------------------------------------ state
@dataclass(frozen=True, eq=False)
class Delta:
    """What one day's plan adds to the state."""

    routes: dict[str, dict[str, float]]  # per route: funder_amount, platform_amount, principal, loans
    exposures: pd.DataFrame  # funder_id, borrower_id, outstanding
    portfolio: pd.DataFrame | None  # funder_id, <portfolio attribute columns>, outstanding


def is_sum_column(name: str) -> bool:
    """A portfolio column ``<field>_sum``: the book's outstanding x field (not a segment attribute)."""
    return name.endswith("_sum") and len(name) > 4


def delta_from_plan(loans: pd.DataFrame, allocations: pd.DataFrame, portfolio_cols: list[str]) -> Delta:
    """The delta of a day, from its loans and its plan's allocations (pure; also used to rebuild)."""
    a = allocations[allocations["funder_id"] != ""]
    g = a.groupby("funder_id", sort=True)
    principal = loans.set_index("loan_id")["principal"]
    routes = {
        str(fid): {"funder_amount": round(float(x["funder_amount"].sum()), 2),
                   "platform_amount": round(float(x["platform_amount"].sum()), 2),
                   "principal": round(float(principal.loc[x["loan_id"]].sum()), 2),
                   "loans": int(len(x))}
        for fid, x in g
    }
    m = a.merge(loans, on="loan_id", how="left", suffixes=("", "_loan"))
    if "borrower_id" in m.columns:
        e = m.dropna(subset=["borrower_id"]).groupby(["funder_id", "borrower_id"], sort=True)["funder_amount"].sum()
        exposures = e.reset_index().rename(columns={"funder_amount": "outstanding"})
    else:
        exposures = pd.DataFrame({"funder_id": [], "borrower_id": [], "outstanding": []})
    port = None
    if portfolio_cols:  # segments of the portfolio the loans can be placed in (the columns they have)
        key = ["funder_id", *[c for c in portfolio_cols if not is_sum_column(c) and c in m.columns]]
        # a <field>_sum column (outstanding x field, for weighted averages over the book) grows by
        # each loan's funder amount x its field
        sums = [c for c in portfolio_cols if is_sum_column(c) and c[:-4] in m.columns]
        m = m.assign(**{c: m["funder_amount"] * pd.to_numeric(m[c[:-4]], errors="coerce").fillna(0.0) for c in sums})
        port = (m.groupby(key, sort=True, dropna=False)[["funder_amount", *sums]].sum().reset_index()
                .rename(columns={"funder_amount": "outstanding"}))
    exposures["funder_id"] = exposures["funder_id"].astype(str)
    exposures["borrower_id"] = exposures["borrower_id"].astype(str)
    return Delta(routes, exposures.reset_index(drop=True), port)


@dataclass(frozen=True, eq=False)
class State:
    """What the days before ``day`` left behind."""

    day: dt.date
    carried: dict[str, float]  # funder_amount funded since the terms' as_of (adds to outstanding)
    month_used: dict[str, float]  # funder_amount funded earlier in the day's month
    exposures: pd.DataFrame  # new exposures per funder and borrower
    portfolio: pd.DataFrame | None  # new positions per funder and portfolio segment
    days: tuple[dt.date, ...] = ()
    # funder_amount of days already recorded *after* ``day`` in its month (a backfilled day): the
    # month's quota is shared with them, so what they used is not available to ``day``
    month_later: dict[str, float] = field(default_factory=dict)

    def equals(self, other: "State") -> bool:
        def frames_equal(a, b):
            if a is None or b is None:
                return a is None and b is None
            if a.empty and b.empty:
                return True
            key = [c for c in a.columns if c != "outstanding"]
            x = a.sort_values(key).reset_index(drop=True)
            y = b.sort_values(key).reset_index(drop=True)
            return list(x.columns) == list(y.columns) and x[key].astype(str).equals(y[key].astype(str)) and \
                np.allclose(x["outstanding"], y["outstanding"], atol=0.005)
        same = lambda a, b: set(a) == set(b) and all(abs(a[k] - b[k]) < 0.005 for k in a)
        return (same(self.carried, other.carried) and same(self.month_used, other.month_used)
                and frames_equal(self.exposures, other.exposures) and frames_equal(self.portfolio, other.portfolio))


def fold(day: dt.date, deltas: list[tuple[dt.date, Delta]], as_of: dt.date | None) -> State:
    """The state before ``day``: the deltas of earlier days (those on or after ``as_of`` carry)."""
    carried: dict[str, float] = {}
    month: dict[str, float] = {}
    ex, po = [], []
    used = []
    later: dict[str, float] = {}
    for d, delta in sorted(deltas, key=lambda x: x[0]):
        if d > day and d.year == day.year and d.month == day.month:
            for fid, r in delta.routes.items():
                later[fid] = later.get(fid, 0.0) + r["funder_amount"]
        if d >= day:
            continue
        if d.year == day.year and d.month == day.month:
            for fid, r in delta.routes.items():
                month[fid] = month.get(fid, 0.0) + r["funder_amount"]
        if as_of is not None and d < as_of:
            continue
        used.append(d)
        for fid, r in delta.routes.items():
            carried[fid] = carried.get(fid, 0.0) + r["funder_amount"]
        ex.append(delta.exposures)
        if delta.portfolio is not None:
            po.append(delta.portfolio)
    exposures = (pd.concat(ex).groupby(["funder_id", "borrower_id"], sort=True)["outstanding"].sum().reset_index()
                 if ex and any(len(e) for e in ex) else pd.DataFrame({"funder_id": [], "borrower_id": [],
                                                                      "outstanding": []}))
    portfolio = None
    if po:
        p = pd.concat(po)
        key = [c for c in p.columns if c != "outstanding" and not is_sum_column(c)]
        amounts = ["outstanding", *[c for c in p.columns if is_sum_column(c)]]
        portfolio = p.groupby(key, sort=True, dropna=False)[amounts].sum().reset_index()
    r2 = lambda d: {k: round(v, 2) for k, v in sorted(d.items())}
    return State(day, r2(carried), r2(month), exposures, portfolio, tuple(used), r2(later))


def stored_deltas(store: Store, before: dt.date | None = None) -> list[tuple[dt.date, Delta]]:
    """The deltas recorded with each batch day."""
    out = []
    for bd in store.batch_days():
        if before is not None and bd.day >= before:
            continue
        ex = store.plan_table(bd.plan_id, "exposures_delta")
        try:
            po = store.plan_table(bd.plan_id, "portfolio_delta")
        except FundallocError:
            po = None
        out.append((bd.day, Delta(bd.usage["routes"], ex, po)))
    return out


def rebuilt_deltas(store: Store, before: dt.date | None = None) -> list[tuple[dt.date, Delta]]:
    """The same deltas recomputed from the stored plans and their stored inputs alone."""
    out = []
    for bd in store.batch_days():
        if before is not None and bd.day >= before:
            continue
        rec = store.plan(bd.plan_id)
        loans = _stored_loans(store, rec)
        alloc = store.plan_table(bd.plan_id, "allocations")
        cols = bd.usage.get("portfolio_columns", [])
        out.append((bd.day, delta_from_plan(loans, alloc, cols)))
    return out


def _stored_loans(store: Store, rec: PlanRecord, columns: list[str] | None = None) -> pd.DataFrame:
    with tempfile.TemporaryDirectory(prefix="fundalloc-batch-") as tmp:
        p = Path(tmp) / f"originations.{rec.originations_format}"
        p.write_bytes(store.blob(rec.originations_digest))
        return read_originations(p, columns)


# ------------------------------------------------------------------------------------------ pacing
@dataclass(frozen=True)
class Pacing:
    """Today's share of every period quota."""

    method: str
    days_left: int  # including today
    future_volume: float  # principal expected on the later days of the month
    allowance: dict[str, float]  # per funder with a monthly quota or a facility: what today may use
    min_target: dict[str, float]  # per funder with monthly_min: what today should reach
    remaining: dict[str, float]  # per funder with a monthly quota or a facility: what is left before today


def _month_end(day: dt.date) -> dt.date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def forecast_volume(day: dt.date, forecast: pd.DataFrame | None, recent: list[float]) -> tuple[int, float]:
    """Days left after ``day`` in its month and the principal expected on them."""
    end = _month_end(day)
    if forecast is not None:
        f = forecast[(forecast["date"] > day) & (forecast["date"] <= end)]
        return int(len(f)), float(f["principal"].sum())
    m = (end - day).days
    return m, float(np.mean(recent)) * m if recent else 0.0


def read_forecast(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    df = pd.read_csv(path)
    problems = []
    for c in ("date", "principal"):
        if c not in df.columns:
            problems.append(Problem(str(path), f"column '{c}'", "required column is missing"))
    if problems:
        raise InputError(problems)
    dates = pd.to_datetime(df["date"], errors="coerce", format="%Y-%m-%d")
    p = pd.to_numeric(df["principal"], errors="coerce")
    bad = dates.isna() | p.isna() | (p < 0)
    if bad.any():
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(bad.to_numpy())[:10])
        raise InputError(Problem(str(path), f"rows {rows}", "expected a date (YYYY-MM-DD) and a principal >= 0"))
    return pd.DataFrame({"date": dates.dt.date, "principal": p.astype(float)})


def _scaled_terms(terms: Terms, state: State, days: int, remaining: dict[str, float],
                  remaining_min: dict[str, float]) -> Terms:
    """Terms for ``days`` days planned as one: daily limits times ``days``, quotas as what remains."""
    doc = terms.document()
    for f in doc["funders"]:
        fid = f["id"]
        f["outstanding"] = f.get("outstanding", 0.0) + state.carried.get(fid, 0.0)
        if f.get("daily_max") is not None:
            f["daily_max"] = f["daily_max"] * days
        if f.get("daily_min") is not None:
            f["daily_min"] = f["daily_min"] * days
        # over a forecast, a hard minimum guides the pacing as a soft one (the day itself holds it
        # hard), and a funder's use is the day's own decision
        f.pop("min_if_used", None)
        f.pop("fixed_cost", None)
        hard = f.pop("daily_min_hard", None)
        if hard:
            f["daily_min"] = max(f.get("daily_min") or 0.0, hard * days)
        if fid in remaining:
            f["daily_max"] = min(f.get("daily_max", np.inf), remaining[fid])
        if fid in remaining_min:
            f["daily_min"] = max(f.get("daily_min", 0.0), remaining_min[fid])
        if f.get("daily_min") is not None and f.get("daily_max") is not None:
            f["daily_min"] = min(f["daily_min"], f["daily_max"])
        f.pop("monthly_max", None)
        f.pop("monthly_min", None)
        # a forecast loan stands for many loans of unknown borrowers: per-borrower limits do not apply
        f.pop("obligor_limit", None)
    if doc["platform"].get("daily_capacity") is not None:
        doc["platform"]["daily_capacity"] *= days
    for g in doc.get("groups", []):  # (shares of the day are shares of the days planned as one)
        if g.get("daily_max") is not None:
            g["daily_max"] *= days
    doc.pop("as_of", None)
    return terms_from_dict(doc, "scaled terms")


def period_left(terms: Terms, state: State, facilities: bool = False) -> dict[str, float]:
    """What each funder can still fund this month: its monthly quota left and, with
    ``facilities``, its facility headroom left (a stock the month's days draw down, as nothing is
    repaid within the month), whichever is smaller."""
    out = {}
    for f in terms.funders:
        caps = []
        later = state.month_later.get(f.id, 0.0)
        if f.monthly_max is not None:
            caps.append(f.monthly_max - state.month_used.get(f.id, 0.0) - later)
        if facilities and f.facility_limit is not None:
            caps.append(f.facility_limit - f.outstanding - state.carried.get(f.id, 0.0) - later)
        if caps:
            out[f.id] = max(min(caps), 0.0)
    return out


def pace(method: str, day: dt.date, terms: Terms, state: State, loans: pd.DataFrame,
         portfolio: pd.DataFrame | None, exposures: pd.DataFrame | None, pool: pd.DataFrame,
         forecast: pd.DataFrame | None, recent_volumes: list[float], options: PlanOptions,
         sample_size: int = 50_000, facilities: bool = False) -> Pacing:
    remaining = period_left(terms, state, facilities)
    remaining_min = {f.id: max(f.monthly_min - state.month_used.get(f.id, 0.0) - state.month_later.get(f.id, 0.0), 0.0)
                     for f in terms.funders if f.monthly_min is not None}
    today = float(loans["principal"].sum())
    m, future = forecast_volume(day, forecast, recent_volumes + [today])
    share_today = today / (today + future) if today + future > 0 else 1.0
    if method == "none" or m == 0:
        allowance = dict(remaining)
        min_target = {k: (v if m == 0 else v * share_today) for k, v in remaining_min.items()}
    elif method == "even":
        allowance = {k: v / (m + 1) for k, v in remaining.items()}
        min_target = {k: v / (m + 1) for k, v in remaining_min.items()}
    else:
        min_target = {k: v * share_today for k, v in remaining_min.items()}
        allowance = _lookahead(day, terms, state, loans, portfolio, exposures, pool, m, future,
                               remaining, remaining_min, options, sample_size) if remaining else {}
    return Pacing(method, m + 1, future, {k: round(v, 2) for k, v in allowance.items()},
                  {k: round(v, 2) for k, v in min_target.items()}, {k: round(v, 2) for k, v in remaining.items()})


def _lookahead(day, terms, state, loans, portfolio, exposures, pool, m, future, remaining, remaining_min,
               options, sample_size) -> dict[str, float]:
    """Plan today and the rest of the month as one LP, then give today its share of each quota.

    The joint plan decides how much of each quota the month should use at all (a quota whose
    funder is dearer than the alternatives, or whose eligible volume is short, is not used in
    full); today's allowance is that amount times today's share of the month's remaining volume,
    so a day of heavy volume (a promotion in the forecast) gets more of the cheap quota than a
    quiet one. Which loans of today get it is then decided by today's own plan.
    """
    rng = np.random.default_rng(int(day.strftime("%Y%m%d")))
    k = min(len(pool), max(len(loans), 5_000), sample_size)
    sample = pool.iloc[np.sort(rng.choice(len(pool), k, replace=False))].reset_index(drop=True)
    scale = future / float(sample["principal"].sum()) if future > 0 and len(sample) else 0.0
    if scale <= 0:
        return dict(remaining)
    fut = sample.assign(principal=sample["principal"] * scale,
                        loan_id=[f"~future{i}" for i in range(len(sample))])
    if "borrower_id" in fut.columns:
        fut["borrower_id"] = fut["loan_id"]  # forecast loans have no known borrowers
    combined = pd.concat([loans, fut[loans.columns]], ignore_index=True)
    scaled = _scaled_terms(terms, state, m + 1, remaining, remaining_min)
    p = plan_day(load_day(combined, scaled, portfolio, None),
                 options=replace(options, kernel_rounds=0, exact_pairs=0,
                                 gap_tolerance=max(options.gap_tolerance, 1e-4)))
    month_total = p.allocations.groupby("funder_id")["funder_amount"].sum()
    today = float(loans["principal"].sum())
    share = today / (today + future)
    return {fid: min(float(month_total.get(fid, 0.0)) * share, rem) for fid, rem in remaining.items()}


def day_terms(terms: Terms, state: State, pacing: Pacing) -> Terms:
    """The terms as they stand for the day: balances carried forward, quotas paced."""
    doc = terms.document()
    for f in doc["funders"]:
        fid = f["id"]
        f["outstanding"] = round(f.get("outstanding", 0.0) + state.carried.get(fid, 0.0), 2)
        if fid in pacing.allowance:
            allowed = pacing.allowance[fid]
            if f.get("daily_min_hard"):  # pacing never paces below a hard minimum the quota still holds
                allowed = max(allowed, min(f["daily_min_hard"], pacing.remaining.get(fid, np.inf)))
            f["daily_max"] = min(f.get("daily_max", np.inf), allowed)
        if fid in pacing.min_target and pacing.min_target[fid] > 0:
            f["daily_min"] = max(f.get("daily_min") or 0.0, pacing.min_target[fid])
        if f.get("daily_min") is not None and f.get("daily_max") is not None:
            f["daily_min"] = min(f["daily_min"], f["daily_max"])
        f.pop("monthly_max", None)
        f.pop("monthly_min", None)
    doc.pop("as_of", None)
    return terms_from_dict(doc, "day terms")


def day_positions(start_portfolio: pd.DataFrame | None, start_exposures: pd.DataFrame | None,
                  state: State) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Positions for the day: the inbox's starting positions plus what the earlier days added."""
    port = start_portfolio
    if start_portfolio is not None and state.portfolio is not None and len(state.portfolio):
        key = [c for c in start_portfolio.columns if c != "outstanding" and not is_sum_column(c)]
        amounts = ["outstanding", *[c for c in start_portfolio.columns if is_sum_column(c)]]
        add = state.portfolio.reindex(columns=start_portfolio.columns)
        for c in key:
            if add[c].notna().all():
                add[c] = add[c].astype(start_portfolio[c].dtype, errors="ignore")
        for c in amounts:
            add[c] = add[c].fillna(0.0)
        port = (pd.concat([start_portfolio, add], ignore_index=True)
                .groupby(key, sort=True, dropna=False)[amounts].sum().reset_index())
    expo = start_exposures
    if len(state.exposures):
        base = start_exposures if start_exposures is not None else state.exposures.iloc[:0]
        expo = (pd.concat([base, state.exposures], ignore_index=True)
                .groupby(["funder_id", "borrower_id"], sort=True)["outstanding"].sum().reset_index())
    return port, expo


def _positions_in_terms(terms: Terms, portfolio: pd.DataFrame | None,
                        exposures: pd.DataFrame | None) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The day's positions of the routes in its terms. A funder dropped from the terms keeps its
    positions in the store (they count again if it returns, and in every total of the days that
    had it) but takes no new loans, so its rows constrain nothing today: they are set aside, and
    the log names them."""
    ids = set(terms.route_ids)
    out = []
    for name, table in (("portfolio", portfolio), ("exposures", exposures)):
        if table is None or not len(table):
            out.append(table)
            continue
        known = table["funder_id"].astype(str).isin(ids).to_numpy()
        if not known.all():
            dropped = table[~known].groupby("funder_id", sort=True)["outstanding"].sum()
            log.warning("%s of funders not in the day's terms set aside (they take no new loans): %s", name,
                        ", ".join(f"{fid} {v:,.2f}" for fid, v in dropped.items()))
        out.append(table[known].reset_index(drop=True))
    return out[0], out[1]


# ------------------------------------------------------------------------------------------ outbox
ROUTE_FILE_COLUMNS = ["loan_id", "principal", "tenor_months", "apr", "funder_amount", "platform_amount", "cost"]


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` for a name built from data, refused unless it is a plain file name that
    stays inside ``folder`` (ids are checked at validation; this is the second lock)."""
    path = folder / name
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
            or path.resolve().parent != folder.resolve()):
        raise InputError(Problem(str(folder), name, "a file name built from an id would leave its folder"))
    return path


def write_outbox(folder: Path, day: dt.date, plan: Plan, loans: pd.DataFrame, terms: Terms, pacing: Pacing,
                 state: State, portfolio: pd.DataFrame | None, exposures: pd.DataFrame | None,
                 bids: pd.DataFrame | None = None) -> None:
    """Every file of the day into ``folder`` (a fresh temporary folder)."""
    from .report import render_report

    plan.write(folder)
    routes_dir = folder / "funders"
    routes_dir.mkdir()
    m = plan.allocations.merge(loans[[c for c in ("loan_id", "principal", "tenor_months", "apr") if c in loans]],
                               on="loan_id", how="left")
    totals = {}
    for rid in terms.route_ids:
        mine = m[m["funder_id"] == rid][ROUTE_FILE_COLUMNS].reset_index(drop=True)
        write_csv(mine, inside(routes_dir, f"{rid}.csv"))
        totals[rid] = {"loans": int(len(mine)), "principal": round(float(mine["principal"].sum()), 2),
                       "funder_amount": round(float(mine["funder_amount"].sum()), 2),
                       "platform_amount": round(float(mine["platform_amount"].sum()), 2),
                       "cost": round(float(mine["cost"].sum()), 2)}
    inputs = folder / "inputs"
    inputs.mkdir()
    (inputs / "funders.json").write_text(json.dumps(terms.document(), indent=1, sort_keys=True) + "\n")
    if portfolio is not None:
        write_csv(portfolio, inputs / "portfolio.csv")
    if exposures is not None:
        write_csv(exposures, inputs / "exposures.csv")
    if bids is not None:
        write_csv(bids, inputs / "bids.csv")
    (folder / "report.html").write_text(render_report(day, plan, terms, pacing, state, totals))
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in ("plan.json",))
    manifest = {
        "date": day.isoformat(),
        "status": plan.status.value,
        "objective": round(plan.objective, 2),
        "unfunded_count": plan.unfunded_count,
        "shortfall": round(plan.shortfall, 2),
        "inputs_digest": plan.inputs_digest,
        "pacing": {"method": pacing.method, "days_left": pacing.days_left, "allowance": pacing.allowance,
                   "min_target": pacing.min_target, "remaining_before_today": pacing.remaining},
        "routes": totals,
        "files": {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _publish(tmp: Path, target: Path) -> None:
    """Put a finished folder in place: rename aside what is there, rename in, drop the old."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _clean_leftovers(outbox: Path, name: str) -> None:
    # a killed run leaves ``.<day>.partial-*`` and, when killed while the plan's files were being
    # written into it, the plan writer's own ``..<day>.partial-*.*`` beside it
    for pattern in (f".{name}.*", f"..{name}.*"):
        for p in outbox.glob(pattern):
            shutil.rmtree(p, ignore_errors=True)


def outbox_complete(folder: Path) -> bool:
    """The day's outbox is there and every file matches its manifest."""
    mf = folder / "manifest.json"
    if not mf.is_file():
        return False
    try:
        files = json.loads(mf.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all((folder / k).is_file() and hashlib.sha256((folder / k).read_bytes()).hexdigest() == v
               for k, v in files.items())


# ------------------------------------------------------------------------------------------ the run
@dataclass(frozen=True)
class BatchOptions:
    pacing: str = "lookahead"
    force: bool = False
    recompute_following: bool = False
    plan: PlanOptions = field(default_factory=PlanOptions)
    recent_days: int = 7
    sample_size: int = 50_000
    pace_facilities: bool = False  # pace facility headroom like a monthly quota


@dataclass(frozen=True, eq=False)
class DayResult:
    day: dt.date
    plan: Plan
    plan_id: str
    outbox: Path
    pacing: Pacing
    state: State
    repaired: bool = False

    @property
    def clean(self) -> bool:
        """No unfunded loan and no shortfall below a minimum."""
        return self.plan.unfunded_count == 0 and self.plan.shortfall <= 0.005


def run_day(store: Store, day: dt.date, inbox: Path | str, outbox: Path | str, options: BatchOptions | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> list[DayResult]:
    """Run the batch for ``day`` (and, when asked, re-run the recorded days after it)."""
    opts = options or BatchOptions()
    results = [_run_one(store, day, Inbox(Path(inbox)), Path(outbox), opts, progress)]
    later = [bd.day for bd in store.batch_days() if bd.day > day]
    if later and opts.recompute_following:
        for d in later:
            results.append(_run_one(store, d, Inbox(Path(inbox)), Path(outbox), replace(opts, force=True), progress))
    elif later and (opts.force or results[0].repaired):
        log.warning("days after %s were planned on the state before this run: %s; re-run with "
                    "--recompute-following to plan them again", day, ", ".join(map(str, later)))
    return results


STEPS = 6


def _run_one(store: Store, day: dt.date, inbox: Inbox, outbox: Path, opts: BatchOptions,
             progress: Callable[[str, int, int], None] | None) -> DayResult:
    def say(msg: str, i: int, n: int) -> None:
        log.info(msg, extra={"fields": {"date": day.isoformat(), "step": i, "steps": n}})
        if progress is not None:
            progress(msg, i, n)

    target = outbox / day.isoformat()
    _clean_leftovers(outbox, day.isoformat())
    existing = store.batch_day(day)
    repaired = False
    if existing is not None and not opts.force:
        if outbox_complete(target):
            raise AlreadyRun(f"{day} was already run (plan {existing.plan_id}) and its outbox {target} is complete; "
                             "use --force to replace it")
        repaired = True
        log.warning("%s is recorded but its outbox is missing or incomplete: planning it again", day)

    say(f"{day}: reading the inbox", 1, STEPS)
    terms_path = inbox.funders(day)
    orig_path = inbox.originations(day) or _stored_originations(store, day, inbox.root, outbox)
    problems: list[Problem] = []
    terms = start_port = start_expo = forecast = None
    try:
        if terms_path is not None:
            terms = load_terms(terms_path)
        else:  # no file in the inbox: the store's funders version in force that day
            version = store.funders_in_force(day)
            if version is None:
                raise InputError(Problem(str(inbox.root), "funders.yaml",
                                         f"no funders file in the inbox and no funders version in the store "
                                         f"effective on or before {day}"))
            terms = terms_from_dict(version.document, f"funders version {version.id}")
    except InputError as exc:
        problems += exc.problems
    for f in terms.funders if terms is not None else ():
        if f.weighted_average_base is not None:  # a fixed book in the terms would not grow day by day
            problems.append(Problem(str(terms_path or inbox.root), f"funders[{f.id}].weighted_average_base",
                                    "the day-end batch grows the book day by day from the portfolio file: give "
                                    "its '<field>_sum' columns there instead of a base in the terms"))
    for name in ("portfolio", "exposures"):
        p = inbox.start(name)
        if p is None:
            continue
        try:
            if name == "portfolio":
                start_port = read_portfolio(p)
            else:
                start_expo = read_exposures(p)
        except InputError as exc:
            problems += exc.problems
    try:
        forecast = read_forecast(inbox.forecast())
    except InputError as exc:
        problems += exc.problems
    if problems:
        raise InputError(problems)
    # validate the day's loans against the original terms first (every problem, with file names)
    bids_path = inbox.bids(day)
    base = load_day(orig_path, terms_path or terms, start_port, None, bids_path)
    loans, bids = base.loans, base.bids

    say(f"{day}: state from {len(store.batch_days())} recorded days", 2, STEPS)
    # every recorded day: those before carry their balances, those after in the same month share its quota
    state = fold(day, stored_deltas(store), terms.as_of)
    portfolio, exposures = day_positions(start_port, start_expo, state)
    portfolio, exposures = _positions_in_terms(terms, portfolio, exposures)

    say(f"{day}: pacing the period quotas ({opts.pacing})", 3, STEPS)
    pool, recent = _recent(store, day, loans, opts.recent_days) if opts.pacing == "lookahead" else (loans, [])
    if opts.pacing != "lookahead":
        recent = _recent_volumes(store, day, opts.recent_days)
    pacing = pace(opts.pacing, day, terms, state, loans, portfolio, exposures, pool, forecast, recent,
                  opts.plan, opts.sample_size, opts.pace_facilities)
    terms_today = day_terms(terms, state, pacing)

    say(f"{day}: planning {len(loans):,} loans", 4, STEPS)
    d = load_day(loans, terms_today, portfolio, exposures, bids)
    result = plan_day(d, options=opts.plan)

    say(f"{day}: writing the outbox", 5, STEPS)
    outbox.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{day.isoformat()}.partial-", dir=outbox))
    try:
        write_outbox(tmp, day, result, loans, terms_today, pacing, state, portfolio, exposures, bids)
        say(f"{day}: recording the day in the store", 6, STEPS)
        port_cols = [c for c in start_port.columns if c not in ("funder_id", "outstanding")] if start_port is not None \
            else []
        delta = delta_from_plan(loans, result.allocations, port_cols)
        plan_id = _record(store, day, orig_path, terms_today, portfolio, exposures, result, delta, port_cols, pacing,
                          bids)
        _publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if orig_path.parent.name.startswith(f".{day.isoformat()}.inputs-"):
            shutil.rmtree(orig_path.parent, ignore_errors=True)
    log.info("day planned", extra={"fields": {
        "date": day.isoformat(), "plan_id": plan_id, "status": result.status.value, "objective": result.objective,
        "gap": result.gap, "unfunded_count": result.unfunded_count, "shortfall": result.shortfall,
        "outbox": str(target), "pacing": opts.pacing}})
    return DayResult(day, result, plan_id, target, pacing, state, repaired)


def _stored_originations(store: Store, day: dt.date, inbox: Path, outbox: Path) -> Path:
    """No originations in the inbox: those of the newest plan made for the day through the
    service (``plan_date``), copied beside the outbox for the run."""
    plans, _ = store.plans(day=day, kind="plan", status="succeeded", limit=1)
    if not plans:
        raise InputError(Problem(str(inbox), f"{day.isoformat()}/originations.csv",
                                 "no originations for the day: none in the inbox (originations.csv or "
                                 ".parquet) and no plan for that date in the store"))
    rec = plans[0]
    outbox.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{day.isoformat()}.inputs-", dir=outbox))
    p = folder / f"originations.{rec.originations_format}"
    p.write_bytes(store.blob(rec.originations_digest))
    log.info("originations taken from the store", extra={"fields": {"date": day.isoformat(), "plan_id": rec.id}})
    return p


def _recent_volumes(store: Store, day: dt.date, k: int) -> list[float]:
    days = [bd for bd in store.batch_days() if bd.day < day][-k:]
    return [sum(r["principal"] for r in bd.usage["routes"].values()) + bd.usage.get("unfunded_principal", 0.0)
            for bd in days]


def _recent(store: Store, day: dt.date, loans: pd.DataFrame, k: int) -> tuple[pd.DataFrame, list[float]]:
    """Today's loans and up to ``k`` recent days' (the mix the forecast is drawn from)."""
    frames = [loans]
    vols = []
    for bd in [bd for bd in store.batch_days() if bd.day < day][-k:]:
        prev = _stored_loans(store, store.plan(bd.plan_id))
        cols = [c for c in loans.columns if c in prev.columns]
        if len(cols) == len(loans.columns):
            frames.append(prev[cols])
        vols.append(float(prev["principal"].sum()))
    pool = pd.concat(frames, ignore_index=True) if len(frames) > 1 else loans
    return pool, vols


def _record(store: Store, day: dt.date, orig_path: Path, terms: Terms, portfolio, exposures, result: Plan,
            delta: Delta, port_cols: list[str], pacing: Pacing, bids: pd.DataFrame | None = None) -> str:
    """The day in the store, in one transaction: inputs, plan, tables, delta and the day's row."""
    from .plan import _jsonable
    tables = {"allocations": result.allocations, "routes": result.funders, "constraints": result.constraints,
              "exposures_delta": delta.exposures}
    if delta.portfolio is not None:
        tables["portfolio_delta"] = delta.portfolio
    blobs = {k: frame_to_parquet(v) for k, v in tables.items()}
    funders_json = json.dumps(terms.document(), sort_keys=True).encode()
    usage = {"routes": delta.routes, "portfolio_columns": port_cols,
             "unfunded_principal": round(result.unfunded_principal, 2),
             "pacing": {"method": pacing.method, "allowance": pacing.allowance, "min_target": pacing.min_target}}
    with store.session() as s, s.begin():
        rec = PlanRecord(
            id=store.new_plan_id(), kind="batch", status="succeeded", plan_status=result.status.value,
            plan_date=day, created_by="batch", inputs_digest=result.inputs_digest,
            originations_digest=store.put_blob(s, orig_path.read_bytes(), "originations", orig_path.name),
            originations_format=orig_path.suffix.lstrip("."),
            funders_digest=store.put_blob(s, funders_json, "funders", "funders.json"),
            loan_count=len(result.allocations), objective=float(result.objective),
            summary=_jsonable(result.summary()), options={}, attempts=1, started_at=utcnow(), finished_at=utcnow())
        for name, table in (("portfolio", portfolio), ("exposures", exposures), ("bids", bids)):
            if table is not None:
                setattr(rec, f"{name}_digest", store.put_blob(s, frame_to_parquet(table), name, f"{name}.parquet"))
                setattr(rec, f"{name}_format", "parquet")
        s.add(rec)
        s.flush()
        for name, data in blobs.items():
            s.add(PlanTable(plan_id=rec.id, name=name, rows=len(tables[name]), content=data))
        old = s.get(BatchDay, day)
        if old is not None:
            s.delete(old)
            s.flush()
        s.add(BatchDay(day=day, plan_id=rec.id, usage=usage))
    return rec.id
