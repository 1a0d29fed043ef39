"""The store's tables (SQLAlchemy 2). The schema itself is created by the Alembic migrations in
``migrations/``; these classes are how the code reads and writes it.

Big tables (a plan's allocations, constraints and routes) are stored as Parquet blobs, one per
plan and table: a million-loan plan is one row, written in one statement, read back as a frame.
Uploaded inputs are stored once, content-addressed by their SHA-256.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Date, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Blob(Base):
    """An input file, stored once under the digest of its bytes."""

    __tablename__ = "blobs"
    digest: Mapped[str] = mapped_column(String(80), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    content: Mapped[bytes] = mapped_column(LargeBinary)


class FundersVersion(Base):
    """A version of the funders' terms (the contract's YAML document, as JSON)."""

    __tablename__ = "funders_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    effective_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True, index=True)
    digest: Mapped[str] = mapped_column(String(80), index=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), default="")


class PlanRecord(Base):
    """A plan and the job that makes it: inputs, lineage, status, summary."""

    __tablename__ = "plans"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="plan")  # plan | what-if | batch
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued | running | succeeded | failed
    plan_status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # optimal | feasible | time_limit
    plan_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    inputs_digest: Mapped[str] = mapped_column(String(80), index=True)
    originations_digest: Mapped[str] = mapped_column(String(80))
    originations_format: Mapped[str] = mapped_column(String(10))
    funders_digest: Mapped[str] = mapped_column(String(80))
    funders_version_id: Mapped[int | None] = mapped_column(ForeignKey("funders_versions.id"), nullable=True)
    portfolio_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    portfolio_format: Mapped[str | None] = mapped_column(String(10), nullable=True)
    exposures_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    exposures_format: Mapped[str | None] = mapped_column(String(10), nullable=True)
    bids_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    bids_format: Mapped[str | None] = mapped_column(String(10), nullable=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("plans.id"), nullable=True, index=True)
    overrides: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    loan_count: Mapped[int] = mapped_column(Integer, default=0)
    objective: Mapped[float | None] = mapped_column(Float, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    difference: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class PlanTable(Base):
    """One of a plan's tables (allocations, routes, constraints) as Parquet bytes."""

    __tablename__ = "plan_tables"
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; the secret is shown once, at creation."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class AuditEntry(Base):
    """Who asked for what, and when."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))  # key id, or "cli:<user>"
    role: Mapped[str] = mapped_column(String(16), default="")
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    outcome: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class BatchDay(Base):
    """A day run by the day-end batch: its plan and what it consumed of every route."""

    __tablename__ = "batch_days"
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    run_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON)  # per route: funder_amount, principal, loans
    note: Mapped[str] = mapped_column(Text, default="")
