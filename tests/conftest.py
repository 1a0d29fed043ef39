from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FUNDALLOC_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIXTURES = ROOT / "fixtures"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(FIXTURES))


def write_day(tmp: Path, loans: pd.DataFrame | str, funders: dict | str, portfolio: pd.DataFrame | None = None,
              exposures: pd.DataFrame | None = None, loans_name: str = "loans.csv") -> dict[str, str]:
    """Write a day's files into ``tmp`` and return the CLI arguments."""
    tmp.mkdir(parents=True, exist_ok=True)
    lp = tmp / loans_name
    if isinstance(loans, str):
        lp.write_text(loans)
    elif loans_name.endswith(".parquet"):
        loans.to_parquet(lp, index=False)
    else:
        loans.to_csv(lp, index=False)
    fp = tmp / "funders.yaml"
    fp.write_text(funders if isinstance(funders, str) else yaml.safe_dump(funders, sort_keys=False))
    out = {"originations": str(lp), "funders": str(fp)}
    if portfolio is not None:
        pp = tmp / "portfolio.csv"
        portfolio.to_csv(pp, index=False)
        out["portfolio"] = str(pp)
    if exposures is not None:
        xp = tmp / "exposures.csv"
        exposures.to_csv(xp, index=False)
        out["exposures"] = str(xp)
    return out


def cli_args(files: dict[str, str]) -> list[str]:
    args = []
    for k in ("originations", "funders", "portfolio", "exposures"):
        if k in files:
            args += [f"--{k}", files[k]]
    return args


def simple_terms(**platform) -> dict:
    return {
        "platform": {"id": "platform", "cost_of_capital": 0.10, **platform},
        "funders": [
            {"id": "bank_a", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.04, "daily_max": 7000},
            {"id": "trust_b", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.08},
        ],
    }


def simple_loans() -> pd.DataFrame:
    return pd.DataFrame({
        "loan_id": ["L1", "L2", "L3"], "principal": [10000.0, 6000.0, 3000.0],
        "tenor_months": [11, 11, 11], "apr": [0.12, 0.15, 0.2],
        "risk_grade": ["A", "B", "C"], "province": ["GD", "ZJ", "GD"], "score": [720, 680, 650],
        "borrower_id": ["B1", "B2", "B3"],
    })


@pytest.fixture
def day100k() -> dict[str, str]:
    d = FIXTURES / "day100k"
    return {"originations": str(d / "originations.parquet"), "funders": str(d / "funders.yaml"),
            "portfolio": str(d / "portfolio.csv"), "exposures": str(d / "exposures.csv")}


# ------------------------------------------------------------------------------------------ stores
# The suite runs the store against SQLite and PostgreSQL. `make test` starts a local PostgreSQL
# server (scripts/postgres-up) and passes its URL in FUNDALLOC_TEST_POSTGRES_URL; the PostgreSQL
# cases fail (never skip) without it. Run `pytest -m "not postgres"` to leave them out on purpose.
def _fresh_postgres_url() -> str:
    import uuid

    from sqlalchemy.engine import make_url

    base = os.environ.get("FUNDALLOC_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("FUNDALLOC_TEST_POSTGRES_URL is not set: run the suite with `make test`, which starts "
                    "PostgreSQL, or leave these cases out with -m 'not postgres'")
    u = make_url(base)
    name = f"fa_{uuid.uuid4().hex[:12]}"
    with _pg_admin(u) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _CREATED.append(name)
    return u.set(database=name).render_as_string(hide_password=False)


_CREATED: list[str] = []


def _pg_admin(u):
    import psycopg
    return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                           dbname=u.database, autocommit=True)


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases():
    """The per-test PostgreSQL databases go when the session ends."""
    yield
    if _CREATED:
        from sqlalchemy.engine import make_url
        with _pg_admin(make_url(os.environ["FUNDALLOC_TEST_POSTGRES_URL"])) as conn:
            for name in _CREATED:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


STORES = [pytest.param("sqlite", id="sqlite"),
          pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]


def make_store_url(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'fundalloc.db'}"
    return _fresh_postgres_url()


@pytest.fixture(params=STORES)
def store_url(request, tmp_path) -> str:
    return make_store_url(request.param, tmp_path)


def reroute_every_loan(out: Path, loans: pd.DataFrame, funder_id: str, share: float, unit_cost: float) -> None:
    """Rewrite a plan's ``allocations.csv`` with every loan on one funder (a plan the verifier must
    refuse): its share of each principal, the platform the rest, ``unit_cost`` per unit of principal."""
    alloc = pd.read_csv(out / "allocations.csv", keep_default_na=False)
    p = loans["principal"].to_numpy()
    alloc["funder_id"] = funder_id
    alloc["funder_amount"] = share * p
    alloc["platform_amount"] = (1 - share) * p
    alloc["cost"] = p * unit_cost
    alloc.to_csv(out / "allocations.csv", index=False)
