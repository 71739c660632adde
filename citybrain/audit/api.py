"""Audit API: search and verification, for the auditor (审计管理员) only."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from citybrain.audit import service
from citybrain.audit.schemas import AuditPage, AuditRecordOut, VerifyResult
from citybrain.context import Principal
from citybrain.deps import ReadDB, require

router = APIRouter(prefix="/api/v1/audit", tags=["audit 安全审计"])


@router.get("", response_model=AuditPage, summary="检索审计日志 Search the audit trail")
def search(
    db: ReadDB,
    _who: Principal = Depends(require("audit.read")),
    actor: str | None = Query(default=None, max_length=120, description="`user:operator` or a bare name"),
    action: str | None = Query(default=None, max_length=80, description="exact, or with * wildcards"),
    target_type: str | None = Query(default=None, max_length=60),
    target_id: str | None = Query(default=None, max_length=80),
    outcome: Literal["success", "failure", "denied"] | None = None,
    org_id: int | None = Query(default=None, ge=0, le=2**31 - 1),
    request_id: str | None = Query(default=None, max_length=64),
    since: AwareDatetime | None = Query(default=None, description="from this time (inclusive), with a UTC offset"),
    until: AwareDatetime | None = Query(default=None, description="before this time (exclusive)"),
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10_000_000),
) -> AuditPage:
    total, rows = service.search(db, actor=actor, action=action, target_type=target_type, target_id=target_id,
                                 outcome=outcome, org_id=org_id, request_id=request_id,
                                 since=since, until=until, limit=limit, offset=offset)
    return AuditPage(total=total, items=[AuditRecordOut.model_validate(r) for r in rows])


@router.get("/verify", response_model=VerifyResult, summary="校验审计链 Verify the hash chain")
def verify(_who: Principal = Depends(require("audit.read"))) -> VerifyResult:
    return VerifyResult(**service.verify())

