"""Cases tables: dictionaries and categories, responsibility matrix, cases and their log, extensions,
supervisions, notifications, hotspots, configuration. Organisation ids are plain columns (no cross-module FK)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db import Base, JSONType, UTCDateTime, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


class Dictionary(Base):
    """A versioned classification dictionary (CJ/T 214, GB/T 47678.5, 12345 types); one active per kind family."""

    __tablename__ = "cases_dictionary"

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200), nullable=True)
    standard_ref: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(20))
    family: Mapped[str] = mapped_column(String(20), default="urban")  # urban | hotline
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    loaded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Category(Base):
    """One class of a dictionary with its 立案条件, time limit, default department and 结案条件."""

    __tablename__ = "cases_category"
    __table_args__ = (UniqueConstraint("dictionary_code", "kind", "code", name="uq_cases_category_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dictionary_code: Mapped[str] = mapped_column(ForeignKey("cases_dictionary.code"), index=True)
    kind: Mapped[str] = mapped_column(String(12))  # component | event | hotline
    code: Mapped[str] = mapped_column(String(12), index=True)
    name: Mapped[str] = mapped_column(String(100))
    big_code: Mapped[str] = mapped_column(String(8))
    big_name: Mapped[str] = mapped_column(String(60))
    standard_ref: Mapped[str] = mapped_column(String(200))
    filing_condition: Mapped[str] = mapped_column(Text, default="")
    closing_condition: Mapped[str] = mapped_column(Text, default="")
    limit_value: Mapped[float] = mapped_column(Float)
    limit_unit: Mapped[str] = mapped_column(String(12))  # work_hours | work_days | hours (continuous clock)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    default_dept: Mapped[str | None] = mapped_column(String(40), nullable=True)  # short name, see cases_dept_alias
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeptAlias(Base):
    """Maps a category's default-department short name (e.g. "城管") to this deployment's organisation."""

    __tablename__ = "cases_dept_alias"

    short: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[int] = mapped_column(Integer)


class Responsibility(Base):
    """权责清单: (category, area or grid) -> responsible department (optionally a unit under a town)."""

    __tablename__ = "cases_responsibility"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_code: Mapped[str | None] = mapped_column(String(12), nullable=True, index=True)  # None: any
    big_code: Mapped[str | None] = mapped_column(String(8), nullable=True)  # match a whole big class
    area_code: Mapped[str | None] = mapped_column(String(20), nullable=True)  # district/town/community/grid
    dept_org_id: Mapped[int] = mapped_column(Integer)
    unit_org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Case(Base):
    """A case (案件 / 工单) from any channel, through its whole life."""

    __tablename__ = "cases_case"
    __table_args__ = (
        # Every index costs each intake a B-tree write: the compound ones serve the list filters (and the
        # evaluation by report date); columns that are mostly empty for new cases get partial indexes, which
        # a new case does not touch (overdue, closed, device alarms, assignment, own reports).
        Index("ix_cases_case_status_reported", "status", "reported_at"),
        Index("ix_cases_case_status_lon_lat", "status", "lon", "lat"),
        Index("ix_cases_case_dept_status", "dept_org_id", "status", "reported_at"),
        Index("ix_cases_case_grid_reported", "grid_code", "reported_at"),
        Index("ix_cases_case_category_reported", "category_code", "reported_at"),
        Index("ix_cases_case_community", "community_org_id", "reported_at"),
        Index("ix_cases_case_status_closed", "status", "closed_at", sqlite_where=text("closed_at IS NOT NULL"),
              postgresql_where=text("closed_at IS NOT NULL")),
        Index("ix_cases_case_overdue", "status", "reported_at", sqlite_where=text("overdue IS 1"),
              postgresql_where=text("overdue IS true")),
        Index("ix_cases_case_device_rule", "device_code", "rule_id", sqlite_where=text("device_code IS NOT NULL"),
              postgresql_where=text("device_code IS NOT NULL")),
        Index("ix_cases_case_reporter", "reporter_user_id", sqlite_where=text("reporter_user_id IS NOT NULL"),
              postgresql_where=text("reporter_user_id IS NOT NULL")),
        Index("ix_cases_case_assignee", "assignee_user_id", "status",
              sqlite_where=text("assignee_user_id IS NOT NULL"), postgresql_where=text("assignee_user_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket: Mapped[str | None] = mapped_column(String(24), unique=True, nullable=True)
    source: Mapped[str] = mapped_column(String(12))  # patrol hotline web iot video superior api
    external_ref: Mapped[str | None] = mapped_column(String(120), nullable=True, unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    dictionary_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    category_kind: Mapped[str | None] = mapped_column(String(12), nullable=True)
    category_code: Mapped[str | None] = mapped_column(String(12), nullable=True)
    category_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    hotline_type: Mapped[str | None] = mapped_column(String(12), nullable=True)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    address: Mapped[str | None] = mapped_column(String(300), nullable=True)
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    grid_code: Mapped[str | None] = mapped_column(String(20), nullable=True)
    community_code: Mapped[str | None] = mapped_column(String(12), nullable=True)
    town_code: Mapped[str | None] = mapped_column(String(9), nullable=True, index=True)
    community_org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    town_org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str | None] = mapped_column(String(16), nullable=True)  # manual: waits for a dispatcher
    dept_org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    unit_org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reporter_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    assignee_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the named handler (指派)
    assignee_name: Mapped[str | None] = mapped_column(String(60), nullable=True)
    assigned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reporter_name: Mapped[str | None] = mapped_column(String(60), nullable=True)
    reporter_phone: Mapped[str | None] = mapped_column(String(20), nullable=True)
    photos: Mapped[list | None] = mapped_column(JSONType, nullable=True)
    limit_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    limit_unit: Mapped[str | None] = mapped_column(String(12), nullable=True)
    reported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    filed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deadline_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    warn_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    handled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspended_minutes: Mapped[float | None] = mapped_column(Float, nullable=True)  # working minutes left
    dispatched_on_time: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    handled_on_time: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    verify_on_time: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    verified_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    warned: Mapped[bool] = mapped_column(Boolean, default=False)
    overdue: Mapped[bool] = mapped_column(Boolean, default=False)
    supervision_level: Mapped[int] = mapped_column(Integer, default=0)  # 1 催办 2 督办 3 挂牌督办
    rework_count: Mapped[int] = mapped_column(Integer, default=0)
    return_count: Mapped[int] = mapped_column(Integer, default=0)
    extension_count: Mapped[int] = mapped_column(Integer, default=0)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    merged_into_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    device_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rule_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    alarm_ids: Mapped[list | None] = mapped_column(JSONType, nullable=True)
    repeat_count: Mapped[int] = mapped_column(Integer, default=0)
    public_reply: Mapped[str | None] = mapped_column(Text, nullable=True)
    rating: Mapped[str | None] = mapped_column(String(12), nullable=True)  # satisfied | basic | dissatisfied
    rating_contacted: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    rating_resolved: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    rated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CaseEvent(Base):
    """One step of a case's life: a transition or note, with actor, time, comment and attachments."""

    __tablename__ = "cases_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(BigId, index=True)
    action: Mapped[str] = mapped_column(String(24))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    actor: Mapped[str] = mapped_column(String(120))
    actor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor_org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    attachments: Mapped[list | None] = mapped_column(JSONType, nullable=True)
    data: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Extension(Base):
    """延期申请: requested by the department, approved or refused by the centre."""

    __tablename__ = "cases_extension"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(BigId, index=True)
    reason: Mapped[str] = mapped_column(Text)
    extra_value: Mapped[float] = mapped_column(Float)
    extra_unit: Mapped[str] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending approved refused
    requested_by: Mapped[str] = mapped_column(String(120))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision_comment: Mapped[str | None] = mapped_column(Text, nullable=True)


class Supervision(Base):
    """督办: 催办 (1) -> 督办 (2) -> 挂牌督办 (3), automatic on overdue or raised by leaders."""

    __tablename__ = "cases_supervision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(BigId, index=True)
    level: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    auto: Mapped[bool] = mapped_column(Boolean, default=False)
    raised_by: Mapped[str] = mapped_column(String(120))
    dept_org_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Notification(Base):
    """An inbox item for a user or a whole organisation (new task, deadline warning, supervision...)."""

    __tablename__ = "cases_notification"
    __table_args__ = (Index("ix_cases_notification_org", "org_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    case_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    kind: Mapped[str] = mapped_column(String(24))
    title_zh: Mapped[str] = mapped_column(String(300))
    title_en: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    read_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    read_by: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Hotspot(Base):
    """未诉先办: N same-category cases within R metres and T hours, flagged to the command centre."""

    __tablename__ = "cases_hotspot"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_code: Mapped[str] = mapped_column(String(12))
    category_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    grid_code: Mapped[str | None] = mapped_column(String(20), nullable=True)
    count: Mapped[int] = mapped_column(Integer)
    case_ids: Mapped[list] = mapped_column(JSONType)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Config(Base):
    """Deployment configuration of case work (calendar, office hours, evaluation weights, rules)."""

    __tablename__ = "cases_config"

    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[dict] = mapped_column(JSONType)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RateBucket(Base):
    """A token bucket of the citizen endpoints' rate limits (`ip:<address>` or `phone:<number>`), shared by every
    worker process; a bucket older than its window is full again and may be deleted."""

    __tablename__ = "cases_rate_bucket"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    at_s: Mapped[float] = mapped_column(Float, index=True)  # UTC epoch seconds of the last take
