"""Load benchmark of the service (loopback only): plan reads under 50 concurrent clients while a
100k-loan plan is being solved by the same server.

    python benchmarks/load.py [--clients 50] [--store sqlite|postgresql] [--pg-url URL]

It starts `fundalloc serve` on a free loopback port with a fresh store, stores one solved plan,
submits the shipped 100k-loan day (answered 202), and while that solve runs, 50 clients read the
stored plan in a loop: its summary (`GET /v1/plans/{id}`), a page of 100 allocations and the
binding constraints. It reports, for the reads made during the solve, throughput and p50/p99
latency per route, and the solve's own time; then the same reads with no solve running.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live import LiveServer, new_key  # noqa: E402

DAY = ROOT / "fixtures" / "day100k"
SMALL = ROOT / "fixtures" / "small" / "cap_binds"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def reader(client: httpx.AsyncClient, paths: list[str], stop: asyncio.Event, out: dict[str, list[float]],
                 errors: list[int]) -> None:
    i = 0
    while not stop.is_set():
        path = paths[i % len(paths)]
        i += 1
        t0 = time.perf_counter()
        r = await client.get(path)
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            errors.append(r.status_code)
        out.setdefault(path.split("?")[0].rsplit("/", 1)[-1] if "/allocations" in path or "/constraints" in path
                       else "plan", []).append(dt)


async def read_load(base: str, key: str, plan_id: str, clients: int, until) -> tuple[dict, float, list[int]]:
    paths = [f"/v1/plans/{plan_id}", f"/v1/plans/{plan_id}/allocations?limit=100&offset=0",
             f"/v1/plans/{plan_id}/constraints?binding=true"]
    stop = asyncio.Event()
    out: dict[str, list[float]] = {}
    errors: list[int] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60,
                                 limits=limits) as c:
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(reader(c, paths[k % 3:] + paths[:k % 3], stop, out, errors))
                 for k in range(clients)]
        await until()
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return out, elapsed, errors


def report(title: str, out: dict, elapsed: float, errors: list[int]) -> None:
    n = sum(len(v) for v in out.values())
    print(f"\n{title}: {n:,} reads in {elapsed:.1f} s = {n / elapsed:,.0f} reads/s; non-200 answers: {len(errors)}")
    print("| read | count | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    allv = []
    for name, v in sorted(out.items()):
        allv += v
        print(f"| {name} | {len(v):,} | {statistics.median(v) * 1e3:.1f} | {pct(v, 0.99) * 1e3:.1f} | {max(v) * 1e3:.1f} |")
    print(f"| all | {len(allv):,} | {statistics.median(allv) * 1e3:.1f} | {pct(allv, 0.99) * 1e3:.1f} | "
          f"{max(allv) * 1e3:.1f} |")


async def main_async(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fundalloc-load-"))
    url = args.pg_url if args.store == "postgresql" else f"sqlite:///{tmp / 'load.db'}"
    server = LiveServer(url, tmp / "server.log").start()
    key = new_key(url, "planner")
    print(f"server {server.base}, store {args.store}, {args.clients} clients; log {tmp / 'server.log'}")
    try:
        async with httpx.AsyncClient(base_url=server.base, headers={"Authorization": f"Bearer {key}"},
                                     timeout=300) as c:
            files = {"originations": ("originations.csv", (SMALL / "originations.csv").read_bytes()),
                     "funders": ("funders.yaml", (SMALL / "funders.yaml").read_bytes())}
            small = (await c.post("/v1/plans", files=files, data={"new": "true"})).json()
            big_files = {"originations": ("originations.parquet", (DAY / "originations.parquet").read_bytes()),
                         "funders": ("funders.yaml", (DAY / "funders.yaml").read_bytes()),
                         "portfolio": ("portfolio.csv", (DAY / "portfolio.csv").read_bytes()),
                         "exposures": ("exposures.csv", (DAY / "exposures.csv").read_bytes())}
            t_submit = time.perf_counter()
            r = await c.post("/v1/plans", files=big_files, data={"new": "true"})
            t_accepted = time.perf_counter()
            assert r.status_code == 202, r.text
            job = r.json()["id"]
            print(f"100k-loan plan accepted (202) in {t_accepted - t_submit:.2f} s (upload, validation, store)")

            async def solve_done():
                while True:
                    s = (await c.get(f"/v1/plans/{job}")).json()
                    if s["status"] in ("succeeded", "failed"):
                        return s
                    await asyncio.sleep(0.25)

            done: dict = {}

            async def until_solved():
                done.update(await solve_done())

            out, elapsed, errors = await read_load(server.base, key, small["id"], args.clients, until_solved)
            t_done = time.perf_counter()
            print(f"100k-loan plan {done['status']} ({done.get('plan_status')}), "
                  f"{t_done - t_accepted:.1f} s after it was accepted; solver timings "
                  f"{ {k: v for k, v in (done.get('summary') or {}).get('timings', {}).items() if k in ('read_validate', 'compile', 'solve_total')} }")
            report("reads while the 100k-loan plan was solving", out, elapsed, errors)

            async def fixed():
                await asyncio.sleep(args.idle_seconds)

            out, elapsed, errors = await read_load(server.base, key, small["id"], args.clients, fixed)
            report("the same reads with no solve running", out, elapsed, errors)
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--pg-url", default="postgresql+psycopg://postgres:postgres@127.0.0.1:5432/fundalloc_test")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
