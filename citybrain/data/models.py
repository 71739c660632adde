"""Data hub tables: the catalogue, the base databases (基础库), loads and their rejects, sharing requests and
grants, the exchange log and its daily statistics."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Date,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db import Base, JSONType, UTCDateTime, utcnow

# --- catalogue (政务信息资源目录) -----------------------------------------------------------------------------------


class Resource(Base):
    """A catalogue entry (信息资源) with its core metadata; `version` grows on every change."""

    __tablename__ = "data_resource"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(60), unique=True)  # 信息资源代码 (分类码 + 顺序码)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200), nullable=True)
    classification: Mapped[str] = mapped_column(String(10), index=True)  # base | theme | department
    category: Mapped[str] = mapped_column(String(60))  # 类/项/目/细目, e.g. "1-01-001" or 人口
    provider_org_id: Mapped[int] = mapped_column(Integer, index=True)
    provider_code: Mapped[str] = mapped_column(String(40))
    summary: Mapped[str] = mapped_column(Text, default="")
    format: Mapped[str] = mapped_column(String(20), default="database")  # database | file | api ...
    items: Mapped[list] = mapped_column(JSONType)  # [{name,label,type,grade,mask,rules...}]
    key_field: Mapped[str] = mapped_column(String(60))
    update_cycle: Mapped[str] = mapped_column(String(20), default="daily")
    share_type: Mapped[str] = mapped_column(String(20), index=True)  # unconditional | conditional | none
    share_condition: Mapped[str | None] = mapped_column(Text, nullable=True)
    legal_basis: Mapped[str | None] = mapped_column(Text, nullable=True)
    share_methods: Mapped[list] = mapped_column(JSONType)  # ["api", "file", "subscription"]
    open_type: Mapped[str] = mapped_column(String(20), index=True)  # open | conditional | closed
    base_table: Mapped[str | None] = mapped_column(String(30), nullable=True)  # population ... or None (records)
    related_codes: Mapped[list] = mapped_column(JSONType, default=list)
    tags: Mapped[list] = mapped_column(JSONType, default=list)
    secret: Mapped[bool] = mapped_column(default=False)  # 涉密 (never shared through the platform)
    status: Mapped[str] = mapped_column(String(12), default="published", index=True)  # draft|published|retired
    version: Mapped[int] = mapped_column(Integer, default=1)
    search_text: Mapped[str] = mapped_column(Text, default="")
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ResourceVersion(Base):
    """A snapshot of a resource's metadata at one version."""

    __tablename__ = "data_resource_version"
    __table_args__ = (UniqueConstraint("resource_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[int] = mapped_column(Integer, index=True)
    version: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[dict] = mapped_column(JSONType)
    changed_by: Mapped[str] = mapped_column(String(100))
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Counter(Base):
    """Change sequences of the base databases (cursor for incremental pulls)."""

    __tablename__ = "data_counter"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


# --- base databases (基础库) ---------------------------------------------------------------------------------------


class Population(Base):
    """人口基础库: one row per person, keyed by 公民身份号码."""

    __tablename__ = "data_population"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    id_number: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(50))
    gender: Mapped[str] = mapped_column(String(2))
    birth_date: Mapped[dt.date] = mapped_column(Date)
    ethnicity: Mapped[str | None] = mapped_column(String(20), nullable=True)
    household_address: Mapped[str | None] = mapped_column(String(200), nullable=True)
    residence_address: Mapped[str | None] = mapped_column(String(200), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(20), nullable=True)
    area_code: Mapped[str | None] = mapped_column(String(12), nullable=True, index=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    load_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class LegalEntity(Base):
    """法人单位基础库: one row per entity, keyed by 统一社会信用代码."""

    __tablename__ = "data_legal_entity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    credit_code: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    entity_type: Mapped[str | None] = mapped_column(String(40), nullable=True)
    legal_rep: Mapped[str | None] = mapped_column(String(50), nullable=True)
    registration_authority: Mapped[str | None] = mapped_column(String(100), nullable=True)
    established_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    registered_capital: Mapped[float | None] = mapped_column(Float, nullable=True)  # 万元
    business_scope: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(200), nullable=True)
    area_code: Mapped[str | None] = mapped_column(String(12), nullable=True, index=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    load_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Place(Base):
    """自然资源和空间地理基础库: standard place names and addresses (地名地址) and POI."""

    __tablename__ = "data_place"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # 地名 | 地址 | POI
    category: Mapped[str | None] = mapped_column(String(40), nullable=True)
    address: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    area_code: Mapped[str | None] = mapped_column(String(12), nullable=True, index=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    load_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Indicator(Base):
    """宏观经济基础库: one value of an indicator series for an area and period."""

    __tablename__ = "data_indicator"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_key: Mapped[str] = mapped_column(String(80), unique=True)  # indicator|area|period
    indicator_code: Mapped[str] = mapped_column(String(30), index=True)
    indicator_name: Mapped[str] = mapped_column(String(100))
    area_code: Mapped[str] = mapped_column(String(12))
    period: Mapped[str] = mapped_column(String(10))  # 2025 | 2025Q1 | 2025-03
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(20), nullable=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    load_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Licence(Base):
    """电子证照库: one licence or certificate, keyed by its number."""

    __tablename__ = "data_licence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    licence_no: Mapped[str] = mapped_column(String(64), unique=True)
    licence_type: Mapped[str] = mapped_column(String(60), index=True)
    holder_name: Mapped[str] = mapped_column(String(200))
    holder_id: Mapped[str] = mapped_column(String(18), index=True)  # ID number or credit code
    issuer: Mapped[str] = mapped_column(String(100))
    issued_on: Mapped[dt.date] = mapped_column(Date)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    status: Mapped[str] = mapped_column(String(10))
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    load_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Record(Base):
    """Rows of a departmental (non-base) resource, stored as JSON under the resource's key."""

    __tablename__ = "data_record"
    __table_args__ = (UniqueConstraint("resource_id", "record_key"),
                      Index("ix_data_record_resource_seq", "resource_id", "seq"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[int] = mapped_column(Integer)
    record_key: Mapped[str] = mapped_column(String(128))
    data: Mapped[dict] = mapped_column(JSONType)
    seq: Mapped[int] = mapped_column(BigInteger)
    load_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


# --- collection (归集) ---------------------------------------------------------------------------------------------


class Load(Base):
    """One load (归集批次) with its quality report."""

    __tablename__ = "data_load"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[int] = mapped_column(Integer, index=True)
    provider_org_id: Mapped[int] = mapped_column(Integer, index=True)
    source: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(12), default="running")  # running | done | failed
    total: Mapped[int] = mapped_column(Integer, default=0)
    inserted: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict] = mapped_column(JSONType, default=dict)
    actor: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Reject(Base):
    """A row a load refused, kept aside with its reasons."""

    __tablename__ = "data_reject"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    load_id: Mapped[int] = mapped_column(Integer, index=True)
    row_no: Mapped[int] = mapped_column(Integer)
    record: Mapped[dict] = mapped_column(JSONType)
    reasons: Mapped[list] = mapped_column(JSONType)


# --- sharing (共享) --------------------------------------------------------------------------------------------------


class ShareRequest(Base):
    """A consumer department's request for a resource (申请)."""

    __tablename__ = "data_request"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[int] = mapped_column(Integer, index=True)
    resource_code: Mapped[str] = mapped_column(String(60))
    consumer_org_id: Mapped[int] = mapped_column(Integer, index=True)
    provider_org_id: Mapped[int] = mapped_column(Integer, index=True)
    fields: Mapped[list] = mapped_column(JSONType)
    unmasked_fields: Mapped[list] = mapped_column(JSONType, default=list)
    purpose: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str | None] = mapped_column(Text, nullable=True)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(12), index=True)  # pending | approved | refused | withdrawn
    due_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)  # answer deadline (working days)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Grant(Base):
    """Permission for a consumer department to query named fields of a resource until `valid_to`."""

    __tablename__ = "data_grant"
    __table_args__ = (Index("ix_data_grant_lookup", "resource_id", "consumer_org_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resource_id: Mapped[int] = mapped_column(Integer)
    consumer_org_id: Mapped[int] = mapped_column(Integer, index=True)
    provider_org_id: Mapped[int] = mapped_column(Integer)
    fields: Mapped[list] = mapped_column(JSONType)
    unmasked_fields: Mapped[list] = mapped_column(JSONType, default=list)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(12), default="active")  # active | expired | revoked
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


# --- exchange (交换) ---------------------------------------------------------------------------------------------


class ExchangeLog(Base):
    """One exchange call: who asked for which fields of which resource, and how many records went out."""

    __tablename__ = "data_exchange_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    consumer_org_id: Mapped[int | None] = mapped_column(Integer, index=True)
    provider_org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resource_id: Mapped[int] = mapped_column(Integer, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    op: Mapped[str] = mapped_column(String(10))  # get | query | pull | open
    fields: Mapped[str] = mapped_column(Text)  # comma-separated
    unmasked: Mapped[str] = mapped_column(Text, default="")  # fields sent in clear
    records: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ExchangeDaily(Base):
    """Exchange statistics per day, consumer department and resource."""

    __tablename__ = "data_exchange_daily"
    __table_args__ = (UniqueConstraint("day", "consumer_org_id", "resource_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, index=True)
    consumer_org_id: Mapped[int] = mapped_column(Integer)
    provider_org_id: Mapped[int] = mapped_column(Integer)
    resource_id: Mapped[int] = mapped_column(Integer)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    records: Mapped[int] = mapped_column(BigInteger, default=0)


class RateBucket(Base):
    """The token bucket of one caller (`apikey:12`, `user:3`): shared by every server process, updated in
    the exchange log's transaction."""

    __tablename__ = "data_rate_bucket"

    subject: Mapped[str] = mapped_column(String(60), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    at_s: Mapped[float] = mapped_column(Float)  # UTC epoch seconds of the last update


class Tombstone(Base):
    """A deleted record: its key and the change number of the deletion (the change feed carries it)."""

    __tablename__ = "data_tombstone"
    __table_args__ = (Index("ix_data_tombstone_feed", "feed", "resource_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feed: Mapped[str] = mapped_column(String(30))  # the change sequence: a base table's name, or "record"
    resource_id: Mapped[int] = mapped_column(Integer)  # the resource deleted through (base tables: any)
    key: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(100))
    deleted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- open data (开放) ----------------------------------------------------------------------------------------------


class OpenApplication(Base):
    """An application for a key to a conditionally open resource (有条件开放): pending until the provider
    approves or refuses it; an approved applicant collects the key once with the ticket given at applying."""

    __tablename__ = "data_open_application"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[int] = mapped_column(Integer, index=True)
    provider_org_id: Mapped[int] = mapped_column(Integer, index=True)
    applicant: Mapped[str] = mapped_column(String(100))
    contact: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(Text)
    ticket_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), index=True)  # pending | approved | refused | issued
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
