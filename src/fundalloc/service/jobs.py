"""Solves off the request path: a bounded pool of solver processes that read their inputs from the
store and write the plan back in one transaction.

A job is a row of ``plans`` (status queued -> running -> succeeded | failed). Because the inputs
are in the store, a job interrupted by a crash can be run again from scratch: on start-up the
service resumes every job left queued or running, and marks one failed (with its reason) once it
has been interrupted ``max_attempts`` times.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import InputError

log = logging.getLogger("fundalloc.jobs")

_STORES: dict[str, Any] = {}


def _store(url: str):
    from ..store import Store
    if url not in _STORES:
        _STORES[url] = Store(url)
    return _STORES[url]


def materialise(store, rec, folder: Path) -> dict[str, Path | None]:
    """Write a plan's stored inputs into ``folder`` as files; return their paths."""
    paths: dict[str, Path | None] = {}
    for name in ("originations", "portfolio", "exposures", "bids"):
        digest = getattr(rec, f"{name}_digest")
        if digest is None:
            paths[name] = None
            continue
        p = folder / f"{name}.{getattr(rec, f'{name}_format')}"
        p.write_bytes(store.blob(digest))
        paths[name] = p
    p = folder / "funders.json"
    p.write_bytes(store.blob(rec.funders_digest))
    paths["funders"] = p
    return paths


def stored_plan(store, plan_id: str) -> SimpleNamespace:
    """A stored plan as the attributes :func:`fundalloc.whatif.compare` reads."""
    rec = store.plan(plan_id)
    s = rec.summary
    return SimpleNamespace(
        objective=s["objective"], lower_bound=s["lower_bound"], funding_cost=s["funding_cost"],
        unfunded_count=s["unfunded_count"], unfunded_principal=s["unfunded_principal"], shortfall=s["shortfall"],
        funders=store.plan_table(plan_id, "routes"), allocations=store.plan_table(plan_id, "allocations"),
        constraints=store.plan_table(plan_id, "constraints"))


def difference(base, scenario, moved_rows: int = 200) -> dict[str, Any]:
    """A what-if's difference from its base, as JSON: totals, routes, and the first moved loans."""
    from ..whatif import compare
    cmp = compare(base, scenario)
    summary = {m: {k: float(v) for k, v in row.items()} for m, row in cmp.summary.iterrows()}
    cols = ["principal_base", "principal_scenario", "principal_change", "loan_count_change", "cost_change"]
    routes = cmp.routes[cols].reset_index().rename(columns={"index": "funder_id"})
    routes = routes[(routes["principal_change"] != 0) | (routes["cost_change"] != 0)]
    return {
        "summary": summary,
        "routes": routes.to_dict(orient="records"),
        "moved_count": int(len(cmp.moved)),
        "moved": cmp.moved.head(moved_rows).to_dict(orient="records"),
    }


def run_job(url: str, plan_id: str) -> str:
    """Run one job in a solver process. Returns the job's final status; never raises."""
    from ..api import load_day, plan
    from ..whatif import derive, scenario_terms
    from ..terms import load_terms

    store = _store(url)
    rec = store.claim(plan_id)
    if rec is None:
        return "skipped"
    try:
        with tempfile.TemporaryDirectory(prefix="fundalloc-job-") as tmp:
            paths = materialise(store, rec, Path(tmp))
            terms = load_terms(paths["funders"])
            ov = rec.overrides or {}
            if rec.parent_id:
                terms = scenario_terms(terms, funders=ov.get("funders"), platform=ov.get("platform"),
                                       remove=ov.get("remove", ()), add=ov.get("add", ()))
            bids = paths["bids"]
            if rec.parent_id and bids is not None:  # a removed funder's bids go with it
                from ..io import read_bids
                table = read_bids(bids)
                bids = table[table["funder_id"].isin(set(terms.route_ids)).to_numpy()].reset_index(drop=True)
            day = load_day(paths["originations"], terms, paths["portfolio"], paths["exposures"], bids)
            if ov.get("scale") is not None:
                day = derive(day, scale=ov["scale"])
            result = plan(day, **(rec.options or {}))
        diff = difference(stored_plan(store, rec.parent_id), result) if rec.parent_id else None
        store.save_result(plan_id, result, diff)
        return "succeeded"
    except InputError as exc:
        store.fail(plan_id, "invalid input", [{"source": p.source, "where": p.where, "message": p.message}
                                              for p in exc.problems])
        return "failed"
    except Exception as exc:  # recorded on the job, with the traceback in the log
        log.exception("job %s failed", plan_id)
        store.fail(plan_id, f"{type(exc).__name__}: {exc}")
        return "failed"


def _die_with_parent(parent: int) -> None:
    """In each solver process: end when the server process ends, however it ends (a SIGKILLed
    server must not leave a solver running). Linux's parent-death signal, and a watchdog thread
    for the rest (and for a parent that dies before the signal is armed)."""
    import os
    import signal
    import sys
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    # a stop signal sent to the whole group (systemd, Ctrl-C) is the server's to handle: it hands
    # the running job back and then stops this process itself
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="fundalloc-parent-watch", daemon=True).start()


class QueueFull(Exception):
    """The bounded queue of solves is full."""


class JobRunner:
    """A bounded pool of solver processes (spawned: each process imports its own solver)."""

    def __init__(self, url: str, workers: int, queue_limit: int):
        self.url = url
        self.workers = workers
        self.queue_limit = queue_limit
        self._lock = threading.Lock()
        self._inflight: dict[str, cf.Future] = {}
        self._pool: cf.ProcessPoolExecutor | None = None
        self._closing = False

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            import os
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                                initializer=_die_with_parent, initargs=(os.getpid(),))
        return self._pool

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def submit(self, plan_id: str, *, force: bool = False) -> cf.Future:
        with self._lock:
            if self._closing:
                raise QueueFull("the server is stopping")
            if plan_id in self._inflight:
                return self._inflight[plan_id]
            if not force and len(self._inflight) >= self.queue_limit:
                raise QueueFull(f"{len(self._inflight)} solves are queued or running")
            try:
                fut = self._executor().submit(run_job, self.url, plan_id)
            except cf.process.BrokenProcessPool:
                self._pool = None
                fut = self._executor().submit(run_job, self.url, plan_id)
            self._inflight[plan_id] = fut
        fut.add_done_callback(lambda f, pid=plan_id: self._done(pid, f))
        return fut

    def _done(self, plan_id: str, fut: cf.Future) -> None:
        with self._lock:
            self._inflight.pop(plan_id, None)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None and self._closing:  # stopped by the server's shutdown: handed back, not failed
            return
        if exc is not None:  # the solver process died (killed, out of memory): record it
            log.error("job %s: solver process failed: %s", plan_id, exc)
            with self._lock:
                if isinstance(exc, cf.process.BrokenProcessPool):
                    self._pool = None
            try:
                _store(self.url).fail(plan_id, f"the solver process died: {type(exc).__name__}")
            except Exception:  # the store is down too: the job stays 'running' until the next start
                log.exception("job %s: could not record the failure", plan_id)

    def shutdown(self) -> list[str]:
        """Stop taking work and stop the solver processes; returns the jobs that were in flight,
        for the caller to hand back to the store as resumable (a graceful stop loses no job)."""
        with self._lock:
            self._closing = True
            pool, self._pool = self._pool, None
            inflight = sorted(self._inflight)
        if pool is not None:
            procs = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                if p.is_alive():
                    p.kill()  # solver processes ignore SIGTERM (see _die_with_parent)
            for p in procs:
                p.join(timeout=10)
        return inflight
