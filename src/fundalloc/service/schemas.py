"""The service's request and response bodies (separate input and output schemas)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _utc(v: dt.datetime) -> dt.datetime:
    return v.replace(tzinfo=dt.timezone.utc) if v.tzinfo is None else v


# the store keeps naive UTC timestamps; answers carry the zone (RFC 3339)
UtcDateTime = Annotated[dt.datetime, AfterValidator(_utc)]


class ProblemOut(BaseModel):
    source: str = Field(examples=["originations.csv"])
    where: str = Field(examples=["row 17, column 'principal'"])
    message: str = Field(examples=["expected a number > 0, got -5"])


class ErrorOut(BaseModel):
    error: str = Field(examples=["invalid_input"])
    message: str
    problems: list[ProblemOut] = []


class JobOut(BaseModel):
    id: str = Field(examples=["p_3f2a9c1b0d4e5f60"])
    status: str = Field(examples=["queued"], description="queued | running | succeeded | failed")
    poll: str = Field(examples=["/v1/plans/p_3f2a9c1b0d4e5f60"])


class PlanOut(BaseModel):
    """A plan (or the job making it): inputs, lineage, status and, once solved, its summary."""

    id: str = Field(examples=["p_3f2a9c1b0d4e5f60"])
    kind: str = Field(examples=["plan"], description="plan | what-if | batch")
    status: str = Field(examples=["succeeded"], description="job status: queued | running | succeeded | failed")
    plan_status: str | None = Field(None, examples=["optimal"], description="optimal | feasible | time_limit")
    plan_date: dt.date | None = None
    created_at: UtcDateTime
    started_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None
    created_by: str
    inputs_digest: str
    funders_version: int | None = None
    parent_id: str | None = Field(None, description="the base plan of a what-if")
    overrides: dict[str, Any] | None = None
    loan_count: int = 0
    objective: float | None = None
    summary: dict[str, Any] | None = Field(None, description="plan.json of the contract")
    difference: dict[str, Any] | None = Field(None, description="a what-if's difference from its base")
    error: dict[str, Any] | None = None
    attempts: int = 0
    existing: bool = Field(False, description="true when the same inputs returned an existing plan")
    job: JobOut | None = None


class PlanList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[PlanOut]


class TablePage(BaseModel):
    plan_id: str
    total: int
    offset: int
    limit: int
    items: list[dict[str, Any]]


class WhatIfIn(BaseModel):
    """Overrides to a base plan's terms and volumes. Any funders-contract field can be replaced."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"funders": {"bank_a": {"daily_max": 80000000}}, "platform": {"daily_capacity": 600000000},
         "remove": ["trust_1"], "scale": 1.2, "label": "bank_a cut, 20% volume spike"}]})

    funders: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per funder id, fields to replace")
    platform: dict[str, Any] = Field(default_factory=dict, description="platform fields to replace")
    remove: list[str] = Field(default_factory=list, description="funder ids to drop")
    add: list[dict[str, Any]] = Field(default_factory=list, description="whole new funders (contract form)")
    scale: float | None = Field(None, gt=0, le=100, description="multiply every loan's principal")
    label: str = Field("", max_length=200)
    wait: bool = Field(True, description="answer 201 with the plan when it is solved within the sync wait")


class FundersIn(BaseModel):
    """A new version of the funders' terms."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"label": "November terms", "effective_date": "2026-11-01",
         "document": {"platform": {"id": "platform", "cost_of_capital": 0.12},
                      "funders": [{"id": "bank_a", "kind": "bank", "funding_share": 0.7,
                                   "cost_of_funds": 0.045, "daily_max": 500000000}]}}]})

    label: str = Field("", max_length=200)
    effective_date: dt.date | None = None
    document: dict[str, Any] = Field(description="the funders document of the contract (YAML structure as JSON)")


class FundersOut(BaseModel):
    id: int
    label: str
    effective_date: dt.date | None
    digest: str
    created_at: UtcDateTime
    created_by: str
    document: dict[str, Any] | None = None


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(pattern="^(viewer|planner|admin)$", examples=["viewer"])
    label: str = Field("", max_length=200)


class KeyOut(BaseModel):
    id: str
    role: str
    label: str
    created_at: UtcDateTime | None = None
    revoked_at: UtcDateTime | None = None
    secret: str | None = Field(None, description="shown once, at creation")


class AuditOut(BaseModel):
    id: int
    at: UtcDateTime
    actor: str
    role: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any] | None = None
