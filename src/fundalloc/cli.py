"""The ``fundalloc`` command: a thin shell that parses, calls the library and formats.

Exit codes (also in the README):

- 0: success (``plan``: the plan was written; ``verify``: no hard constraint is broken)
- 1: ``verify`` found a broken constraint; or an unexpected internal error
- 2: invalid input (the message names the file, the row or key, and what is wrong); nothing written
- 3: the solver failed and no plan could be made; nothing written
- 4: the store (``FUNDALLOC_DATABASE_URL``) cannot be opened or migrated
- 5: ``batch``: the day was already run and its outbox is complete (use ``--force`` to replace it)
- 6: ``batch``: success, but some loans are unfunded or a minimum was not reached (see the report)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from .errors import FundallocError, InputError, Problem

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_INPUT = 2
EXIT_SOLVER = 3
EXIT_STORE = 4
EXIT_ALREADY_RUN = 5
EXIT_UNFUNDED = 6


def _progress(enabled: bool):
    if not enabled:
        return None
    t0 = time.perf_counter()

    def show(msg: str) -> None:
        sys.stderr.write(f"[{time.perf_counter() - t0:7.2f}s] {msg}\n")
        sys.stderr.flush()

    return show


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--originations", required=True, help="originations CSV or Parquet")
    p.add_argument("--funders", required=True, help="funders YAML or JSON")
    p.add_argument("--portfolio", help="portfolio positions CSV or Parquet (optional)")
    p.add_argument("--exposures", help="obligor exposures CSV or Parquet (optional)")
    p.add_argument("--bids", help="bids CSV or Parquet: loan_id, funder_id, price (optional)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fundalloc", description="Multi-lender funding allocation optimiser.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="plan a day and write the four plan files")
    _add_inputs(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--solver", default="highs", choices=["highs", "ortools", "pulp"])
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds for the whole solve")
    p.add_argument("--gap", type=float, default=1e-5, help="gap to the LP bound that counts as optimal")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show phases on stderr (default: when stderr is a terminal)")

    v = sub.add_parser("verify", help="recompute every constraint and the objective of a plan folder")
    _add_inputs(v)
    v.add_argument("--plan", required=True, help="plan folder written by 'fundalloc plan'")
    v.add_argument("--json", action="store_true", help="print the report as JSON")

    b = sub.add_parser("batch", help="the day-end batch: plan a day from the inbox, record it, write its outbox")
    b.add_argument("--date", required=True, type=_date, help="the business day, YYYY-MM-DD")
    b.add_argument("--inbox", required=True, help="inbox folder (funders.yaml, <date>/originations.csv|parquet)")
    b.add_argument("--outbox", required=True, help="outbox folder; the day is written to <outbox>/<date>/")
    b.add_argument("--force", action="store_true", help="replace a day that was already run")
    b.add_argument("--recompute-following", action="store_true",
                   help="also re-run the recorded days after this one, in order, on the new state")
    b.add_argument("--pacing", default="lookahead", choices=["lookahead", "even", "none"],
                   help="how period quotas (monthly_max/monthly_min) are spread over the month")
    b.add_argument("--pace-facilities", action="store_true",
                   help="pace facility headroom over the month like a quota (nothing is repaid within it)")
    b.add_argument("--solver", default="highs", choices=["highs", "ortools", "pulp"])
    b.add_argument("--time-limit", type=float, default=300.0, help="seconds per solve")
    b.add_argument("--gap", type=float, default=1e-5, help="gap to the LP bound that counts as optimal")
    b.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    b.add_argument("--log-format", choices=["json", "text"], default=None,
                   help="log lines on stderr (default: json in a pipe, text in a terminal)")

    sv = sub.add_parser("serve", help="run the HTTP service (settings from FUNDALLOC_* environment variables)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    k = sub.add_parser("keys", help="create, revoke and list API keys (in the store of FUNDALLOC_DATABASE_URL)")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="create a key; its secret is the last line of the output")
    kc.add_argument("--role", required=True, choices=["viewer", "planner", "admin"])
    kc.add_argument("--label", default="")
    kr = ksub.add_parser("revoke", help="revoke a key by its id")
    kr.add_argument("key_id")
    ksub.add_parser("list", help="list keys (never their secrets)")
    return ap


def cmd_plan(args: argparse.Namespace) -> int:
    from .api import load_day, plan
    from .solve import PlanOptions

    check_writable(args.out)
    show = _progress(sys.stderr.isatty() if args.progress is None else args.progress)
    if show:
        show("reading and validating inputs")
    day = load_day(args.originations, args.funders, args.portfolio, args.exposures, args.bids)
    opts = PlanOptions(solver=args.solver, time_limit=args.time_limit, gap_tolerance=args.gap)
    result = plan(day, options=opts, progress=show)
    if show:
        show(f"writing {args.out}")
    result.write(args.out)
    _out(_summary_text(result))
    return EXIT_OK


def check_writable(out: str | Path) -> None:
    """Refuse an output folder that cannot be written before any work is done: the folder (or
    its nearest existing parent) must be a directory in which a file can be created."""
    import tempfile

    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(Problem(str(p), "--out", "exists and is not a folder"))
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(Problem(str(p), "--out", f"{probe} is not a folder"))
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise InputError(Problem(str(p), "--out", f"cannot write there: {exc.strerror or exc}")) from None


def _out(text: str) -> None:
    """Print to stdout; a reader that went away (``| head``) does not turn into a traceback."""
    import os

    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _json(obj):
    from .plan import _jsonable
    return _jsonable(obj)


def _summary_text(result) -> str:
    s = result.summary()
    f = result.funders
    used = f[f["loan_count"] > 0]
    lines = [
        f"status {s['status']}  objective {s['objective']:,.2f}  lower bound {s['lower_bound']:,.2f}  "
        f"gap {s['gap']:.2e}",
        f"loans {s['loan_count']:,}  principal {s['principal']:,.2f}  funding cost {s['funding_cost']:,.2f}",
        f"unfunded {s['unfunded_count']:,} loans ({s['unfunded_principal']:,.2f})  "
        f"shortfall {s['shortfall']:,.2f}  binding limits {s['binding_constraints']}  breaches {len(s['breaches'])}",
        f"routes used {len(used)} of {len(f)}; solver {s['solver']['name']} {s['solver']['version']}; "
        f"time {sum(v for k, v in s['timings'].items() if k in ('read_validate', 'compile', 'solve_total', 'report', 'write')):.2f}s",
    ]
    return "\n".join(lines)


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify_plan

    rep = verify_plan(args.originations, args.funders, args.plan, args.portfolio, args.exposures, args.bids)
    if args.json:
        _out(json.dumps({"ok": rep.ok, "objective": rep.objective, "plan_objective": rep.plan_objective,
                          "lower_bound": rep.lower_bound, "gap": rep.gap, "checked": rep.checked,
                          "violations": rep.violations}, indent=2, default=float))
    else:
        _out("\n".join(rep.lines()))
    return EXIT_OK if rep.ok else EXIT_VIOLATIONS


def _date(text: str):
    import datetime as dt
    import re
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):  # not ISO week or basic forms
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


class _JsonFormatter:
    """One JSON object per log line: time, level, logger, message and the record's fields."""

    def format(self, record) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        out.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            import traceback
            out["error"] = "".join(traceback.format_exception(*record.exc_info)).strip().splitlines()[-1]
        return json.dumps(_json(out), default=str)


def _logging(fmt: str) -> None:
    import logging
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())  # type: ignore[arg-type]
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("fundalloc")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _bar(enabled: bool):
    if not enabled:
        return None

    def show(msg: str, i: int, n: int) -> None:
        done = int(24 * i / n)
        sys.stderr.write(f"\r[{'#' * done}{'-' * (24 - done)}] {i}/{n} {msg[:70]:<70}")
        if i == n:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def cmd_batch(args: argparse.Namespace) -> int:
    import logging

    from .batch import BatchOptions, run_day
    from .solve import PlanOptions
    from .store import Store

    tty = sys.stderr.isatty()
    _logging(args.log_format or ("text" if tty else "json"))
    log = logging.getLogger("fundalloc.batch")
    store = Store()
    store.migrate()
    lock = store.lock("batch")  # one batch per store at a time; a second is refused (exit 4)
    opts = BatchOptions(pacing=args.pacing, force=args.force, recompute_following=args.recompute_following,
                        pace_facilities=args.pace_facilities,
                        plan=PlanOptions(solver=args.solver, time_limit=args.time_limit, gap_tolerance=args.gap))
    log.info("batch started", extra={"fields": {"date": args.date.isoformat(), "inbox": args.inbox,
                                                "outbox": args.outbox, "pacing": args.pacing, "store": store.redacted_url}})
    try:
        results = run_day(store, args.date, args.inbox, args.outbox, opts,
                          _bar(tty if args.progress is None else args.progress))
    finally:
        lock.release()
    for r in results:
        s = r.plan.summary()
        _out(f"{r.day}: {s['status']}  objective {s['objective']:,.2f}  gap {s['gap']:.2e}  loans {s['loan_count']:,}  "
              f"unfunded {s['unfunded_count']:,}  shortfall {s['shortfall']:,.2f}  -> {r.outbox}")
    return EXIT_OK if all(r.clean for r in results) else EXIT_UNFUNDED


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from .service import Settings, create_app
    from .store import Store

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    store = Store(settings.database_url)
    store.migrate()
    if not store.keys():
        print("fundalloc serve: no API keys yet. Create the first one with:\n"
              "  fundalloc keys create --role admin\n"
              f"(store: {store.redacted_url})", file=sys.stderr)
    store.dispose()
    from .service.protocol import HeadTimeoutProtocol
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                http=HeadTimeoutProtocol, timeout_keep_alive=5)
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    import getpass

    from .store import Store

    store = Store()
    store.migrate()
    actor = f"cli:{getpass.getuser()}"
    if args.keys_command == "create":
        info, secret = store.create_key(args.role, args.label, actor=actor)
        _out(f"created key {info.id} (role {info.role}); keep the secret below, it is not shown again")
        _out(secret)
    elif args.keys_command == "revoke":
        if not store.revoke_key(args.key_id, actor=actor):
            print(f"fundalloc keys revoke: no active key '{args.key_id}'", file=sys.stderr)
            return EXIT_INPUT
        _out(f"revoked {args.key_id}")
    else:
        for k in store.keys():
            state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
            _out(f"{k.id}  {k.role:8s} {state:24s} {k.label}")
    return EXIT_OK


def keep_freed_memory() -> bool:
    """Let glibc keep the memory the process frees instead of handing every big block back.

    A big day allocates and frees hundreds of arrays the size of the loans. glibc serves each
    from a fresh ``mmap`` and unmaps it on free, so the next one is faulted in and zeroed by the
    kernel again: on a 10M-loan plan that was a third of the run, as system time. From the heap,
    kept between uses, the same blocks are reused. Only the short-lived ``plan`` and ``batch``
    processes ask for it; elsewhere (no glibc) nothing changes. Returns whether it applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_max, m_trim_threshold = -4, -1  # from malloc.h
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("plan", "batch"):
        keep_freed_memory()
    handler = {"plan": cmd_plan, "verify": cmd_verify, "serve": cmd_serve, "keys": cmd_keys,
               "batch": cmd_batch}[args.command]
    try:
        return handler(args)
    except InputError as exc:
        print(f"fundalloc {args.command}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except FundallocError as exc:
        print(f"fundalloc {args.command}: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except Exception as exc:  # an unexpected failure: one line for the operator, exit 1
        import logging
        logging.getLogger("fundalloc").exception("unexpected failure")
        print(f"fundalloc {args.command}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
