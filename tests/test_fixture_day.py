"""The shipped 100k-loan day through the command line: golden properties of its plan."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import cli_args
from fundalloc.cli import main


@pytest.fixture(scope="module")
def planned(tmp_path_factory, request):
    from conftest import FIXTURES
    d = FIXTURES / "day100k"
    files = {"originations": str(d / "originations.parquet"), "funders": str(d / "funders.yaml"),
             "portfolio": str(d / "portfolio.csv"), "exposures": str(d / "exposures.csv")}
    out = tmp_path_factory.mktemp("plan") / "day"
    assert main(["plan", *cli_args(files), "--out", str(out), "--no-progress"]) == 0
    return files, out


def test_writes_the_four_files(planned):
    _, out = planned
    assert sorted(p.name for p in out.iterdir()) == ["allocations.csv", "constraints.csv", "funders.csv", "plan.json"]
    alloc = pd.read_csv(out / "allocations.csv", dtype={"loan_id": str, "funder_id": str}, keep_default_na=False)
    assert list(alloc.columns[:5]) == ["loan_id", "funder_id", "funder_amount", "platform_amount", "cost"]
    assert len(alloc) == 100_000 and alloc["loan_id"].is_unique
    cons = pd.read_csv(out / "constraints.csv")
    for c in ("constraint", "funder_id", "kind", "value", "limit", "slack", "binding", "shadow_price"):
        assert c in cons.columns
    assert cons["binding"].any()
    summary = json.loads((out / "plan.json").read_text())
    for k in ("status", "objective", "lower_bound", "gap", "funding_cost", "unfunded_count", "unfunded_principal",
              "shortfall", "breaches", "inputs_digest", "solver", "timings"):
        assert k in summary
    assert summary["solver"]["name"] == "highs" and summary["solver"]["version"]
    assert summary["inputs_digest"].startswith("sha256:")
    assert {"lp", "rounding", "read_validate", "write"} <= set(summary["timings"])


def test_verifier_finds_no_violation_and_the_same_objective(planned, capsys):
    files, out = planned
    capsys.readouterr()
    assert main(["verify", *cli_args(files), "--plan", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "plan.json").read_text())
    assert rep["ok"] and rep["violations"] == []
    assert rep["objective"] == pytest.approx(summary["objective"], rel=1e-12)
    assert rep["gap"] <= 1e-5 and summary["gap"] <= 1e-5
    assert summary["status"] == "optimal"


def test_breached_warehouse_limit_is_reported_and_closed(planned):
    files, out = planned
    summary = json.loads((out / "plan.json").read_text())
    assert [(b["funder_id"], b["constraint"]) for b in summary["breaches"]] == [("abs_2", "concentration:subprime")]
    loans = pd.read_parquet(files["originations"], columns=["loan_id", "risk_grade"])
    alloc = pd.read_csv(out / "allocations.csv", dtype=str, keep_default_na=False)
    m = alloc.merge(loans, on="loan_id")
    assert not ((m["funder_id"] == "abs_2") & m["risk_grade"].isin(["D", "E"])).any()


def test_same_inputs_give_a_byte_identical_plan(planned, tmp_path):
    files, out = planned
    again = tmp_path / "again"
    assert main(["plan", *cli_args(files), "--out", str(again), "--no-progress"]) == 0
    assert (again / "allocations.csv").read_bytes() == (out / "allocations.csv").read_bytes()
    a = json.loads((again / "plan.json").read_text())
    b = json.loads((out / "plan.json").read_text())
    assert a["inputs_digest"] == b["inputs_digest"] and a["objective"] == b["objective"]


def test_verifier_catches_a_broken_limit(planned, tmp_path, capsys):
    """Move one loan onto a full bank: the verifier must notice."""
    files, out = planned
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("funders.csv", "constraints.csv", "plan.json"):
        (bad / name).write_bytes((out / name).read_bytes())
    alloc = pd.read_csv(out / "allocations.csv", dtype={"loan_id": str, "funder_id": str}, keep_default_na=False)
    cons = pd.read_csv(out / "constraints.csv")
    full = cons[(cons["kind"] == "daily_max") & cons["binding"]]["funder_id"].iloc[0]
    loans = pd.read_parquet(files["originations"])
    # a big loan that the bank could take by its rules but does not have today
    from fundalloc.api import load_day
    inst = load_day(files["originations"], files["funders"], files["portfolio"], files["exposures"]).instance
    r = list(inst.route_ids).index(full)
    cand = [i for i in (-loans["principal"]).argsort() if inst.elig[i, r] and alloc.loc[i, "funder_id"] != full][0]
    p = loans.loc[cand, "principal"]
    s = 0.7
    alloc.loc[cand, ["funder_id", "funder_amount", "platform_amount"]] = [full, s * p, (1 - s) * p]
    alloc.to_csv(bad / "allocations.csv", index=False)
    capsys.readouterr()
    assert main(["verify", *cli_args(files), "--plan", str(bad)]) == 1
    text = capsys.readouterr().out
    assert f"VIOLATION daily_max [{full}]" in text
