"""Audit trail schemas."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditRecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: dt.datetime
    actor: str
    org_id: int | None
    action: str
    target_type: str
    target_id: str | None
    outcome: str
    ip: str | None
    request_id: str | None
    summary: dict[str, Any]
    hash: str


class AuditPage(BaseModel):
    total: int
    items: list[AuditRecordOut]


class VerifyResult(BaseModel):
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
