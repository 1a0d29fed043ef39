"""The day-end batch: outbox, state across days, paced period quotas, atomicity and exit codes."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import STORES, make_store_url

from fundalloc.batch import AlreadyRun, BatchOptions, fold, rebuilt_deltas, run_day, stored_deltas
from fundalloc.errors import InputError
from fundalloc.store import Store

BIN = Path(sys.executable).parent / "fundalloc"
D1 = dt.date(2026, 11, 1)


def month_terms(**bank_a) -> dict:
    return {
        "as_of": D1.isoformat(),
        "platform": {"id": "platform", "cost_of_capital": 0.15, "daily_capacity": 2_000_000},
        "funders": [
            {"id": "bank_a", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.03, "daily_max": 600_000,
             "monthly_max": 1_200_000, "obligor_limit": 30_000, **bank_a},
            {"id": "bank_b", "kind": "bank", "funding_share": 0.7, "cost_of_funds": 0.06, "daily_max": 250_000,
             "facility_limit": 3_000_000, "outstanding": 2_000_000,
             "concentration": [{"name": "grade_c", "where": {"risk_grade": ["C"]}, "max_share": 0.3}]},
            {"id": "trust", "kind": "trust", "funding_share": 1.0, "cost_of_funds": 0.09},
        ],
    }


def day_loans(day: dt.date, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "loan_id": [f"{day:%m%d}-{i:04d}" for i in range(n)],
        "principal": np.round(rng.lognormal(np.log(3000), 0.6, n), 2),
        "tenor_months": rng.choice([3, 6, 12], n),
        "apr": np.round(rng.uniform(0.08, 0.24, n), 4),
        "borrower_id": [f"B{int(b):04d}" for b in rng.integers(0, 300, n)],
        "risk_grade": rng.choice(["A", "B", "C"], n, p=[0.4, 0.35, 0.25]),
    })


def make_inbox(root: Path, days: int = 5, n: int = 120, spike_day: int = 3, terms: dict | None = None,
               forecast: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "funders.yaml").write_text(yaml.safe_dump(terms or month_terms()))
    fc = []
    for k in range(days):
        d = D1 + dt.timedelta(days=k)
        m = n * (3 if k + 1 == spike_day else 1)
        (root / d.isoformat()).mkdir(exist_ok=True)
        loans = day_loans(d, m, 100 + k)
        loans.to_csv(root / d.isoformat() / "originations.csv", index=False)
        fc.append({"date": d.isoformat(), "principal": round(float(loans["principal"].sum()), 2)})
    for k in range(days, 30):
        fc.append({"date": (D1 + dt.timedelta(days=k)).isoformat(), "principal": 0.0})
    if forecast:
        pd.DataFrame(fc).to_csv(root / "forecast.csv", index=False)
    pd.DataFrame({"funder_id": ["bank_a"], "borrower_id": ["B0001"], "outstanding": [29_000.0]}).to_csv(
        root / "exposures.csv", index=False)
    return root


def days(k: int) -> list[dt.date]:
    return [D1 + dt.timedelta(days=i) for i in range(k)]


def outbox_files(folder: Path) -> dict[str, object]:
    """Every file of a day's outbox; plan.json without its timings (they are wall-clock)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(folder))
            if rel == "plan.json":
                doc = json.loads(p.read_text())
                doc.pop("timings")
                out[rel] = doc
            else:
                out[rel] = p.read_bytes()
    return out


@pytest.fixture(params=STORES)
def store(request, tmp_path) -> Store:
    s = Store(make_store_url(request.param, tmp_path))
    s.migrate()
    return s


def test_a_day_writes_every_file_and_per_funder_files_sum_to_the_plan(store, tmp_path):
    inbox = make_inbox(tmp_path / "in", days=1)
    [r] = run_day(store, D1, inbox, tmp_path / "out")
    out = tmp_path / "out" / D1.isoformat()
    for name in ("allocations.csv", "funders.csv", "constraints.csv", "plan.json", "report.html", "manifest.json"):
        assert (out / name).is_file(), name
    alloc = pd.read_csv(out / "allocations.csv", keep_default_na=False)
    routes = pd.read_csv(out / "funders.csv").set_index("funder_id")
    manifest = json.loads((out / "manifest.json").read_text())
    seen = []
    for rid in ("bank_a", "bank_b", "trust", "platform"):
        mine = pd.read_csv(out / "funders" / f"{rid}.csv")
        seen += list(mine["loan_id"])
        assert mine["funder_amount"].sum() == pytest.approx(routes.loc[rid, "funder_amount"], abs=0.01)
        assert mine["cost"].sum() == pytest.approx(routes.loc[rid, "cost"], abs=0.01)
        assert manifest["routes"][rid]["funder_amount"] == pytest.approx(routes.loc[rid, "funder_amount"], abs=0.01)
        assert len(mine) == routes.loc[rid, "loan_count"]
    unfunded = list(alloc.loc[alloc["funder_id"] == "", "loan_id"])
    assert sorted(seen + unfunded) == sorted(alloc["loan_id"])  # every loan exactly once
    html = (out / "report.html").read_text()
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # offline
    assert r.plan.status.value in ("optimal", "feasible")


def test_the_day_passes_the_independent_verifier(tmp_path):
    store = Store(make_store_url("sqlite", tmp_path))
    store.migrate()
    inbox = make_inbox(tmp_path / "in", days=2)
    for d in days(2):
        run_day(store, d, inbox, tmp_path / "out")
    out = tmp_path / "out" / "2026-11-02"
    res = subprocess.run([str(BIN), "verify", "--originations", str(inbox / "2026-11-02" / "originations.csv"),
                          "--funders", str(out / "inputs" / "funders.json"),
                          "--exposures", str(out / "inputs" / "exposures.csv"), "--plan", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_rerunning_a_day_is_idempotent(store, tmp_path):
    inbox = make_inbox(tmp_path / "in", days=2)
    run_day(store, D1, inbox, tmp_path / "out")
    first = outbox_files(tmp_path / "out" / D1.isoformat())
    with pytest.raises(AlreadyRun):
        run_day(store, D1, inbox, tmp_path / "out")
    assert outbox_files(tmp_path / "out" / D1.isoformat()) == first
    run_day(store, D1, inbox, tmp_path / "out", BatchOptions(force=True))
    assert outbox_files(tmp_path / "out" / D1.isoformat()) == first
    assert [bd.day for bd in store.batch_days()] == [D1]


def test_state_after_day_n_equals_state_rebuilt_from_the_stored_plans(store, tmp_path):
    inbox = make_inbox(tmp_path / "in", days=4)
    for d in days(4):
        run_day(store, d, inbox, tmp_path / "out")
    after = D1 + dt.timedelta(days=4)
    terms_as_of = D1
    recorded = fold(after, stored_deltas(store), terms_as_of)
    rebuilt = fold(after, rebuilt_deltas(store), terms_as_of)
    assert recorded.equals(rebuilt)
    # and both agree with the outbox files, which the store never read
    carried: dict[str, float] = {}
    rows: dict[str, int] = {}  # the outbox rounds each amount to the cent: half a cent per row
    expo: dict[tuple[str, str], float] = {}
    for d in days(4):
        a = pd.read_csv(tmp_path / "out" / d.isoformat() / "allocations.csv", keep_default_na=False)
        loans = pd.read_csv(inbox / d.isoformat() / "originations.csv")
        a = a[a["funder_id"] != ""].merge(loans[["loan_id", "borrower_id"]], on="loan_id")
        for fid, v in a.groupby("funder_id")["funder_amount"].sum().items():
            carried[fid] = carried.get(fid, 0.0) + v
        for fid, k in a.groupby("funder_id").size().items():
            rows[fid] = rows.get(fid, 0) + int(k)
        for (fid, b), v in a.groupby(["funder_id", "borrower_id"])["funder_amount"].sum().items():
            expo[fid, b] = expo.get((fid, b), 0.0) + v
    assert set(recorded.carried) == set(carried)
    for fid, v in carried.items():
        assert recorded.carried[fid] == pytest.approx(v, abs=0.005 * rows[fid] + 1e-6)
        assert recorded.month_used[fid] == pytest.approx(v, abs=0.005 * rows[fid] + 1e-6)
    got = {(r.funder_id, r.borrower_id): r.outstanding for r in recorded.exposures.itertuples()}
    assert set(got) == set(expo) and all(got[k] == pytest.approx(v, abs=0.01) for k, v in expo.items())
    # the carried balance is what the next day's terms start from
    nxt = json.loads((tmp_path / "out" / "2026-11-04" / "inputs" / "funders.json").read_text())
    prev3 = fold(D1 + dt.timedelta(days=3), stored_deltas(store), terms_as_of)
    bank_b = [f for f in nxt["funders"] if f["id"] == "bank_b"][0]
    assert bank_b["outstanding"] == pytest.approx(2_000_000 + prev3.carried.get("bank_b", 0.0), abs=0.01)


@pytest.mark.parametrize("pacing", ["lookahead", pytest.param("even", marks=pytest.mark.slow), "none"])
def test_monthly_quota_holds_over_the_month(pacing, tmp_path):
    store = Store(make_store_url("sqlite", tmp_path))
    store.migrate()
    inbox = make_inbox(tmp_path / "in", days=5)
    opts = BatchOptions(pacing=pacing, pace_facilities=True)
    results = [run_day(store, d, inbox, tmp_path / "out", opts)[0] for d in days(5)]
    used = sum(float(r.plan.funders.set_index("funder_id").loc["bank_a", "funder_amount"]) for r in results)
    assert used <= 1_200_000 + 0.01
    for r in results:  # each day within its paced allowance and the daily cap
        a = float(r.plan.funders.set_index("funder_id").loc["bank_a", "funder_amount"])
        assert a <= min(600_000, r.pacing.allowance["bank_a"]) + 0.01
        assert r.pacing.remaining["bank_a"] == pytest.approx(max(1_200_000 - r.state.month_used.get("bank_a", 0), 0),
                                                              abs=0.01)
        # bank_b's facility headroom is paced like a quota: 3M limit, 2M outstanding
        assert r.pacing.remaining["bank_b"] == pytest.approx(1_000_000 - r.state.carried.get("bank_b", 0), abs=0.01)
        b = float(r.plan.funders.set_index("funder_id").loc["bank_b", "funder_amount"])
        assert b <= r.pacing.allowance["bank_b"] + 0.01


def test_lookahead_gives_the_spike_day_more_quota_than_even_pacing(tmp_path):
    allow = {}
    for pacing in ("lookahead", "even"):
        store = Store(make_store_url("sqlite", tmp_path / pacing))
        store.migrate()
        inbox = make_inbox(tmp_path / pacing / "in", days=3, spike_day=3)
        rs = [run_day(store, d, inbox, tmp_path / pacing / "out", BatchOptions(pacing=pacing))[0] for d in days(3)]
        allow[pacing] = [r.pacing.allowance["bank_a"] for r in rs]
    # the forecast shows volume only on days 1-5 with a triple day 3: look-ahead saves quota for it
    assert allow["lookahead"][2] > allow["even"][2]
    assert allow["lookahead"][0] > allow["even"][0]  # and spends it on the known volume, not on empty days


def test_quota_is_not_a_constraint_of_one_plain_plan(tmp_path):
    """`fundalloc plan` (one day, no state) treats monthly_max as a cap on the day, and verify checks it."""
    import fundalloc as fa
    loans = day_loans(D1, 300, 1)
    t = month_terms(monthly_max=100_000)
    p = fa.plan(loans, t)
    assert float(p.funders.set_index("funder_id").loc["bank_a", "funder_amount"]) <= 100_000 + 0.01


def test_bad_input_exits_2_and_writes_nothing(tmp_path):
    inbox = make_inbox(tmp_path / "in", days=1)
    env = {**os.environ, "FUNDALLOC_DATABASE_URL": f"sqlite:///{tmp_path / 'fa.db'}"}
    run = lambda *a: subprocess.run([str(BIN), "batch", *a], capture_output=True, text=True, env=env)
    r = run("--date", "2026-11-09", "--inbox", str(inbox), "--outbox", str(tmp_path / "out"))
    assert r.returncode == 2 and "2026-11-09" in r.stderr and "originations" in r.stderr
    bad = inbox / D1.isoformat() / "originations.csv"
    df = pd.read_csv(bad)
    df.loc[4, "principal"] = -3
    df.to_csv(bad, index=False)
    r = run("--date", D1.isoformat(), "--inbox", str(inbox), "--outbox", str(tmp_path / "out"))
    assert r.returncode == 2 and "row 5" in r.stderr and "principal" in r.stderr
    r = run("--date", "2026-13-01", "--inbox", str(inbox), "--outbox", str(tmp_path / "out"))
    assert r.returncode == 2 and "YYYY-MM-DD" in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert Store(env["FUNDALLOC_DATABASE_URL"]).batch_days() == []


def test_exit_codes_logs_and_no_progress_bar_in_a_pipe(tmp_path):
    t = month_terms()
    t["platform"]["daily_capacity"] = 1000  # most loans cannot be funded
    t["funders"] = t["funders"][:1]
    inbox = make_inbox(tmp_path / "in", days=1, terms=t)
    env = {**os.environ, "FUNDALLOC_DATABASE_URL": f"sqlite:///{tmp_path / 'fa.db'}"}
    args = [str(BIN), "batch", "--date", D1.isoformat(), "--inbox", str(inbox), "--outbox", str(tmp_path / "out")]
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    assert r.returncode == 6, r.stderr  # success with unfunded loans
    assert "\r" not in r.stderr
    lines = [json.loads(x) for x in r.stderr.splitlines()]
    planned = [x for x in lines if x["message"] == "day planned"]
    assert planned and planned[0]["unfunded_count"] > 0 and planned[0]["date"] == D1.isoformat()
    report = (tmp_path / "out" / D1.isoformat() / "report.html").read_text()
    assert "Unfunded loans" in report and "platform_capacity" in report  # the reason is shown
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    assert r.returncode == 5 and "--force" in r.stderr  # already run


def _uninterrupted(tmp_path: Path, inbox: Path, d: dt.date) -> dict:
    store = Store(f"sqlite:///{tmp_path / 'ref.db'}")
    store.migrate()
    for x in days((d - D1).days + 1):
        run_day(store, x, inbox, tmp_path / "ref")
    return outbox_files(tmp_path / "ref" / d.isoformat())


@pytest.mark.parametrize("kill_when", ["solving", "writing"])
def test_a_killed_run_leaves_nothing_half_done_and_a_rerun_matches(tmp_path, kill_when):
    inbox = make_inbox(tmp_path / "in", days=2, n=400)
    expected = _uninterrupted(tmp_path, inbox, D1 + dt.timedelta(days=1))
    url = f"sqlite:///{tmp_path / 'fa.db'}"
    env = {**os.environ, "FUNDALLOC_DATABASE_URL": url}
    out = tmp_path / "out"
    args = lambda d: [str(BIN), "batch", "--date", d.isoformat(), "--inbox", str(inbox), "--outbox", str(out)]
    assert subprocess.run(args(D1), env=env, capture_output=True).returncode in (0, 6)
    d2 = D1 + dt.timedelta(days=1)
    proc = subprocess.Popen(args(d2), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.monotonic()
    if kill_when == "writing":
        while not list(out.glob(f".{d2.isoformat()}.partial-*")) and proc.poll() is None:
            time.sleep(0.002)
    else:  # the moment it logs that the solve starts
        for line in proc.stderr:
            if json.loads(line).get("step") == 4:
                break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert time.monotonic() - t0 < 60
    store = Store(url)
    recorded = [bd.day for bd in store.batch_days()]
    if kill_when == "solving":
        assert recorded == [D1]
    if d2 not in recorded:  # killed before the day was recorded: no outbox for it either
        assert not (out / d2.isoformat()).exists()
    r = subprocess.run(args(d2), env=env, capture_output=True, text=True)
    assert r.returncode in (0, 6), r.stderr
    assert outbox_files(out / d2.isoformat()) == expected
    assert not list(out.glob(".*"))  # no leftovers
    assert [bd.day for bd in store.batch_days()] == [D1, d2]


def test_recompute_following_replans_later_days_on_the_new_state(tmp_path):
    store = Store(make_store_url("sqlite", tmp_path))
    store.migrate()
    inbox = make_inbox(tmp_path / "in", days=3)
    for d in days(3):
        run_day(store, d, inbox, tmp_path / "out")
    before = {bd.day: bd.plan_id for bd in store.batch_days()}
    # the treasury corrects day 1's terms: bank_a is closed that day
    t = month_terms(daily_max=0)
    (inbox / D1.isoformat() / "funders.yaml").write_text(yaml.safe_dump(t))
    rs = run_day(store, D1, inbox, tmp_path / "out", BatchOptions(force=True, recompute_following=True))
    assert [r.day for r in rs] == days(3)
    after = {bd.day: bd.plan_id for bd in store.batch_days()}
    assert all(after[d] != before[d] for d in days(3))
    assert rs[0].plan.funders.set_index("funder_id").loc["bank_a", "funder_amount"] == 0
    assert rs[1].state.month_used.get("bank_a", 0.0) == 0.0  # day 2 sees day 1's new plan
    assert fold(D1 + dt.timedelta(days=3), stored_deltas(store), D1).equals(
        fold(D1 + dt.timedelta(days=3), rebuilt_deltas(store), D1))


def test_without_a_funders_file_the_version_in_force_in_the_store_is_used(tmp_path):
    store = Store(make_store_url("sqlite", tmp_path))
    store.migrate()
    inbox = make_inbox(tmp_path / "in", days=2)
    (inbox / "funders.yaml").unlink()
    with pytest.raises(InputError, match="no funders version"):
        run_day(store, D1, inbox, tmp_path / "out")
    store.add_funders_version(month_terms(daily_max=0), label="bank_a closed", effective_date=D1)
    store.add_funders_version(month_terms(), label="bank_a open", effective_date=D1 + dt.timedelta(days=1))
    r1 = run_day(store, D1, inbox, tmp_path / "out")[0]
    r2 = run_day(store, D1 + dt.timedelta(days=1), inbox, tmp_path / "out")[0]
    a = lambda r: float(r.plan.funders.set_index("funder_id").loc["bank_a", "funder_amount"])
    assert a(r1) == 0 and a(r2) > 0


def test_originations_of_a_plan_made_through_the_service_when_the_inbox_has_none(tmp_path):
    """The treasury uploaded the day to the service; the batch plans it from the store."""
    from fastapi.testclient import TestClient

    from fundalloc.service import Settings, create_app
    url = make_store_url("sqlite", tmp_path)
    store = Store(url)
    store.migrate()
    _, key = store.create_key("planner")
    inbox = make_inbox(tmp_path / "in", days=1)
    uploaded = (inbox / D1.isoformat() / "originations.csv").read_bytes()
    (inbox / D1.isoformat() / "originations.csv").unlink()
    with TestClient(create_app(Settings.from_env({}, database_url=url))) as c:
        r = c.post("/v1/plans", files={"originations": ("day.csv", uploaded),
                                       "funders": ("f.yaml", (inbox / "funders.yaml").read_bytes())},
                   data={"plan_date": D1.isoformat()}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 201, r.text
    [res] = run_day(store, D1, inbox, tmp_path / "out")
    assert len(res.plan.allocations) == len(pd.read_csv(io.BytesIO(uploaded)))
    assert not list((tmp_path / "out").glob(".*"))
    with pytest.raises(InputError, match="no plan for that date"):
        run_day(store, D1 + dt.timedelta(days=1), inbox, tmp_path / "out")
