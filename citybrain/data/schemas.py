"""Request and response models of the data hub API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ItemIn(BaseModel):
    """A data item (信息项) of a resource; base-database items inherit the base schema's rules."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=60, description="column name, lower_snake_case")
    label: str | None = Field(None, max_length=100, description="信息项名称")
    type: str = Field("string", description="string | integer | number | date | boolean")
    grade: str | None = Field(None, description="public | internal | sensitive (敏感级别)")
    mask: str | None = Field(None, description="id_number | phone | name | address | credit_code | date | full")
    required: bool = False
    max_len: int | None = Field(None, ge=1, le=100000)
    pattern: str | None = Field(None, max_length=200)
    codes: list[str] | None = None
    check: str | None = Field(None, description="id_number | credit_code | org_code | area_code | phone")
    past: bool = False
    filterable: bool | None = None


class ResourceIn(BaseModel):
    """Catalogue metadata (核心元数据, STANDARDS.md §6.1)."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=60, description="信息资源代码")
    name: str = Field(max_length=200, description="信息资源名称")
    name_en: str | None = Field(None, max_length=200)
    classification: str = Field(description="base | theme | department")
    category: str = Field(max_length=60, description="类-项-目-细目")
    provider_code: str | None = Field(None, max_length=40, description="提供方代码 (default: your department)")
    summary: str = Field("", max_length=4000)
    format: str = Field("database", max_length=20)
    items: list[ItemIn]
    key_field: str | None = None
    update_cycle: str = "daily"
    share_type: str = Field(description="unconditional | conditional | none")
    share_condition: str | None = Field(None, max_length=2000)
    legal_basis: str | None = Field(None, max_length=2000)
    share_methods: list[str] = Field(default_factory=lambda: ["api"])
    open_type: str = Field("closed", description="open | conditional | closed")
    base_table: str | None = Field(None, description="population | legal_entity | place | indicator | licence")
    related_codes: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    secret: bool = False
    publish: bool = True


class ResourcePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    name_en: str | None = Field(None, max_length=200)
    summary: str | None = Field(None, max_length=4000)
    category: str | None = Field(None, max_length=60)
    items: list[ItemIn] | None = None
    update_cycle: str | None = None
    share_type: str | None = None
    share_condition: str | None = Field(None, max_length=2000)
    legal_basis: str | None = Field(None, max_length=2000)
    share_methods: list[str] | None = None
    open_type: str | None = None
    tags: list[str] | None = None
    related_codes: list[str] | None = None
    status: str | None = None


class RequestIn(BaseModel):
    """A sharing request (共享申请)."""

    model_config = ConfigDict(extra="forbid")

    resource_code: str = Field(max_length=60)
    fields: list[str] = Field(max_length=200)
    unmasked_fields: list[str] = Field(default_factory=list, max_length=200,
                                       description="sensitive fields asked for in clear (needs approval)")
    purpose: str = Field(max_length=2000)
    legal_basis: str | None = Field(None, max_length=2000)
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    reason: str | None = Field(None, max_length=2000)
    fields: list[str] | None = None
    unmasked_fields: list[str] | None = None
    valid_to: dt.date | None = None


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(max_length=2000)


class DeleteIn(BaseModel):
    """Records to delete by key, with the reason (kept with each tombstone and in the audit trail)."""

    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(min_length=1, max_length=10_000)
    reason: str = Field(min_length=1, max_length=2000)


class QueryIn(BaseModel):
    """An exchange query: equality filters on filterable fields, paged."""

    model_config = ConfigDict(extra="forbid")

    filters: dict[str, str] = Field(default_factory=dict)
    fields: list[str] | None = None
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(100, ge=1, le=1000)
    after: str | None = Field(None, pattern=r"^[0-9]{1,18}$",
                              description="keyset paging: the `next_after` of the previous page (then page stays 1)")


class OpenKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applicant: str = Field(max_length=100, description="申请人或单位")
    contact: str = Field(max_length=100, description="联系方式")
    purpose: str = Field(max_length=2000, description="用途")


class TicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket: str = Field(max_length=100, description="申请时给出的凭据 The ticket given when applying")


class OpenDecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    reason: str | None = Field(None, max_length=2000)


class Page(BaseModel):
    total: int
    items: list[dict[str, Any]]
