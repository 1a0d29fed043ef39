"""Every bad input of the contract: exit 2, a message naming file and row/key, nothing written."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import cli_args, simple_loans, simple_terms, write_day
from fundalloc.cli import main


def run_plan(tmp_path: Path, loans, terms, capsys, **extra) -> tuple[int, str, Path]:
    files = write_day(tmp_path / "in", loans, terms, **extra)
    out = tmp_path / "out"
    code = main(["plan", *cli_args(files), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    return code, err, out


def loans_with(**changes) -> pd.DataFrame:
    df = simple_loans()
    for col, (row, value) in changes.items():
        df[col] = df[col].astype(object)
        df.loc[row, col] = value
    return df


CASES = {
    "missing_column": (lambda: simple_loans().drop(columns=["apr"]), simple_terms(), ["column 'apr'", "missing"]),
    "principal_not_number": (lambda: loans_with(principal=(1, "abc")), simple_terms(), ["row 2", "principal is not a number"]),
    "duplicate_loan_id": (lambda: loans_with(loan_id=(2, "L1")), simple_terms(), ["rows 1 (loan_id L1), 3", "repeats"]),
    "principal_not_positive": (lambda: loans_with(principal=(0, -5.0)), simple_terms(), ["row 1", "principal must be > 0"]),
    "empty_required": (lambda: loans_with(tenor_months=(1, None)), simple_terms(), ["row 2", "tenor_months is empty"]),
    "tenor_not_integer": (lambda: loans_with(tenor_months=(2, 1.5)), simple_terms(), ["row 3", "whole number of months"]),
    "tenor_zero": (lambda: loans_with(tenor_months=(0, 0)), simple_terms(), ["row 1", "whole number of months"]),
    "apr_percent": (lambda: loans_with(apr=(0, 18.0)), simple_terms(), ["row 1", "apr must be a fraction"]),
    "empty_loan_id": (lambda: loans_with(loan_id=(1, None)), simple_terms(), ["row 2", "loan_id is empty"]),
}


def _terms(mut):
    t = copy.deepcopy(simple_terms())
    mut(t)
    return t


TERMS_CASES = {
    "unknown_key": (lambda t: t["funders"][0].update(daly_max=5), ["funders[bank_a].daly_max", "unknown key"]),
    "rule_missing_column": (lambda t: t["funders"][0].update(eligibility={"product": ["x"]}),
                            ["funders[bank_a].eligibility.product", "do not have"]),
    "share_above_one": (lambda t: t["funders"][1].update(funding_share=1.2), ["funders[trust_b].funding_share", "(0, 1]"]),
    "share_zero": (lambda t: t["funders"][1].update(funding_share=0), ["funders[trust_b].funding_share"]),
    "bank_share_cap": (lambda t: t["funders"][0].update(funding_share=0.8), ["funders[bank_a].funding_share", "max_bank_share"]),
    "min_above_max": (lambda t: t["funders"][0].update(daily_min=9000), ["funders[bank_a]", "daily_min 9000.0 is above daily_max"]),
    "max_share_range": (lambda t: t["funders"][0].update(concentration=[{"name": "c", "where": {"risk_grade": ["A"]}, "max_share": 1.5}]),
                        ["funders[bank_a].concentration[c].max_share", "[0, 1]"]),
    "duplicate_ids": (lambda t: t["funders"][1].update(id="bank_a"), ["duplicate funder ids"]),
    "platform_id": (lambda t: t["funders"][1].update(id="platform"), ["platform's id"]),
    "penalty_too_low": (lambda t: t["platform"].update(unfunded_penalty=0.04), ["platform.unfunded_penalty", "does not exceed"]),
    "wa_not_numeric": (lambda t: t["funders"][0].update(weighted_average=[{"field": "province", "min": 1}]),
                       ["funders[bank_a].weighted_average[0].field", "numeric"]),
    "range_on_text": (lambda t: t["funders"][0].update(eligibility={"province": {"min": 3}}),
                      ["funders[bank_a].eligibility.province", "not numeric"]),
    "per_missing_column": (lambda t: t["funders"][0].update(concentration=[{"name": "c", "per": "state", "max_share": 0.2}]),
                           ["funders[bank_a].concentration[c].per", "state"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_originations(tmp_path, capsys, case):
    make, terms, needles = CASES[case]
    code, err, out = run_plan(tmp_path, make(), terms, capsys)
    assert code == 2
    assert "loans.csv" in err
    for n in needles:
        assert n in err, err
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(TERMS_CASES))
def test_bad_terms(tmp_path, capsys, case):
    mut, needles = TERMS_CASES[case]
    code, err, out = run_plan(tmp_path, simple_loans(), _terms(mut), capsys)
    assert code == 2
    assert "funders.yaml" in err
    for n in needles:
        assert n in err, err
    assert not out.exists()


def test_every_problem_reported_at_once(tmp_path, capsys):
    loans = loans_with(principal=(0, -1.0), apr=(1, 25.0))
    terms = _terms(lambda t: t["funders"][0].update(daly_max=5))
    code, err, _ = run_plan(tmp_path, loans, terms, capsys)
    assert code == 2
    assert "daly_max" in err and "principal must be > 0" in err and "apr must be a fraction" in err


def test_malformed_yaml(tmp_path, capsys):
    code, err, out = run_plan(tmp_path, simple_loans(), "platform: {cost_of_capital: [0.1\nfunders: -", capsys)
    assert code == 2 and "funders.yaml" in err and "malformed YAML" in err
    assert not out.exists()


def test_unreadable_file(tmp_path, capsys):
    out = tmp_path / "out"
    files = write_day(tmp_path / "in", simple_loans(), simple_terms())
    files["originations"] = str(tmp_path / "nope.csv")
    code = main(["plan", *cli_args(files), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "nope.csv" in err and "cannot read" in err
    assert not out.exists()


def test_bad_portfolio_column(tmp_path, capsys):
    terms = _terms(lambda t: t["funders"][0].update(
        concentration=[{"name": "sub", "where": {"risk_grade": ["C"]}, "max_share": 0.3, "basis": "portfolio"}]))
    portfolio = pd.DataFrame({"funder_id": ["bank_a"], "outstanding": [100.0]})
    code, err, out = run_plan(tmp_path, simple_loans(), terms, capsys, portfolio=portfolio)
    assert code == 2 and "portfolio.csv" in err and "column 'risk_grade'" in err
    assert not out.exists()


def test_invalid_input_keeps_previous_plan(tmp_path, capsys):
    files = write_day(tmp_path / "in", simple_loans(), simple_terms())
    out = tmp_path / "out"
    assert main(["plan", *cli_args(files), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = write_day(tmp_path / "bad", loans_with(principal=(0, -1.0)), simple_terms())
    assert main(["plan", *cli_args(bad), "--out", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    capsys.readouterr()


def test_empty_originations_is_an_empty_plan(tmp_path, capsys):
    code, err, out = run_plan(tmp_path, "loan_id,principal,tenor_months,apr\n", simple_terms(), capsys)
    assert code == 0, err
    alloc = pd.read_csv(out / "allocations.csv")
    assert len(alloc) == 0
    import json
    summary = json.loads((out / "plan.json").read_text())
    assert summary["objective"] == 0 and summary["unfunded_count"] == 0


def test_exit_code_from_the_installed_command(tmp_path):
    files = write_day(tmp_path / "in", loans_with(apr=(0, 18.0)), simple_terms())
    r = subprocess.run([sys.executable, "-m", "fundalloc.cli", "plan", *cli_args(files), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "apr must be a fraction" in r.stderr
    assert not (tmp_path / "o").exists()
