"""Request and response models of the cases API."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Source = Literal["patrol", "hotline", "video", "superior", "api"]
Satisfaction = Literal["satisfied", "basic", "dissatisfied"]

# A photo or attachment is the address of a file uploaded to this system (POST /api/v1/attachments answers it
# as `url`: the path and the file's SHA-256). Anything else — another host, `//host/...`, a data: URL — would
# make the staff's browsers fetch it when they open the case.
ATTACHMENT_URL = re.compile(r"/api/v1/attachments/[0-9a-f]{64}")


def _own_attachment(value: str) -> str:
    if not ATTACHMENT_URL.fullmatch(value):
        raise ValueError("照片/附件须为本系统上传的附件地址（POST /api/v1/attachments 返回的 url）; "
                         "must be the url of a file uploaded with POST /api/v1/attachments")
    return value


AttachmentUrl = Annotated[str, Field(max_length=100, json_schema_extra={"pattern": "^" + ATTACHMENT_URL.pattern + "$"},
                                      description="url answered by POST /api/v1/attachments"),
                          AfterValidator(_own_attachment)]


class CaseIn(BaseModel):
    """A case reported by a grid worker, a 12345 operator, a video-analysis system, a superior or another system."""

    model_config = ConfigDict(extra="forbid")
    source: Source
    title: str = Field(min_length=2, max_length=200)
    description: str = Field(default="", max_length=5000)
    category_code: str | None = Field(default=None, max_length=12, description="class code in the active dictionary")
    category_kind: Literal["component", "event"] | None = None
    hotline_type: str | None = Field(default=None, max_length=4, description="12345: 01 咨询 … 05 建议")
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)
    address: str | None = Field(default=None, max_length=300)
    grid_code: str | None = Field(default=None, max_length=20, pattern=r"^\d{14,15}$")
    reporter_name: str | None = Field(default=None, max_length=60)
    reporter_phone: str | None = Field(default=None, pattern=r"^1[3-9]\d{9}$|^0\d{2,3}-?\d{7,8}$")
    photos: list[AttachmentUrl] = Field(default_factory=list, max_length=20)
    external_ref: str | None = Field(default=None, max_length=120, description="idempotency key of the sender")
    urgent: bool | None = None
    auto_file: bool | None = Field(default=None, description="file (and dispatch) at once; default by source")
    dept_org_id: int | None = Field(default=None, description="assign to this department (上级交办)")


class CaseBatchIn(BaseModel):
    """Many cases at once (12345 platform sync, other systems); each item as in POST /cases."""

    model_config = ConfigDict(extra="forbid")
    items: list[CaseIn] = Field(min_length=1, max_length=500)


class PublicCaseIn(BaseModel):
    """A citizen's web report (no login)."""

    model_config = ConfigDict(extra="forbid")
    phone: str = Field(pattern=r"^1[3-9]\d{9}$", description="mobile number, needed to track the case")
    name: str | None = Field(default=None, max_length=60)
    title: str = Field(min_length=2, max_length=200)
    description: str = Field(default="", max_length=5000)
    category_code: str = Field(max_length=12, description='a class of the active dictionary, or "other" (其他)')
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)
    address: str | None = Field(default=None, max_length=300)
    photos: list[AttachmentUrl] = Field(default_factory=list, max_length=9)


class TrackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ticket: str = Field(min_length=4, max_length=24)
    phone: str = Field(min_length=5, max_length=20)


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ticket: str | None = Field(default=None, max_length=24)
    phone: str | None = Field(default=None, max_length=20)
    satisfaction: Satisfaction
    resolved: bool | None = None
    contacted: bool = True
    comment: str | None = Field(default=None, max_length=1000)


class ActionIn(BaseModel):
    """Parameters of a workflow action; which ones apply depends on the action."""

    model_config = ConfigDict(extra="forbid")
    comment: str | None = Field(default=None, max_length=2000)
    attachments: list[AttachmentUrl] = Field(default_factory=list, max_length=20)
    dept_org_id: int | None = None
    unit_org_id: int | None = None
    target_case_id: int | None = None
    level: int | None = Field(default=None, ge=1, le=3)
    extra_value: float | None = Field(default=None, gt=0, le=365)
    extra_unit: Literal["work_hours", "work_days", "hours"] | None = None
    extension_id: int | None = None
    public_reply: str | None = Field(default=None, max_length=2000)
    assignee_user_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class CaseOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    ticket: str | None
    source: str
    title: str
    status: str
    status_name: str
    category_code: str | None
    category_name: str | None
    dept_org_id: int | None
    grid_code: str | None
    reported_at: dt.datetime
    deadline_at: dt.datetime | None
    overdue: bool


class CasePage(BaseModel):
    total: int
    total_capped: bool
    items: list[dict[str, Any]]


class ReportedOut(BaseModel):
    id: int
    ticket: str
    status: str
    status_name: str
    dept_org_id: int | None = None
    deadline_at: dt.datetime | None = None
    message_zh: str
    message_en: str


class CategoryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=100)
    filing_condition: str | None = Field(default=None, max_length=2000)
    closing_condition: str | None = Field(default=None, max_length=2000)
    limit_value: float | None = Field(default=None, gt=0, le=1000)
    limit_unit: Literal["work_hours", "work_days", "hours"] | None = None
    urgent: bool | None = None
    default_dept: str | None = Field(default=None, max_length=40)
    active: bool | None = None


class ResponsibilityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dept_org_id: int
    category_code: str | None = Field(default=None, max_length=12)
    big_code: str | None = Field(default=None, max_length=8)
    area_code: str | None = Field(default=None, max_length=20, pattern=r"^\d{6,15}$")
    unit_org_id: int | None = None
    note: str | None = Field(default=None, max_length=200)


class DeptAliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: int
