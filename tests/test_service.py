"""The HTTP service, in-process (FastAPI's TestClient), against SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import FIXTURES, STORES, make_store_url, simple_loans, simple_terms
from fastapi.testclient import TestClient

import fundalloc as fa
from fundalloc.service import Settings, create_app
from fundalloc.store import Store
from fundalloc.store.models import Blob, PlanRecord

SMALL = FIXTURES / "small"


@pytest.fixture(scope="module", params=STORES)
def svc(request, tmp_path_factory):
    url = make_store_url(request.param, tmp_path_factory.mktemp("svc"))
    store = Store(url)
    store.migrate()
    keys = {role: store.create_key(role, f"test {role}")[1] for role in ("viewer", "planner", "admin")}
    app = create_app(Settings.from_env({}, database_url=url, sync_wait_seconds=120))
    with TestClient(app) as client:
        yield client, keys, store


def H(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def files_of(case: str, **extra) -> dict:
    d = SMALL / case
    out = {"originations": ("originations.csv", (d / "originations.csv").read_bytes()),
           "funders": ("funders.yaml", (d / "funders.yaml").read_bytes())}
    for name in ("portfolio", "exposures"):
        if (d / f"{name}.csv").exists():
            out[name] = (f"{name}.csv", (d / f"{name}.csv").read_bytes())
    out.update(extra)
    return out


def counts(store: Store) -> tuple[int, int]:
    from sqlalchemy import func, select
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(PlanRecord)), s.scalar(select(func.count()).select_from(Blob))


def post_plan(client, key, files, **form):
    data = {k: (json.dumps(v) if isinstance(v, bool) else str(v)) for k, v in form.items()}
    return client.post("/v1/plans", files=files, data=data, headers=H(key))


def wait_done(client, key, plan_id, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        body = client.get(f"/v1/plans/{plan_id}", headers=H(key)).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {plan_id} did not finish in {timeout}s")


# ------------------------------------------------------------------------------------------ keys
def test_every_v1_route_needs_a_key(svc):
    client, keys, _ = svc
    for method, path in [("get", "/v1/plans"), ("get", "/v1/plans/x"), ("get", "/v1/funders"),
                         ("get", "/v1/keys"), ("post", "/v1/plans"), ("get", "/v1/audit")]:
        r = getattr(client, method)(path)
        assert r.status_code == 401, (method, path)
        assert r.headers["www-authenticate"] == "Bearer"
        r = getattr(client, method)(path, headers=H("fa_wrong_key"))
        assert r.status_code == 401
        assert "Traceback" not in r.text
    assert client.get("/healthz").json()["status"] == "ok"


def test_roles(svc):
    client, keys, _ = svc
    assert client.get("/v1/plans", headers=H(keys["viewer"])).status_code == 200
    r = post_plan(client, keys["viewer"], files_of("cap_binds"))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert client.get("/v1/keys", headers=H(keys["planner"])).status_code == 403
    assert client.post("/v1/funders", json={"document": {}}, headers=H(keys["planner"])).status_code == 403
    assert client.get("/v1/keys", headers=H(keys["admin"])).status_code == 200


def test_revoked_key_stops_working(svc):
    client, keys, _ = svc
    r = client.post("/v1/keys", json={"role": "viewer", "label": "temp"}, headers=H(keys["admin"]))
    assert r.status_code == 201
    new = r.json()
    assert client.get("/v1/plans", headers=H(new["secret"])).status_code == 200
    assert client.delete(f"/v1/keys/{new['id']}", headers=H(keys["admin"])).status_code == 204
    assert client.get("/v1/plans", headers=H(new["secret"])).status_code == 401
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=H(keys["admin"])).json()}
    assert listed[new["id"]]["revoked_at"] is not None and listed[new["id"]]["secret"] is None


# ------------------------------------------------------------------------------------------ plans
@pytest.mark.parametrize("case", ["cap_binds", "obligor_limit", "soft_minimum"])
def test_plan_matches_the_known_optimum(svc, case):
    client, keys, _ = svc
    r = post_plan(client, keys["planner"], files_of(case), new=True)
    assert r.status_code == 201, r.text
    body = r.json()
    expected = json.loads((SMALL / case / "expected.json").read_text())
    assert body["status"] == "succeeded"
    assert body["summary"]["objective"] == pytest.approx(expected["objective"], abs=0.01)
    assert r.headers["location"] == f"/v1/plans/{body['id']}"
    alloc = client.get(f"/v1/plans/{body['id']}/allocations", headers=H(keys["viewer"])).json()
    assert alloc["total"] == len(pd.read_csv(SMALL / case / "originations.csv"))
    assert sum(a["cost"] for a in alloc["items"]) == pytest.approx(body["summary"]["funding_cost"], abs=0.01)


def test_same_inputs_return_the_existing_plan(svc):
    client, keys, _ = svc
    first = post_plan(client, keys["planner"], files_of("province_cap"))
    assert first.status_code in (200, 201)
    again = post_plan(client, keys["planner"], files_of("province_cap"))
    assert again.status_code == 200 and again.json()["existing"] is True
    assert again.json()["id"] == first.json()["id"]
    fresh = post_plan(client, keys["planner"], files_of("province_cap"), new=True)
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]
    assert fresh.json()["inputs_digest"] == first.json()["inputs_digest"]


def test_large_plans_answer_202_and_a_job_to_poll(svc):
    client, keys, _ = svc
    r = post_plan(client, keys["planner"], files_of("score_floor"), new=True, wait=False)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running", "succeeded") and job["job"]["poll"] == f"/v1/plans/{job['id']}"
    done = wait_done(client, keys["viewer"], job["id"])
    expected = json.loads((SMALL / "score_floor" / "expected.json").read_text())
    assert done["status"] == "succeeded" and done["summary"]["objective"] == pytest.approx(expected["objective"], abs=0.01)


def test_allocations_pages_filters_and_downloads(svc, tmp_path):
    client, keys, _ = svc
    loans = pd.DataFrame({"loan_id": [f"L{i:03d}" for i in range(40)], "principal": [1000.0 + 10 * i for i in range(40)],
                          "tenor_months": 6, "apr": 0.2, "risk_grade": ["A", "B"] * 20})
    terms = simple_terms()
    terms["funders"][0]["daily_max"] = 15000
    files = {"originations": ("day.parquet", loans.to_parquet(index=False)),
             "funders": ("funders.yaml", yaml.safe_dump(terms).encode())}
    r = post_plan(client, keys["planner"], files, new=True)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    get = lambda q: client.get(f"/v1/plans/{pid}/allocations{q}", headers=H(keys["viewer"]))
    pages = [get(f"?limit=15&offset={o}").json() for o in (0, 15, 30)]
    ids = [a["loan_id"] for p in pages for a in p["items"]]
    assert pages[0]["total"] == 40 and sorted(ids) == sorted(loans["loan_id"]) and len(ids) == 40
    bank = get("?route=bank_a&limit=100").json()
    assert bank["total"] == sum(1 for p in pages for a in p["items"] if a["funder_id"] == "bank_a") > 0
    assert all(a["funder_id"] == "bank_a" for a in bank["items"])
    csv = get("?format=csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(pd.read_csv(io.StringIO(csv.text))) == 40
    pq = get("?format=parquet&route=bank_a")
    assert len(pd.read_parquet(io.BytesIO(pq.content))) == bank["total"]
    routes = client.get(f"/v1/plans/{pid}/routes", headers=H(keys["viewer"])).json()["items"]
    assert sum(x["loan_count"] for x in routes) + r.json()["summary"]["unfunded_count"] == 40
    cons = client.get(f"/v1/plans/{pid}/constraints?binding=true", headers=H(keys["viewer"])).json()
    assert any(c["constraint"] == "daily_max:bank_a" and c["shadow_price"] < 0 for c in cons["items"])
    assert get("?format=xml").status_code == 422
    assert client.get("/v1/plans/p_nope/allocations", headers=H(keys["viewer"])).status_code == 404


def test_list_plans_by_date(svc):
    client, keys, _ = svc
    r = post_plan(client, keys["planner"], files_of("platform_capital"), new=True, plan_date="2026-03-14")
    assert r.status_code == 201
    listed = client.get("/v1/plans?date=2026-03-14", headers=H(keys["viewer"])).json()
    assert [p["id"] for p in listed["items"]] == [r.json()["id"]] and listed["total"] == 1
    assert client.get("/v1/plans?date=2026-03-15", headers=H(keys["viewer"])).json()["total"] == 0
    assert client.get("/v1/plans?date=yesterday", headers=H(keys["viewer"])).status_code == 422


# ------------------------------------------------------------------------------------------ what-if
def test_what_if_returns_the_plan_its_difference_and_lineage(svc):
    client, keys, _ = svc
    base = post_plan(client, keys["planner"], files_of("cap_binds"), new=True).json()
    r = client.post(f"/v1/plans/{base['id']}/what-if", headers=H(keys["planner"]),
                    json={"funders": {"bank_a": {"daily_max": 0}}, "label": "bank_a closed"})
    assert r.status_code == 201, r.text
    w = r.json()
    assert w["kind"] == "what-if" and w["parent_id"] == base["id"]
    assert w["overrides"] == {"funders": {"bank_a": {"daily_max": 0}}, "label": "bank_a closed"}
    # the same scenario through the library
    day = fa.load_day(SMALL / "cap_binds" / "originations.csv", SMALL / "cap_binds" / "funders.yaml")
    lib = fa.plan(fa.derive(day, funders={"bank_a": {"daily_max": 0}}))
    assert w["summary"]["objective"] == pytest.approx(lib.objective, abs=0.01)
    diff = w["difference"]
    assert diff["summary"]["objective"]["change"] == pytest.approx(lib.objective - base["summary"]["objective"],
                                                                   abs=0.01)
    assert diff["moved_count"] >= 1 and all(m["from"] == "bank_a" for m in diff["moved"])
    assert {x["funder_id"] for x in diff["routes"]} >= {"bank_a"}


def test_what_if_scale_and_remove(svc):
    client, keys, _ = svc
    base = post_plan(client, keys["planner"], files_of("cap_binds"), new=True).json()
    r = client.post(f"/v1/plans/{base['id']}/what-if", headers=H(keys["planner"]),
                    json={"remove": ["bank_a"], "scale": 2.0})
    assert r.status_code == 201, r.text
    s = r.json()["summary"]
    assert s["principal"] == pytest.approx(2 * base["summary"]["principal"])
    routes = client.get(f"/v1/plans/{r.json()['id']}/routes", headers=H(keys["viewer"])).json()["items"]
    assert "bank_a" not in {x["funder_id"] for x in routes}


def test_bad_what_if_is_422_and_stores_nothing(svc):
    client, keys, store = svc
    base = post_plan(client, keys["planner"], files_of("cap_binds")).json()
    before = counts(store)
    for body, where in [({"funders": {"nobody": {"daily_max": 1}}}, "funders[nobody]"),
                        ({"funders": {"bank_a": {"daly_max": 1}}}, "daly_max"),
                        ({"funders": {"bank_a": {"eligibility": {"no_such_column": [1]}}}}, "no_such_column"),
                        ({"remove": ["ghost"]}, "remove[ghost]"),
                        ({"scale": -1}, "scale"),
                        ({"surprise": 1}, "surprise")]:
        r = client.post(f"/v1/plans/{base['id']}/what-if", json=body, headers=H(keys["planner"]))
        assert r.status_code == 422, (body, r.text)
        assert any(where in p["where"] or where in p["message"] for p in r.json()["problems"]), (body, r.json())
    assert counts(store) == before
    assert client.post("/v1/plans/p_missing/what-if", json={}, headers=H(keys["planner"])).status_code == 404


# ------------------------------------------------------------------------------------------ bad input
def test_bad_uploads_are_422_with_a_pointer_and_store_nothing(svc):
    client, keys, store = svc
    funders = (SMALL / "cap_binds" / "funders.yaml").read_bytes()
    good = (SMALL / "cap_binds" / "originations.csv").read_bytes()
    before = counts(store)
    cases = [
        ({"originations": ("o.csv", b"loan_id,principal,tenor_months,apr\nL1,-5,12,0.1\nL2,100,12,0.1\n"),
          "funders": ("f.yaml", funders)}, "row 1"),
        ({"originations": ("o.csv", b"\x00\x01garbage"), "funders": ("f.yaml", funders)}, "originations (o.csv)"),
        ({"originations": ("o.csv", good), "funders": ("f.yaml", funders.replace(b"daily_max", b"daly_max"))},
         "daly_max"),
        ({"originations": ("o.csv", good),
          "funders": ("f.yaml", yaml.safe_dump({**simple_terms(), "funders": [
              {**simple_terms()["funders"][0], "eligibility": {"no_such_column": ["x"]}}]}).encode())},
         "no_such_column"),
        ({"originations": ("o.txt", good), "funders": ("f.yaml", funders)}, ".csv or .parquet"),
        ({"originations": ("o.csv", good)}, "funders"),
        ({"originations": ("o.csv", good), "funders": ("f.yaml", b"platform: [unclosed")}, "f.yaml"),
    ]
    for files, needle in cases:
        r = post_plan(client, keys["planner"], files, new=True)
        assert r.status_code == 422, (needle, r.status_code, r.text)
        text = json.dumps(r.json())
        assert needle in text, (needle, text)
        assert "Traceback" not in text
    assert counts(store) == before


def test_size_and_row_limits_answer_413(svc, tmp_path):
    # a server of its own: one store takes one server (the module's holds its store's lock)
    url = make_store_url("sqlite" if svc[2].url.startswith("sqlite") else "postgresql", tmp_path)
    store = Store(url)
    store.migrate()
    planner = store.create_key("planner")[1]
    app = create_app(Settings.from_env({}, database_url=url, max_rows=2, max_upload_bytes=5000))
    with TestClient(app) as small:
        r = post_plan(small, planner, files_of("cap_binds"), new=True)  # 3 loans > 2
        assert r.status_code == 413 and "FUNDALLOC_MAX_ROWS" in r.json()["message"]
        big = {"originations": ("o.csv", b"x" * 6000), "funders": ("f.yaml", b"{}")}
        r = post_plan(small, planner, big)
        assert r.status_code == 413 and r.json()["error"] == "too_large"


# ------------------------------------------------------------------------------------------ funders versions
def test_funders_versions_and_plans_from_a_version(svc):
    client, keys, _ = svc
    doc = yaml.safe_load((SMALL / "cap_binds" / "funders.yaml").read_text())
    r = client.post("/v1/funders", json={"label": "v1", "effective_date": "2026-11-01", "document": doc},
                    headers=H(keys["admin"]))
    assert r.status_code == 201, r.text
    vid = r.json()["id"]
    assert client.get(f"/v1/funders/{vid}", headers=H(keys["viewer"])).json()["document"]["platform"]["id"]
    assert vid in [v["id"] for v in client.get("/v1/funders", headers=H(keys["viewer"])).json()]
    files = {"originations": ("originations.csv", (SMALL / "cap_binds" / "originations.csv").read_bytes())}
    p = post_plan(client, keys["planner"], files, funders_version=vid, new=True)
    assert p.status_code == 201, p.text
    assert p.json()["funders_version"] == vid
    expected = json.loads((SMALL / "cap_binds" / "expected.json").read_text())
    assert p.json()["summary"]["objective"] == pytest.approx(expected["objective"], abs=0.01)
    bad = client.post("/v1/funders", json={"document": {**doc, "platform": {**doc["platform"], "max_bank_share": 2}}},
                      headers=H(keys["admin"]))
    assert bad.status_code == 422 and "max_bank_share" in json.dumps(bad.json())
    assert post_plan(client, keys["planner"], files, funders_version=99999).status_code == 422


# ------------------------------------------------------------------------------------------ audit, concurrency
def test_audit_log_records_who_asked_for_what(svc):
    client, keys, _ = svc
    client.get("/v1/plans", headers=H(keys["viewer"]))
    client.get("/v1/plans")  # anonymous, refused
    time.sleep(1.0)  # the audit log is written behind the request
    entries = client.get("/v1/audit?limit=1000", headers=H(keys["admin"])).json()
    viewer_id = [k for k in client.get("/v1/keys", headers=H(keys["admin"])).json() if k["label"] == "test viewer"][0]["id"]
    assert any(e["actor"] == viewer_id and e["action"] == "GET /v1/plans" and e["outcome"] == "200" for e in entries)
    assert any(e["actor"] == "anonymous" and e["outcome"] == "401" for e in entries)
    assert any(e["action"] == "POST /v1/plans" and e["detail"] and "plan_id" in e["detail"] for e in entries)


def test_concurrent_plan_requests_do_not_corrupt_each_other(svc, tmp_path):
    client, keys, _ = svc
    days = []
    for k in range(4):
        loans = simple_loans().assign(principal=simple_loans()["principal"] * (1 + k))
        terms = simple_terms()
        days.append((loans, terms))
    expected = [fa.plan(l, t).objective for l, t in days]

    def one(k):
        loans, terms = days[k]
        files = {"originations": (f"d{k}.csv", loans.to_csv(index=False).encode()),
                 "funders": ("f.yaml", yaml.safe_dump(terms).encode())}
        r = post_plan(client, keys["planner"], files, new=True, wait=False)
        assert r.status_code in (201, 202), r.text
        return wait_done(client, keys["viewer"], r.json()["id"])

    with cf.ThreadPoolExecutor(4) as ex:
        done = list(ex.map(one, range(4)))
    for k, d in enumerate(done):
        assert d["status"] == "succeeded"
        assert d["summary"]["objective"] == pytest.approx(expected[k], abs=0.01)
        assert d["loan_count"] == 3


def test_openapi_describes_every_route_with_examples(svc):
    client, _, _ = svc
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for p in ["/healthz", "/v1/plans", "/v1/plans/{plan_id}", "/v1/plans/{plan_id}/allocations",
              "/v1/plans/{plan_id}/constraints", "/v1/plans/{plan_id}/routes", "/v1/plans/{plan_id}/what-if",
              "/v1/funders", "/v1/keys", "/v1/audit"]:
        assert p in paths
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert doc["components"]["schemas"]["WhatIfIn"].get("examples")


def test_interrupted_jobs_are_resumed_or_failed_at_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'fa.db'}"
    store = Store(url)
    store.migrate()
    _, planner = store.create_key("planner")
    app = create_app(Settings.from_env({}, database_url=url, max_attempts=2))
    with TestClient(app) as client:
        r = post_plan(client, planner, files_of("cap_binds"))
        pid = r.json()["id"]
    # fake two interruptions: one job that was running once, one that already ran twice
    from sqlalchemy import update
    with store.session() as s, s.begin():
        src = s.get(PlanRecord, pid)
        clones = []
        for attempts in (1, 2):
            c = PlanRecord(**{k: getattr(src, k) for k in PlanRecord.__table__.columns.keys()})
            c.id, c.status, c.attempts, c.summary, c.plan_status = f"p_int{attempts}", "running", attempts, None, None
            clones.append(c)
        s.add_all(clones)
    with TestClient(create_app(Settings.from_env({}, database_url=url, max_attempts=2))) as client:
        resumed = wait_done(client, planner, "p_int1")
        failed = client.get("/v1/plans/p_int2", headers=H(planner)).json()
    assert resumed["status"] == "succeeded" and resumed["attempts"] == 2
    assert failed["status"] == "failed" and "interrupted 2 times" in failed["error"]["reason"]


def test_a_funders_version_out_of_range_is_422_not_a_server_error(svc):
    client, keys, store = svc
    before = counts(store)
    for v in ("-646024326530249991687113801728", "0", str(2 ** 64)):
        r = post_plan(client, keys["planner"], {"originations": ("originations.csv", b"")}, funders_version=v)
        assert r.status_code == 422, (v, r.text)
    assert counts(store) == before
