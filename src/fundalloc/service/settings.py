"""Service settings, read from the environment when the app is created (never at import)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import InputError, Problem
from ..store import default_url


def _num(env: dict[str, str], name: str, default: float, cast=float, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise InputError(Problem("environment", name, f"expected a number, got {raw!r}")) from None
    if value < minimum:
        raise InputError(Problem("environment", name, f"must be >= {minimum}, got {raw!r}"))
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told. Each field's environment variable is in its comment."""

    database_url: str = field(default_factory=default_url)  # FUNDALLOC_DATABASE_URL
    workers: int = 1  # FUNDALLOC_WORKERS: solver processes
    queue_limit: int = 8  # FUNDALLOC_QUEUE_LIMIT: solves queued or running before 503
    max_upload_bytes: int = 512 * 2**20  # FUNDALLOC_MAX_UPLOAD_MB
    max_rows: int = 5_000_000  # FUNDALLOC_MAX_ROWS: loans per plan
    sync_max_loans: int = 20_000  # FUNDALLOC_SYNC_MAX_LOANS: smaller plans answer 201 when solved in time
    sync_wait_seconds: float = 30.0  # FUNDALLOC_SYNC_WAIT_SECONDS
    solve_time_limit: float = 300.0  # FUNDALLOC_SOLVE_TIME_LIMIT: seconds per solve
    max_attempts: int = 2  # FUNDALLOC_MAX_ATTEMPTS: a job interrupted this often is marked failed

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        env = dict(os.environ if env is None else env)
        values = dict(
            database_url=env.get("FUNDALLOC_DATABASE_URL") or default_url(),
            workers=int(_num(env, "FUNDALLOC_WORKERS", 1, int, 1)),
            queue_limit=int(_num(env, "FUNDALLOC_QUEUE_LIMIT", 8, int, 1)),
            max_upload_bytes=int(_num(env, "FUNDALLOC_MAX_UPLOAD_MB", 512, float, 0) * 2**20),
            max_rows=int(_num(env, "FUNDALLOC_MAX_ROWS", 5_000_000, int, 1)),
            sync_max_loans=int(_num(env, "FUNDALLOC_SYNC_MAX_LOANS", 20_000, int, 0)),
            sync_wait_seconds=_num(env, "FUNDALLOC_SYNC_WAIT_SECONDS", 30.0),
            solve_time_limit=_num(env, "FUNDALLOC_SOLVE_TIME_LIMIT", 300.0, float, 1),
            max_attempts=int(_num(env, "FUNDALLOC_MAX_ATTEMPTS", 2, int, 1)),
        )
        values.update(overrides)
        return cls(**values)
