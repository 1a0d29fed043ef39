"""Small hand-checkable days with known optimal plans, replayed on every backend."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import fundalloc as fa
from conftest import FIXTURES
from fundalloc.io import read_exposures, read_originations
from fundalloc.verify import verify_plan
from oracle import brute_force

CASES = sorted(p.name for p in (FIXTURES / "small").iterdir() if p.is_dir())


def _files(case: str) -> dict:
    d = FIXTURES / "small" / case
    files = {"originations": d / "originations.csv", "funders": d / "funders.yaml"}
    if (d / "exposures.csv").exists():
        files["exposures"] = d / "exposures.csv"
    return files


def test_cases_are_shipped():
    assert len(CASES) >= 5


@pytest.mark.parametrize("case", CASES)
def test_expected_objective_is_the_true_optimum(case):
    """The hand-computed optimum agrees with exhaustive enumeration."""
    f = _files(case)
    expected = json.loads((FIXTURES / "small" / case / "expected.json").read_text())
    terms = fa.load_terms(f["funders"])
    loans = read_originations(f["originations"])
    expo = read_exposures(f["exposures"]) if "exposures" in f else None
    best, combo = brute_force(loans, terms, expo)
    assert best == pytest.approx(expected["objective"], abs=1e-6)
    assert dict(zip(loans["loan_id"], [c or "" for c in combo])) == expected["routes"]


@pytest.mark.parametrize("solver", ["highs", "ortools", "pulp"])
@pytest.mark.parametrize("case", CASES)
def test_plan_matches_known_optimum(case, solver, tmp_path):
    f = _files(case)
    expected = json.loads((FIXTURES / "small" / case / "expected.json").read_text())
    plan = fa.plan(f["originations"], f["funders"], exposures=f.get("exposures"), solver=solver)
    assert plan.objective == pytest.approx(expected["objective"], abs=1e-6)
    routes = dict(zip(plan.allocations["loan_id"], plan.allocations["funder_id"]))
    assert routes == expected["routes"]
    assert plan.lower_bound <= plan.objective + 1e-6
    assert plan.solver["name"] == solver
    plan.write(tmp_path / "plan")
    rep = verify_plan(f["originations"], f["funders"], tmp_path / "plan", exposures=f.get("exposures"))
    assert rep.ok, rep.lines()
    assert rep.objective == pytest.approx(expected["objective"], abs=1e-6)


def test_unfunded_loan_has_a_reason():
    f = _files("platform_capital")
    plan = fa.plan(f["originations"], f["funders"])
    row = plan.allocations.set_index("loan_id").loc["P2"]
    assert row["funder_id"] == ""
    assert "platform_capacity" in row["unfunded_reason"]
    assert plan.unfunded_count == 1 and plan.unfunded_principal == 3000
