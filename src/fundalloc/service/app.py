"""The treasury service: plans over HTTP, on the store, behind keys.

A thin shell: routes parse, call the library and the store, and format. Solves never run in a
request handler: they go to the job runner's solver processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import queue
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Callable

import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, File, Form, Path as PathParam, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import InputError, Problem
from ..store import KeyInfo, PlanRecord, Store, StoreError, sha256
from .jobs import JobRunner, QueueFull
from .schemas import (AuditOut, ErrorOut, FundersIn, FundersOut, JobOut, KeyIn, KeyOut, PlanList, PlanOut,
                      TablePage, WhatIfIn)
from .settings import Settings

log = logging.getLogger("fundalloc.service")

ORIGINATION_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
FUNDERS_FORMATS = {".yaml", ".yml", ".json"}


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, problems: list[Problem] | tuple[Problem, ...] = (),
                 headers: dict[str, str] | None = None):
        self.status, self.error, self.message, self.problems, self.headers = status, error, message, problems, headers


def _problems_json(problems) -> list[dict[str, str]]:
    return [{"source": p.source, "where": p.where, "message": p.message} for p in problems]


def _error(status: int, error: str, message: str, problems=(), headers=None) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, "problems": _problems_json(problems)},
                        status_code=status, headers=headers)


COMMON = {401: {"model": ErrorOut, "description": "missing or unknown key"},
          403: {"model": ErrorOut, "description": "the key's role may not do this"}}
NOT_FOUND = {404: {"model": ErrorOut, "description": "no such plan"}}


# ------------------------------------------------------------------------------------------ helpers
class Lru:
    """A small thread-safe least-recently-used cache of values that never change once cached."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any], keep: Callable[[Any], bool] = lambda v: True) -> Any:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        value = load()
        if keep(value):
            with self._lock:
                self._d[key] = value
                while len(self._d) > self.size:
                    self._d.popitem(last=False)
        return value


class TableCache(Lru):
    """Decoded tables of finished plans (immutable once stored)."""

    def __init__(self, store: Store, size: int = 16):
        super().__init__(size)
        self.store = store

    def get(self, plan_id: str, name: str) -> pd.DataFrame:  # type: ignore[override]
        return super().get((plan_id, name), lambda: self.store.plan_table(plan_id, name))


class KeyCache:
    """Authenticated keys for a few seconds, so that a burst of reads does not query the store for
    every request. A key revoked through this service stops at once; one revoked from the CLI
    (another process) stops within ``ttl`` seconds."""

    def __init__(self, store: Store, ttl: float = 2.0):
        self.store, self.ttl = store, ttl
        self._d: dict[str, tuple[float, KeyInfo | None]] = {}
        self._lock = threading.Lock()

    def get(self, secret: str) -> KeyInfo | None:
        import time
        now = time.monotonic()
        with self._lock:
            hit = self._d.get(secret)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        info = self.store.authenticate(secret)
        with self._lock:
            if len(self._d) > 10_000:
                self._d.clear()
            self._d[secret] = (now, info)
        return info

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


class RecordCache(Lru):
    """Plan records that can no longer change (succeeded or failed)."""

    def __init__(self, store: Store, size: int = 1024):
        super().__init__(size)
        self.store = store

    def get(self, plan_id: str) -> PlanRecord | None:  # type: ignore[override]
        return super().get(plan_id, lambda: self.store.plan(plan_id),
                           keep=lambda rec: rec is not None and rec.status in ("succeeded", "failed"))


class AuditWriter:
    """Audit entries written behind the request, in batches, so that reads stay fast.

    Requests without a valid key cannot grow the table: per window of :attr:`window` seconds the
    first refused request of each kind (method, route, outcome) is written at once and the rest of
    the window's are counted into one row at its end (``detail.count``, a few sample targets).
    """

    window = 60.0
    max_kinds = 256  # distinct anonymous kinds per window before they share one row

    def __init__(self, store: Store):
        self.store = store
        self.q: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._anon: dict[tuple[str, str], dict[str, Any]] = {}
        self._window_start = time.monotonic()
        self._t = threading.Thread(target=self._run, name="fundalloc-audit", daemon=True)
        self._t.start()

    def add(self, **entry: Any) -> None:
        if entry.get("actor") != "anonymous":
            self.q.put(entry)
            return
        with self._lock:
            key = (entry["action"], entry["outcome"])
            if key not in self._anon and len(self._anon) >= self.max_kinds:
                key = ("(other)", "(other)")
            agg = self._anon.get(key)
            if agg is None:  # first of its kind in this window: written now
                self._anon[key] = {"entry": entry, "count": 0, "targets": []}
                self.q.put(entry)
                return
            agg["count"] += 1
            if len(agg["targets"]) < 5 and entry["target"] not in agg["targets"]:
                agg["targets"].append(entry["target"])

    def _take_window(self, force: bool = False) -> list[dict[str, Any]]:
        """The aggregated anonymous rows of a finished window (or of the current one when ``force``)."""
        with self._lock:
            if not force and time.monotonic() - self._window_start < self.window:
                return []
            done, self._anon = self._anon, {}
            self._window_start = time.monotonic()
        rows = []
        for (action, outcome), agg in done.items():
            if agg["count"]:
                rows.append({**agg["entry"], "action": action, "outcome": outcome,
                             "target": agg["targets"][0] if agg["targets"] else agg["entry"]["target"],
                             "detail": {"count": agg["count"], "sample_targets": agg["targets"],
                                        "aggregated_seconds": self.window}})
        return rows

    def _run(self) -> None:
        from ..store.models import AuditEntry
        while True:
            try:
                item = self.q.get(timeout=self.window / 4)
            except queue.Empty:
                rows = self._take_window()
                if rows:
                    self._write(rows, AuditEntry)
                continue
            if item is None:
                self._write(self._take_window(force=True), AuditEntry)
                return
            batch = [item]
            while len(batch) < 500:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._write(batch + self._take_window(force=True), AuditEntry)
                    return
                batch.append(nxt)
            self._write(batch + self._take_window(), AuditEntry)

    def _write(self, batch, AuditEntry) -> None:
        if not batch:
            return
        try:
            with self.store.session() as s, s.begin():
                s.add_all([AuditEntry(**e) for e in batch])
        except Exception:  # the audit log must not take the service down; the loss is logged
            log.exception("could not write %d audit entries", len(batch))

    def close(self) -> None:
        self.q.put(None)
        self._t.join(timeout=10)


def _plan_out(rec: PlanRecord, existing: bool = False) -> PlanOut:
    job = None
    if rec.status in ("queued", "running"):
        job = JobOut(id=rec.id, status=rec.status, poll=f"/v1/plans/{rec.id}")
    return PlanOut(id=rec.id, kind=rec.kind, status=rec.status, plan_status=rec.plan_status, plan_date=rec.plan_date,
                   created_at=rec.created_at, started_at=rec.started_at, finished_at=rec.finished_at,
                   created_by=rec.created_by, inputs_digest=rec.inputs_digest,
                   funders_version=rec.funders_version_id, parent_id=rec.parent_id, overrides=rec.overrides,
                   loan_count=rec.loan_count, objective=rec.objective, summary=rec.summary,
                   difference=rec.difference, error=rec.error, attempts=rec.attempts, existing=existing, job=job)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records", double_precision=15))


def _plain_file_name(name: str) -> bool:
    return (isinstance(name, str) and len(name.encode("utf-8", "surrogatepass")) <= 255
            and not any(ord(c) < 32 or ord(c) == 127 for c in name))


def _suffix(upload: UploadFile | None) -> str:
    return Path(upload.filename or "").suffix.lower() if upload is not None else ""


# ------------------------------------------------------------------------------------------ app
def create_app(settings: Settings | None = None) -> FastAPI:
    """The service. Settings come from the environment unless given; nothing is opened until start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        cfg = settings or Settings.from_env()
        store = Store(cfg.database_url)
        store.migrate()
        # one server per store: a second one would resume (and solve again) the first one's jobs
        lock = store.lock("serve")
        runner = JobRunner(cfg.database_url, cfg.workers, cfg.queue_limit)
        app.state.settings, app.state.store, app.state.runner = cfg, store, runner
        app.state.tables = TableCache(store)
        app.state.records = RecordCache(store)
        app.state.keys = KeyCache(store)
        app.state.audit = AuditWriter(store)
        _resume(store, runner, cfg)
        if not store.keys():
            log.warning("no API keys yet: create the first one with 'fundalloc keys create --role admin'")
        try:
            yield
        finally:
            handed_back = runner.shutdown()
            for plan_id in handed_back:
                store.release_job(plan_id)
            if handed_back:
                log.warning("stopping: %d running job(s) handed back, resumed at the next start: %s",
                            len(handed_back), ", ".join(handed_back))
            app.state.audit.close()
            lock.release()
            store.dispose()

    app = FastAPI(
        title="fundalloc",
        version=__version__,
        summary="Multi-lender funding allocation: daily plans, what-ifs and shadow prices over HTTP.",
        description=("Every `/v1` route needs `Authorization: Bearer <key>`. Keys carry a role: `viewer` reads, "
                     "`planner` also creates plans and what-ifs, `admin` also manages keys and funders versions. "
                     "Create keys with `fundalloc keys create --role ROLE`."),
        lifespan=lifespan,
    )
    _handlers(app)
    _middleware(app)

    @app.get("/healthz", tags=["health"], responses={503: {"model": ErrorOut}})
    def healthz(request: Request) -> dict[str, Any]:
        """Liveness and the store's reachability (no key needed)."""
        try:
            request.app.state.store.ping()
        except Exception:
            raise ApiError(503, "store_unavailable", "the store cannot be reached") from None
        return {"status": "ok", "version": __version__, "jobs_in_flight": request.app.state.runner.inflight}

    app.include_router(_router(), prefix="/v1")
    return app


def _resume(store: Store, runner: JobRunner, cfg: Settings) -> None:
    """Jobs left queued or running by a previous process: run again, or fail once tried too often."""
    for rec in store.unfinished():
        if rec.attempts >= cfg.max_attempts:
            store.fail(rec.id, f"interrupted {rec.attempts} times (server stopped during the solve); not retried")
            log.warning("job %s marked failed after %d interrupted attempts", rec.id, rec.attempts)
        else:
            log.warning("resuming job %s (%s, attempt %d)", rec.id, rec.status, rec.attempts + 1)
            runner.submit(rec.id, force=True)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_req: Request, exc: ApiError):
        return _error(exc.status, exc.error, exc.message, exc.problems, exc.headers)

    @app.exception_handler(InputError)
    async def input_error(_req: Request, exc: InputError):
        return _error(422, "invalid_input", str(exc).split(":\n")[0], exc.problems)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_req: Request, exc: RequestValidationError):
        problems = [Problem("request", ".".join(str(x) for x in e.get("loc", ())), e.get("msg", "invalid"))
                    for e in exc.errors()]
        return _error(422, "invalid_request", "the request does not match the API", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, "http_error", str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(_req: Request, exc: Exception):
        log.exception("internal error")
        return _error(500, "internal", "internal error; the service log has the details")


def _middleware(app: FastAPI) -> None:
    @app.middleware("http")
    async def limits_and_audit(request: Request, call_next: Callable):
        is_v1 = request.url.path.startswith("/v1/")
        if is_v1 and request.method in ("POST", "PUT", "PATCH"):
            raw = request.headers.get("content-length")
            limit = request.app.state.settings.max_upload_bytes
            if raw is not None and (not raw.isdigit() or int(raw) > limit):
                return _error(413, "too_large", f"request body over the limit of {limit:,} bytes "
                                                "(FUNDALLOC_MAX_UPLOAD_MB)")
        response = await call_next(request)
        _security_headers(request, response)
        if is_v1:
            key: KeyInfo | None = getattr(request.state, "key", None)
            route = request.scope.get("route")
            path = _route_path(route, request) if (key is not None or route is not None) else "(no route)"
            request.app.state.audit.add(
                actor=key.id if key else "anonymous", role=key.role if key else "",
                action=f"{request.method} {path}"[:64],
                target=request.url.path[:200], outcome=str(response.status_code),
                detail=getattr(request.state, "audit_detail", None))
        return response


#: Content-Security-Policy of the service's own pages: nothing but the page and same-origin calls.
PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " \
           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
#: The interactive API docs load Swagger UI's script and style from its CDN.
DOCS_CSP = "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; " \
           "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; " \
           "connect-src 'self'; frame-ancestors 'none'"


def _security_headers(request: Request, response: Any) -> None:
    """Headers on every answer: no MIME sniffing, no framing, no referrer; API answers (key
    secrets among them) are never cached; HTML gets a Content-Security-Policy."""
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    if request.url.path.startswith("/v1/") or request.url.path == "/healthz":
        h["Cache-Control"] = "no-store"
    if h.get("content-type", "").startswith("text/html"):
        h.setdefault("Content-Security-Policy", DOCS_CSP if request.url.path.startswith(("/docs", "/redoc"))
                     else PAGE_CSP)


def _route_path(route: Any, request: Request) -> str:
    path = getattr(route, "path", None)
    if path is None:
        return request.url.path
    return path if path.startswith("/v1") else "/v1" + path


PlanId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,32}$", examples=["p_3f2a9c1b0d4e5f60"])]
KeyId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,32}$", examples=["k_1a2b3c4d5e6f"])]
VersionId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]

bearer = HTTPBearer(auto_error=False, description="an API key from 'fundalloc keys create'")


def _auth(role: str):
    def dep(request: Request,
            cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> KeyInfo:
        challenge = {"WWW-Authenticate": "Bearer"}
        if cred is None or not cred.credentials:
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <key>'", headers=challenge)
        key = request.app.state.keys.get(cred.credentials)
        if key is None:
            raise ApiError(401, "unauthorized", "unknown or revoked key", headers=challenge)
        request.state.key = key
        if not key.may(role):
            raise ApiError(403, "forbidden", f"this needs the '{role}' role; the key has '{key.role}'")
        return key
    return dep


Viewer = Annotated[KeyInfo, Depends(_auth("viewer"))]
Planner = Annotated[KeyInfo, Depends(_auth("planner"))]
Admin = Annotated[KeyInfo, Depends(_auth("admin"))]


def _get_plan(request: Request, plan_id: str) -> PlanRecord:
    rec = request.app.state.records.get(plan_id)
    if rec is None:
        raise ApiError(404, "not_found", f"no plan '{plan_id}'")
    return rec


def _ready(request: Request, plan_id: str) -> PlanRecord:
    rec = _get_plan(request, plan_id)
    if rec.status != "succeeded":
        raise ApiError(409, "not_ready", f"plan '{plan_id}' is {rec.status}; its tables exist once it succeeded")
    return rec


# ------------------------------------------------------------------------------------------ plan creation
def _prepare_plan(store: Store, cfg: Settings, actor: str, uploads: dict[str, tuple[str, bytes] | None],
                  funders_version: int | None, plan_date: dt.date | None, new: bool) -> tuple[PlanRecord, bool]:
    """Validate the uploads (every problem at once), then store inputs and a queued job in one
    transaction; or return the existing plan of the same inputs."""
    from ..api import load_day
    from ..io import count_rows
    from ..terms import terms_from_dict

    problems: list[Problem] = []
    for name, up in uploads.items():
        if up is not None and not _plain_file_name(up[0]):
            raise InputError(Problem(name, "filename", "the upload's file name must be at most 255 bytes "
                                                       "of text without NUL or control characters"))
    orig = uploads["originations"]
    ext = Path(orig[0]).suffix.lower() if orig else ""
    if ext not in ORIGINATION_FORMATS:
        problems.append(Problem("originations", orig[0] if orig else "", "expected a .csv or .parquet file"))
    for name in ("portfolio", "exposures", "bids"):
        up = uploads.get(name)
        if up is not None and Path(up[0]).suffix.lower() not in ORIGINATION_FORMATS:
            problems.append(Problem(name, up[0], "expected a .csv or .parquet file"))
    fup = uploads["funders"]
    version = None
    if fup is not None and funders_version is not None:
        problems.append(Problem("funders", "", "send either a funders file or a funders_version, not both"))
    elif fup is None and funders_version is None:
        problems.append(Problem("funders", "", "send a funders file (YAML or JSON) or a funders_version"))
    elif fup is not None and Path(fup[0]).suffix.lower() not in FUNDERS_FORMATS:
        problems.append(Problem("funders", fup[0], "expected a .yaml, .yml or .json file"))
    elif funders_version is not None:
        version = store.funders_version(funders_version)
        if version is None:
            problems.append(Problem("funders_version", str(funders_version), "no such funders version"))
    if problems:
        raise InputError(problems)

    with tempfile.TemporaryDirectory(prefix="fundalloc-upload-") as tmp:
        paths: dict[str, Path | None] = {}
        shown: dict[str, str] = {}
        for name in ("originations", "portfolio", "exposures", "bids", "funders"):
            up = uploads.get(name)
            if up is None:
                paths[name] = None
                continue
            # on disk under a name of our own: the client's name only appears in messages
            fname = Path(up[0]).name or f"{name}.bin"
            paths[name] = Path(tmp) / f"{name}{Path(fname).suffix.lower()}"
            paths[name].write_bytes(up[1])
            shown[str(paths[name])] = f"{name} ({fname})"
            if name != "funders":  # rows counted from the file's metadata or a stream, before decoding
                try:
                    rows = count_rows(paths[name])
                except InputError:
                    continue  # the reader below reports what is wrong with the file, with its name
                if rows > cfg.max_rows:
                    raise ApiError(413, "too_many_rows", f"{name}: {rows:,} rows is over the limit of "
                                                         f"{cfg.max_rows:,} (FUNDALLOC_MAX_ROWS)")
        try:  # read, validate and compile: every input problem surfaces here, before anything is stored
            funders_in = paths["funders"] or terms_from_dict(version.document, f"funders_version {version.id}")
            day = load_day(paths["originations"], funders_in, paths["portfolio"], paths["exposures"], paths["bids"])
        except InputError as exc:
            raise InputError([Problem(shown.get(p.source, p.source), p.where, p.message) for p in exc.problems]) \
                from None
    terms, n_loans, digest = day.terms, len(day.loans), day.instance.digest
    del day
    if n_loans > cfg.max_rows:
        raise ApiError(413, "too_many_rows", f"{n_loans:,} loans is over the limit of {cfg.max_rows:,} "
                                             "(FUNDALLOC_MAX_ROWS)")
    if not new:
        existing = store.find_plan(digest)
        if existing is not None:
            return existing, True
    funders_json = json.dumps(terms.document(), sort_keys=True).encode()
    with store.session() as s, s.begin():
        rec = PlanRecord(
            id=store.new_plan_id(), kind="plan", status="queued", plan_date=plan_date, created_by=actor,
            inputs_digest=digest,
            originations_digest=store.put_blob(s, orig[1], "originations", orig[0]),
            originations_format=ORIGINATION_FORMATS[ext],
            funders_digest=store.put_blob(s, funders_json, "funders", "funders.json"),
            funders_version_id=version.id if version else None,
            loan_count=n_loans, options={"time_limit": cfg.solve_time_limit}, attempts=0)
        for name in ("portfolio", "exposures", "bids"):
            up = uploads.get(name)
            if up is not None:
                setattr(rec, f"{name}_digest", store.put_blob(s, up[1], name, up[0]))
                setattr(rec, f"{name}_format", ORIGINATION_FORMATS[Path(up[0]).suffix.lower()])
        s.add(rec)
    return rec, False


def _prepare_what_if(store: Store, cfg: Settings, actor: str, base: PlanRecord, body: WhatIfIn) -> PlanRecord:
    from ..io import table_columns
    from ..terms import load_terms
    from ..whatif import scenario_terms
    from .jobs import materialise

    with tempfile.TemporaryDirectory(prefix="fundalloc-whatif-") as tmp:
        paths = materialise(store, base, Path(tmp))
        terms = scenario_terms(load_terms(paths["funders"]), funders=body.funders, platform=body.platform,
                               remove=body.remove, add=body.add)
        missing = sorted(terms.columns() - set(table_columns(paths["originations"])))
    if missing:
        raise InputError(Problem("what-if", f"columns {missing}", "a rule names a column the base plan's "
                                                                    "originations do not have"))
    overrides = body.model_dump(exclude={"wait", "label"}, exclude_defaults=True)
    digest = sha256(json.dumps({"base": base.inputs_digest, "overrides": overrides}, sort_keys=True).encode())
    with store.session() as s, s.begin():
        rec = PlanRecord(
            id=store.new_plan_id(), kind="what-if", status="queued", plan_date=base.plan_date, created_by=actor,
            inputs_digest=digest, originations_digest=base.originations_digest,
            originations_format=base.originations_format, funders_digest=base.funders_digest,
            funders_version_id=base.funders_version_id, portfolio_digest=base.portfolio_digest,
            portfolio_format=base.portfolio_format, exposures_digest=base.exposures_digest,
            exposures_format=base.exposures_format, bids_digest=base.bids_digest, bids_format=base.bids_format,
            parent_id=base.id,
            overrides={**overrides, **({"label": body.label} if body.label else {})},
            loan_count=base.loan_count, options={"time_limit": cfg.solve_time_limit}, attempts=0)
        s.add(rec)
    return rec


async def _submit_and_answer(request: Request, rec: PlanRecord, wait: bool) -> JSONResponse:
    cfg: Settings = request.app.state.settings
    runner: JobRunner = request.app.state.runner
    try:
        fut = runner.submit(rec.id)
    except QueueFull as exc:
        await run_in_threadpool(request.app.state.store.fail, rec.id, f"not run: the solve queue was full ({exc})")
        raise ApiError(503, "busy", f"the solve queue is full ({exc}); retry later",
                       headers={"Retry-After": "10"}) from None
    if wait and rec.loan_count <= cfg.sync_max_loans:
        # asyncio.wait neither raises the job's exception (the runner records it on the job) nor
        # cancels the job when the wait times out
        await asyncio.wait([asyncio.wrap_future(fut)], timeout=cfg.sync_wait_seconds)
    rec = await run_in_threadpool(request.app.state.store.plan, rec.id)
    if rec.status == "succeeded":
        return JSONResponse(_plan_out(rec).model_dump(mode="json"), status_code=201,
                            headers={"Location": f"/v1/plans/{rec.id}"})
    if rec.status == "failed" and rec.error and rec.error.get("reason") == "invalid input":
        problems = [Problem(**p) for p in rec.error.get("problems", [])]
        return _error(422, "invalid_input", "invalid input", problems)
    return JSONResponse(_plan_out(rec).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/plans/{rec.id}"})


# ------------------------------------------------------------------------------------------ routes
def _router() -> APIRouter:
    r = APIRouter()

    @r.post("/plans", tags=["plans"], status_code=201, response_model=PlanOut,
            responses={**COMMON, 200: {"model": PlanOut, "description": "the existing plan of the same inputs"},
                       202: {"model": PlanOut, "description": "accepted: poll the job"},
                       413: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}})
    async def create_plan(
        request: Request, key: Planner,
        originations: Annotated[UploadFile, File(description="originations, .csv or .parquet")],
        funders: Annotated[UploadFile | None, File(description="funders' terms, .yaml or .json")] = None,
        portfolio: Annotated[UploadFile | None, File(description="portfolio positions, .csv or .parquet")] = None,
        exposures: Annotated[UploadFile | None, File(description="obligor exposures, .csv or .parquet")] = None,
        bids: Annotated[UploadFile | None, File(description="bids (loan_id, funder_id, price), .csv or .parquet")] = None,
        funders_version: Annotated[int | None, Form(ge=1, le=2**63 - 1, description="a stored funders version instead of a file")] = None,
        plan_date: Annotated[dt.date | None, Form(description="the business day the plan is for")] = None,
        new: Annotated[bool, Form(description="solve again even when a plan of the same inputs exists")] = False,
        wait: Annotated[bool, Form(description="small plans: answer 201 with the solved plan")] = True,
    ):
        """Plan a day from uploaded originations and the funders' terms.

        Small days are solved before the answer (`201`); larger ones answer `202` with a job to poll
        at `GET /v1/plans/{id}`. The same inputs return the existing plan (`200`) unless `new` is set.
        Invalid input answers `422` naming the file, row or key, and stores nothing.
        """
        cfg: Settings = request.app.state.settings
        uploads: dict[str, tuple[str, bytes] | None] = {}
        total = 0
        for name, up in (("originations", originations), ("funders", funders), ("portfolio", portfolio),
                         ("exposures", exposures), ("bids", bids)):
            if up is None or isinstance(up, str):
                uploads[name] = None
                continue
            data = await up.read()
            total += len(data)
            if total > cfg.max_upload_bytes:
                raise ApiError(413, "too_large", f"uploads over the limit of {cfg.max_upload_bytes:,} bytes")
            uploads[name] = (up.filename or f"{name}", data)
        if uploads["originations"] is None:
            raise InputError(Problem("originations", "", "the originations file is required"))
        rec, existing = await run_in_threadpool(_prepare_plan, request.app.state.store, cfg, key.id, uploads,
                                                funders_version, plan_date, new)
        request.state.audit_detail = {"plan_id": rec.id, "existing": existing, "loans": rec.loan_count}
        if existing:
            return JSONResponse(_plan_out(rec, existing=True).model_dump(mode="json"), status_code=200)
        return await _submit_and_answer(request, rec, wait)

    @r.get("/plans", tags=["plans"], response_model=PlanList, responses=COMMON)
    def list_plans(request: Request, _key: Viewer,
                   date: Annotated[dt.date | None, Query(description="plans for this business day")] = None,
                   status: Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed)$")] = None,
                   kind: Annotated[str | None, Query(pattern="^(plan|what-if|batch)$")] = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 50,
                   offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> PlanList:
        """Plans, newest first, optionally for one day, status or kind."""
        rows, total = request.app.state.store.plans(day=date, status=status, kind=kind, limit=limit, offset=offset)
        return PlanList(total=total, offset=offset, limit=limit, items=[_plan_out(x) for x in rows])

    @r.get("/plans/{plan_id}", tags=["plans"], response_model=PlanOut, responses={**COMMON, **NOT_FOUND})
    def get_plan(request: Request, plan_id: PlanId, _key: Viewer) -> PlanOut:
        """A plan's status, lineage and summary (the contract's `plan.json`); poll this for a job."""
        return _plan_out(_get_plan(request, plan_id))

    @r.get("/plans/{plan_id}/routes", tags=["plans"], response_model=TablePage,
           responses={**COMMON, **NOT_FOUND, 409: {"model": ErrorOut}})
    def get_routes(request: Request, plan_id: PlanId, _key: Viewer) -> TablePage:
        """One row per route: amounts, loan count, cost and utilisation of each limit (`funders.csv`)."""
        _ready(request, plan_id)
        df = request.app.state.tables.get(plan_id, "routes")
        return TablePage(plan_id=plan_id, total=len(df), offset=0, limit=len(df), items=_records(df))

    @r.get("/plans/{plan_id}/constraints", tags=["plans"], response_model=TablePage,
           responses={**COMMON, **NOT_FOUND, 409: {"model": ErrorOut}})
    def get_constraints(request: Request, plan_id: PlanId, _key: Viewer,
                        binding: Annotated[bool | None, Query(description="only binding (or only slack) rows")] = None,
                        funder_id: Text = None,
                        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
                        offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> TablePage:
        """Every constraint with value, limit, slack, whether it binds and its shadow price."""
        _ready(request, plan_id)
        df = request.app.state.tables.get(plan_id, "constraints")
        if binding is not None:
            df = df[df["binding"] == binding]
        if funder_id is not None:
            df = df[df["funder_id"] == funder_id]
        return TablePage(plan_id=plan_id, total=len(df), offset=offset, limit=limit,
                         items=_records(df.iloc[offset:offset + limit]))

    @r.get("/plans/{plan_id}/allocations", tags=["plans"], response_model=TablePage,
           responses={**COMMON, **NOT_FOUND, 409: {"model": ErrorOut},
                      200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
                            "description": "a page of JSON, or the whole (filtered) table as CSV or Parquet"}})
    def get_allocations(request: Request, plan_id: PlanId, _key: Viewer,
                        route: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$",
                                                           description="a route id; '' for unfunded")] = None,
                        format: Annotated[str, Query(pattern="^(json|csv|parquet)$")] = "json",
                        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
                        offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
        """One row per loan: route, amounts, cost and, when unfunded, the reason. JSON pages, or a
        download of the whole table (`format=csv|parquet`)."""
        _ready(request, plan_id)
        df = request.app.state.tables.get(plan_id, "allocations")
        if route is not None:
            df = df[df["funder_id"] == route]
        if format == "csv":
            from ..io import csv_bytes
            return Response(csv_bytes(df.reset_index(drop=True)), media_type="text/csv; charset=utf-8", headers={
                "Content-Disposition": f'attachment; filename="{plan_id}-allocations.csv"'})
        if format == "parquet":
            from ..store import frame_to_parquet
            return Response(frame_to_parquet(df.reset_index(drop=True)), media_type="application/vnd.apache.parquet",
                            headers={"Content-Disposition": f'attachment; filename="{plan_id}-allocations.parquet"'})
        return TablePage(plan_id=plan_id, total=len(df), offset=offset, limit=limit,
                         items=_records(df.iloc[offset:offset + limit]))

    @r.post("/plans/{plan_id}/what-if", tags=["what-if"], status_code=201, response_model=PlanOut,
            responses={**COMMON, **NOT_FOUND, 202: {"model": PlanOut}, 409: {"model": ErrorOut},
                       422: {"model": ErrorOut}, 503: {"model": ErrorOut}})
    async def what_if(request: Request, plan_id: PlanId, body: WhatIfIn, key: Planner):
        """A scenario from a plan: replace any funder or platform field, remove or add funders, scale
        volumes. Answers the new plan with its `difference` from the base (routes, moved loans)."""
        store: Store = request.app.state.store
        base = await run_in_threadpool(_ready, request, plan_id)
        rec = await run_in_threadpool(_prepare_what_if, store, request.app.state.settings, key.id, base, body)
        request.state.audit_detail = {"plan_id": rec.id, "base": base.id}
        return await _submit_and_answer(request, rec, body.wait)

    # ---------------------------------------------------------------- funders versions
    @r.get("/funders", tags=["funders"], response_model=list[FundersOut], responses=COMMON)
    def list_funders(request: Request, _key: Viewer) -> list[FundersOut]:
        """Stored versions of the funders' terms (without their documents)."""
        return [FundersOut(id=v.id, label=v.label, effective_date=v.effective_date, digest=v.digest,
                           created_at=v.created_at, created_by=v.created_by)
                for v in request.app.state.store.funders_versions()]

    @r.get("/funders/{version_id}", tags=["funders"], response_model=FundersOut,
           responses={**COMMON, 404: {"model": ErrorOut}})
    def get_funders(request: Request, version_id: VersionId, _key: Viewer) -> FundersOut:
        """One version, with its document."""
        v = request.app.state.store.funders_version(version_id)
        if v is None:
            raise ApiError(404, "not_found", f"no funders version {version_id}")
        return FundersOut(id=v.id, label=v.label, effective_date=v.effective_date, digest=v.digest,
                          created_at=v.created_at, created_by=v.created_by, document=v.document)

    @r.post("/funders", tags=["funders"], status_code=201, response_model=FundersOut,
            responses={**COMMON, 422: {"model": ErrorOut}})
    def create_funders(request: Request, body: FundersIn, key: Admin) -> FundersOut:
        """A new version of the funders' terms, validated like a funders file."""
        from ..terms import terms_from_dict
        terms = terms_from_dict(body.document, "document")
        doc = terms.document()
        v = request.app.state.store.add_funders_version(doc, label=body.label, effective_date=body.effective_date,
                                                        actor=key.id)
        return FundersOut(id=v.id, label=v.label, effective_date=v.effective_date, digest=v.digest,
                          created_at=v.created_at, created_by=v.created_by, document=v.document)

    # ---------------------------------------------------------------- keys and audit
    @r.get("/keys", tags=["admin"], response_model=list[KeyOut], responses=COMMON)
    def list_keys(request: Request, _key: Admin) -> list[KeyOut]:
        """Every key (never its secret)."""
        return [KeyOut(id=k.id, role=k.role, label=k.label, created_at=k.created_at, revoked_at=k.revoked_at)
                for k in request.app.state.store.keys()]

    @r.post("/keys", tags=["admin"], status_code=201, response_model=KeyOut, responses=COMMON)
    def create_key(request: Request, body: KeyIn, key: Admin) -> KeyOut:
        """A new key; its secret is in this answer only."""
        info, secret = request.app.state.store.create_key(body.role, body.label, actor=key.id)
        return KeyOut(id=info.id, role=info.role, label=info.label, secret=secret)

    @r.delete("/keys/{key_id}", tags=["admin"], status_code=204, responses={**COMMON, 404: {"model": ErrorOut}})
    def revoke_key(request: Request, key_id: KeyId, key: Admin) -> Response:
        """Revoke a key: it stops working at once."""
        if not request.app.state.store.revoke_key(key_id, actor=key.id):
            raise ApiError(404, "not_found", f"no active key '{key_id}'")
        request.app.state.keys.clear()
        return Response(status_code=204)

    @r.get("/audit", tags=["admin"], response_model=list[AuditOut], responses=COMMON)
    def audit(request: Request, _key: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> list[AuditOut]:
        """Who asked for what and when, newest first."""
        return [AuditOut(id=e.id, at=e.at, actor=e.actor, role=e.role, action=e.action, target=e.target,
                         outcome=e.outcome, detail=e.detail)
                for e in request.app.state.store.audit_log(limit, offset)]

    return r
