"""The service over a real socket: `fundalloc serve` in its own process, against SQLite and
PostgreSQL; a kill in the middle of a solve, and a restart."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest
from conftest import FIXTURES, STORES, make_store_url
from live import LiveServer, cli, new_key

SMALL = FIXTURES / "small"


@pytest.fixture(scope="module", params=STORES)
def live(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    url = make_store_url(request.param, tmp)
    server = LiveServer(url, tmp / "server.log").start()
    keys = {role: new_key(url, role) for role in ("viewer", "planner", "admin")}
    yield server, keys
    server.stop()


def H(key):
    return {"Authorization": f"Bearer {key}"}


def small_files(case="cap_binds"):
    d = SMALL / case
    return {"originations": ("originations.csv", (d / "originations.csv").read_bytes()),
            "funders": ("funders.yaml", (d / "funders.yaml").read_bytes())}


def test_keys_cli_prints_the_key_last_and_lists_without_secrets(live):
    server, keys = live
    out = cli(server.url, "keys", "list")
    assert out.returncode == 0 and "admin" in out.stdout and keys["admin"] not in out.stdout
    key_id = out.stdout.split()[0]
    assert cli(server.url, "keys", "revoke", "k_doesnotexist").returncode == 2
    assert key_id.startswith("k_")


def test_plan_and_read_it_back_over_the_socket(live):
    server, keys = live
    with httpx.Client(base_url=server.base, timeout=60) as c:
        assert c.get("/v1/plans").status_code == 401
        r = c.post("/v1/plans", files=small_files(), data={"new": "true"}, headers=H(keys["planner"]))
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        expected = json.loads((SMALL / "cap_binds" / "expected.json").read_text())
        assert r.json()["summary"]["objective"] == pytest.approx(expected["objective"], abs=0.01)
        got = c.get(f"/v1/plans/{pid}", headers=H(keys["viewer"])).json()
        assert got["summary"] == r.json()["summary"]
        csv = c.get(f"/v1/plans/{pid}/allocations", params={"format": "csv"}, headers=H(keys["viewer"]))
        assert csv.status_code == 200 and csv.text.splitlines()[0].startswith("loan_id,funder_id,funder_amount")
        w = c.post(f"/v1/plans/{pid}/what-if", json={"platform": {"cost_of_capital": 0.5}}, headers=H(keys["planner"]))
        assert w.status_code == 201 and w.json()["parent_id"] == pid
        assert w.json()["difference"]["summary"]["objective"]["change"] >= 0
        assert c.post("/v1/plans", files=small_files(), headers=H(keys["viewer"])).status_code == 403


def test_kill_during_a_solve_and_restart(tmp_path):
    """Kill -9 the server (and its solver processes) while a 100k-loan plan is solving; restart it.
    Every stored plan is intact and the interrupted job is resumed to completion."""
    url = make_store_url("sqlite", tmp_path)
    server = LiveServer(url, tmp_path / "server.log").start()
    planner = new_key(url, "planner")
    d = FIXTURES / "day100k"
    big = {"originations": ("originations.parquet", (d / "originations.parquet").read_bytes()),
           "funders": ("funders.yaml", (d / "funders.yaml").read_bytes()),
           "portfolio": ("portfolio.csv", (d / "portfolio.csv").read_bytes()),
           "exposures": ("exposures.csv", (d / "exposures.csv").read_bytes())}
    try:
        with httpx.Client(base_url=server.base, timeout=120) as c:
            before = c.post("/v1/plans", files=small_files(), headers=H(planner)).json()
            snapshot = {
                "plan": c.get(f"/v1/plans/{before['id']}", headers=H(planner)).json(),
                "alloc": hashlib.sha256(c.get(f"/v1/plans/{before['id']}/allocations", params={"format": "csv"},
                                              headers=H(planner)).content).hexdigest(),
            }
            r = c.post("/v1/plans", files=big, headers=H(planner))
            assert r.status_code == 202, r.text
            job = r.json()["id"]
            t0 = time.monotonic()
            while c.get(f"/v1/plans/{job}", headers=H(planner)).json()["status"] != "running":
                assert time.monotonic() - t0 < 60, "the job never started"
                time.sleep(0.1)
            time.sleep(1.0)  # well inside the solve
        server.kill()

        server = LiveServer(url, tmp_path / "server.log").start()
        with httpx.Client(base_url=server.base, timeout=120) as c:
            t0 = time.monotonic()
            while True:
                state = c.get(f"/v1/plans/{job}", headers=H(planner)).json()
                if state["status"] in ("succeeded", "failed"):
                    break
                assert state["status"] in ("queued", "running")
                assert time.monotonic() - t0 < 240, "the interrupted job was left unfinished"
                time.sleep(0.5)
            assert state["status"] == "succeeded", state
            assert state["attempts"] == 2 and state["summary"]["loan_count"] == 100_000
            assert c.get(f"/v1/plans/{before['id']}", headers=H(planner)).json() == snapshot["plan"]
            alloc = c.get(f"/v1/plans/{before['id']}/allocations", params={"format": "csv"}, headers=H(planner))
            assert hashlib.sha256(alloc.content).hexdigest() == snapshot["alloc"]
            page = c.get(f"/v1/plans/{job}/allocations", params={"limit": 5}, headers=H(planner)).json()
            assert page["total"] == 100_000
    finally:
        server.stop()
