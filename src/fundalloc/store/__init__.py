"""The store: inputs, funders versions, plans, keys, the audit log and the batch's days.

SQLite (an embedded file, the default) or PostgreSQL, through SQLAlchemy 2; the schema comes from
Alembic migrations, applied by :meth:`Store.migrate`. Every write that belongs together happens in
one transaction, so a crash leaves either all of it or none of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, create_engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import FundallocError
from .models import ApiKey, AuditEntry, BatchDay, Blob, FundersVersion, PlanRecord, PlanTable, utcnow

__all__ = ["ApiKey", "AuditEntry", "BatchDay", "Blob", "FundersVersion", "KeyInfo", "PlanRecord", "ROLES",
           "Store", "StoreError", "StoreLock", "default_url"]

ROLES = ("viewer", "planner", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
MIGRATIONS = Path(__file__).parent / "migrations"


class StoreError(FundallocError):
    """The store cannot be reached or is not in the expected state."""

    exit_code = 4


def default_url() -> str:
    """``FUNDALLOC_DATABASE_URL``, else an SQLite file ``fundalloc.db`` in the working folder."""
    return os.environ.get("FUNDALLOC_DATABASE_URL") or f"sqlite:///{Path('fundalloc.db').resolve()}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    id: str
    role: str
    label: str

    def may(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class StoreLock:
    """One named lock on a store, held by this process (see :meth:`Store.lock`)."""

    def __init__(self, store: "Store", name: str):
        self.name = name
        self._conn = None
        self._fd: int | None = None
        who = {"serve": "another 'fundalloc serve'", "batch": "another 'fundalloc batch'"}.get(name, "another process")
        busy = StoreError(f"{who} is using the store {store.redacted_url} (lock '{name}' is held); "
                          "stop it first, or give this one its own FUNDALLOC_DATABASE_URL")
        if store.url.startswith("sqlite"):
            path = store.url.split("///", 1)[-1]
            if not path or path == ":memory:":
                return  # a private in-memory database: nobody else can open it
            import fcntl
            lock_path = f"{path}.{name}.lock"
            try:
                self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot create the lock file {lock_path}: {exc}") from exc
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._fd)
                self._fd = None
                raise busy from None
            os.ftruncate(self._fd, 0)
            os.write(self._fd, f"{os.getpid()}\n".encode())
            return
        from sqlalchemy import text
        key = int.from_bytes(hashlib.sha256(f"fundalloc:{name}".encode()).digest()[:8], "big", signed=True)
        conn = store.engine.connect()
        try:
            got = conn.execute(text("select pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()
        except Exception as exc:
            conn.close()
            raise StoreError(f"cannot take the store's lock '{name}': {exc}") from exc
        if not got:
            conn.close()
            raise busy
        self._conn = conn  # the advisory lock lives as long as this database connection

    def release(self) -> None:
        if self._fd is not None:
            import fcntl
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            try:  # the pooled connection outlives close(): end the session, and its lock, for real
                self._conn.invalidate()
                self._conn.close()
            finally:
                self._conn = None

    def __enter__(self) -> "StoreLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def frame_to_parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf, compression="zstd")
    return buf.getvalue()


def parquet_to_frame(data: bytes) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(data)).to_pandas()


class Store:
    """One database. Cheap to create per process; holds a connection pool."""

    def __init__(self, url: str | None = None, *, echo: bool = False):
        self.url = url or default_url()
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.url.startswith("sqlite"):
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except Exception as exc:  # a malformed URL or a missing driver
            raise StoreError(f"cannot open the store {self.redacted_url}: {exc}") from exc
        if self.url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def redacted_url(self) -> str:
        from sqlalchemy.engine import make_url
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<unparseable url>"

    # ---------------------------------------------------------------- schema
    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        self.check_integrity()
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except Exception as exc:
            raise StoreError(f"cannot migrate the store {self.redacted_url}: {exc}") from exc

    def check_integrity(self) -> None:
        """Refuse a damaged SQLite file before anything is read from it or written into it
        (``PRAGMA quick_check``: every page and index entry, without the slower cross-checks)."""
        if not self.url.startswith("sqlite"):
            return
        from sqlalchemy import text
        try:
            with self.engine.connect() as conn:
                rows = [r[0] for r in conn.execute(text("PRAGMA quick_check")).fetchmany(5)]
        except Exception as exc:
            raise StoreError(f"the store {self.redacted_url} cannot be read: {exc}") from exc
        if rows != ["ok"]:
            raise StoreError(f"the store {self.redacted_url} is damaged (integrity check: {'; '.join(rows)}); "
                             "restore it from a backup")

    def lock(self, name: str) -> "StoreLock":
        """Hold the store's lock ``name`` for as long as the returned object lives (or until its
        :meth:`StoreLock.release`). A second holder is refused at once with a :class:`StoreError`:
        a PostgreSQL advisory lock on its own connection, or an ``flock`` on a file beside an SQLite
        database. Both vanish with the process that holds them, however it ends."""
        return StoreLock(self, name)

    def session(self) -> Session:
        return self._session()

    def ping(self) -> bool:
        from sqlalchemy import text
        with self.engine.connect() as conn:
            return conn.execute(text("select 1")).scalar() == 1

    def dispose(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------- blobs
    def put_blob(self, s: Session, data: bytes, kind: str, filename: str) -> str:
        """Store bytes once under their digest (inside the caller's transaction)."""
        digest = sha256(data)
        if s.get(Blob, digest) is None:
            s.add(Blob(digest=digest, kind=kind, filename=filename, size=len(data), content=data))
            s.flush()
        return digest

    def blob(self, digest: str) -> bytes:
        with self.session() as s:
            b = s.get(Blob, digest)
            if b is None:
                raise StoreError(f"input {digest} is not in the store")
            return b.content

    # ---------------------------------------------------------------- funders versions
    def add_funders_version(self, document: dict[str, Any], *, label: str = "",
                            effective_date: dt.date | None = None, actor: str = "") -> FundersVersion:
        digest = sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
        with self.session() as s, s.begin():
            v = FundersVersion(label=label, effective_date=effective_date, digest=digest, document=document,
                               created_by=actor)
            s.add(v)
            s.flush()
            s.add(AuditEntry(actor=actor or "system", action="funders.create", target=f"funders/{v.id}",
                             outcome="created", detail={"label": label, "digest": digest}))
        return v

    def funders_versions(self) -> list[FundersVersion]:
        with self.session() as s:
            return list(s.scalars(select(FundersVersion).order_by(FundersVersion.id)))

    def funders_version(self, version_id: int) -> FundersVersion | None:
        with self.session() as s:
            return s.get(FundersVersion, version_id)

    def funders_in_force(self, day: dt.date) -> FundersVersion | None:
        """The newest version whose effective date is on or before ``day``."""
        with self.session() as s:
            q = (select(FundersVersion).where(FundersVersion.effective_date <= day)
                 .order_by(FundersVersion.effective_date.desc(), FundersVersion.id.desc()).limit(1))
            return s.scalars(q).first()

    # ---------------------------------------------------------------- plans
    @staticmethod
    def new_plan_id() -> str:
        return "p_" + uuid.uuid4().hex[:16]

    def plan(self, plan_id: str) -> PlanRecord | None:
        with self.session() as s:
            return s.get(PlanRecord, plan_id)

    def plans(self, *, day: dt.date | None = None, status: str | None = None, kind: str | None = None,
              limit: int = 50, offset: int = 0) -> tuple[list[PlanRecord], int]:
        from sqlalchemy import func
        with self.session() as s:
            q = select(PlanRecord)
            if day is not None:
                q = q.where(PlanRecord.plan_date == day)
            if status is not None:
                q = q.where(PlanRecord.status == status)
            if kind is not None:
                q = q.where(PlanRecord.kind == kind)
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(PlanRecord.created_at.desc(), PlanRecord.id).offset(offset).limit(limit))
            return list(rows), int(total)

    def find_plan(self, inputs_digest: str) -> PlanRecord | None:
        """The newest plan (not failed) made from exactly these inputs."""
        with self.session() as s:
            q = (select(PlanRecord).where(PlanRecord.inputs_digest == inputs_digest,
                                          PlanRecord.status != "failed", PlanRecord.kind != "what-if")
                 .order_by(PlanRecord.created_at.desc()).limit(1))
            return s.scalars(q).first()

    def claim(self, plan_id: str) -> PlanRecord | None:
        """Mark a queued (or interrupted) job running; None when it is not waiting any more."""
        with self.session() as s, s.begin():
            res = s.execute(update(PlanRecord)
                            .where(PlanRecord.id == plan_id, PlanRecord.status.in_(("queued", "running")))
                            .values(status="running", started_at=utcnow(), attempts=PlanRecord.attempts + 1))
            if res.rowcount != 1:
                return None
            return s.get(PlanRecord, plan_id)

    def save_result(self, plan_id: str, plan: Any, difference: dict[str, Any] | None = None) -> None:
        """Record a solved plan: its summary and its three tables, in one transaction."""
        from ..plan import _jsonable
        summary = _jsonable(plan.summary())
        tables = {
            "allocations": plan.allocations,
            "routes": plan.funders,
            "constraints": plan.constraints,
        }
        blobs = {name: frame_to_parquet(df) for name, df in tables.items()}
        with self.session() as s, s.begin():
            rec = s.get(PlanRecord, plan_id)
            if rec is None:
                raise StoreError(f"plan {plan_id} is not in the store")
            for name, data in blobs.items():
                s.merge(PlanTable(plan_id=plan_id, name=name, rows=len(tables[name]), content=data))
            rec.status = "succeeded"
            rec.plan_status = plan.status.value
            rec.summary = summary
            rec.objective = float(plan.objective)
            rec.loan_count = int(len(plan.allocations))
            rec.difference = _jsonable(difference) if difference is not None else None
            rec.finished_at = utcnow()
            rec.error = None

    def fail(self, plan_id: str, reason: str, problems: list[dict[str, str]] | None = None) -> None:
        with self.session() as s, s.begin():
            rec = s.get(PlanRecord, plan_id)
            if rec is not None and rec.status != "succeeded":
                rec.status = "failed"
                rec.finished_at = utcnow()
                rec.error = {"reason": reason, "problems": problems or []}

    def release_job(self, plan_id: str) -> None:
        """Hand a running job back (the server is stopping): queued again, and this attempt does
        not count against ``max_attempts``."""
        with self.session() as s, s.begin():
            s.execute(update(PlanRecord).where(PlanRecord.id == plan_id, PlanRecord.status == "running")
                      .values(status="queued", attempts=PlanRecord.attempts - 1))

    def unfinished(self) -> list[PlanRecord]:
        with self.session() as s:
            q = select(PlanRecord).where(PlanRecord.status.in_(("queued", "running"))).order_by(PlanRecord.created_at)
            return list(s.scalars(q))

    def plan_table(self, plan_id: str, name: str) -> pd.DataFrame:
        with self.session() as s:
            t = s.get(PlanTable, (plan_id, name))
            if t is None:
                raise StoreError(f"plan {plan_id} has no table '{name}'")
            return parquet_to_frame(t.content)

    def plan_table_bytes(self, plan_id: str, name: str) -> bytes:
        with self.session() as s:
            t = s.get(PlanTable, (plan_id, name))
            if t is None:
                raise StoreError(f"plan {plan_id} has no table '{name}'")
            return t.content

    # ---------------------------------------------------------------- keys
    def create_key(self, role: str, label: str = "", actor: str = "") -> tuple[KeyInfo, str]:
        """A new key; returns its info and the secret (shown once, stored only as a hash)."""
        if role not in ROLES:
            raise FundallocError(f"unknown role '{role}'; expected one of {', '.join(ROLES)}")
        key_id = "k_" + secrets.token_hex(6)
        secret = f"fa_{key_id[2:]}_{secrets.token_urlsafe(32)}"
        with self.session() as s, s.begin():
            s.add(ApiKey(id=key_id, key_hash=hashlib.sha256(secret.encode()).hexdigest(), role=role, label=label))
            s.add(AuditEntry(actor=actor or "cli", action="keys.create", target=key_id, outcome="created",
                             detail={"role": role, "label": label}))
        return KeyInfo(key_id, role, label), secret

    def authenticate(self, secret: str) -> KeyInfo | None:
        h = hashlib.sha256(secret.encode()).hexdigest()
        with self.session() as s:
            k = s.scalars(select(ApiKey).where(ApiKey.key_hash == h)).first()
            if k is None or k.revoked_at is not None:
                return None
            return KeyInfo(k.id, k.role, k.label)

    def revoke_key(self, key_id: str, actor: str = "") -> bool:
        with self.session() as s, s.begin():
            k = s.get(ApiKey, key_id)
            if k is None or k.revoked_at is not None:
                return False
            k.revoked_at = utcnow()
            s.add(AuditEntry(actor=actor or "cli", action="keys.revoke", target=key_id, outcome="revoked"))
            return True

    def keys(self) -> list[ApiKey]:
        with self.session() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    # ---------------------------------------------------------------- audit
    def audit(self, actor: str, action: str, target: str = "", outcome: str = "", role: str = "",
              detail: dict[str, Any] | None = None) -> None:
        with self.session() as s, s.begin():
            s.add(AuditEntry(actor=actor, role=role, action=action, target=target, outcome=outcome, detail=detail))

    def audit_log(self, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
        with self.session() as s:
            q = select(AuditEntry).order_by(AuditEntry.id.desc()).offset(offset).limit(limit)
            return list(s.scalars(q))

    # ---------------------------------------------------------------- batch days
    def batch_days(self, until: dt.date | None = None) -> list[BatchDay]:
        with self.session() as s:
            q = select(BatchDay).order_by(BatchDay.day)
            if until is not None:
                q = q.where(BatchDay.day <= until)
            return list(s.scalars(q))

    def batch_day(self, day: dt.date) -> BatchDay | None:
        with self.session() as s:
            return s.get(BatchDay, day)

    def iter_plan_ids(self) -> Iterator[str]:
        with self.session() as s:
            yield from s.scalars(select(PlanRecord.id).order_by(PlanRecord.created_at))
