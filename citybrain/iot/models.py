"""IoT tables: devices, readings (time series), latest values, dead letters, rules, rule state and alarms.

Readings are stored one row per device message: (device_id, ts) with `ts` in epoch milliseconds and `vals` =
the properties reported at that moment as a JSON object (`{"pm25": 35.0, "pm10": 60.0}`; numbers and bools as
numbers, enums and strings as strings). An air station's 4 properties are one row, not four. Appends and
time-range scans per device walk one B-tree (SQLite WITHOUT ROWID), and the key plus a merge on conflict (the
stored value of a property wins) makes a repeated reading idempotent per property.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db import Base, JSONType, UTCDateTime, utcnow

BigInt = BigInteger().with_variant(Integer, "sqlite")
ValsType = JSON()  # SQLite: JSON text; PostgreSQL: json (cheaper to write than jsonb; merged as jsonb)


class Device(Base):
    """A registered device: unified code, model, owner department, location and grid, status, credential."""

    __tablename__ = "iot_device"
    __table_args__ = (Index("ix_iot_device_org_status", "org_id", "status"),)  # scoped counts for the IOC

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    model_code: Mapped[str] = mapped_column(String(40), index=True)
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # owner department
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    address: Mapped[str | None] = mapped_column(String(200), nullable=True)
    grid_code: Mapped[str | None] = mapped_column(String(20), nullable=True, index=True)
    community_code: Mapped[str | None] = mapped_column(String(12), nullable=True, index=True)
    town_code: Mapped[str | None] = mapped_column(String(9), nullable=True, index=True)
    district_code: Mapped[str | None] = mapped_column(String(6), nullable=True)
    status: Mapped[str] = mapped_column(String(10), default="offline", index=True)  # online|offline|disabled
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    secret_rotated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    rejected_count: Mapped[int] = mapped_column(BigInteger, default=0)
    # newest value of each property: {"prop": [ts_ms, value]}, written with the readings in one transaction
    latest: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    installed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Reading(Base):
    """The properties one device reported at one time (ts in epoch ms): `vals` = {prop: number | string}.

    SQLite (iot_0005): keyed by (ts, device_id) so a batch's rows append at the table's right edge, with the
    index ix_iot_reading_device_ts (device_id, ts) for a device's time range. PostgreSQL: key (device_id, ts),
    a heap partitioned by ts (iot_0004)."""

    __tablename__ = "iot_reading"
    __table_args__ = {"sqlite_with_rowid": False}

    device_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vals: Mapped[dict[str, Any]] = mapped_column(ValsType)


class DeadLetter(Base):
    """A rejected reading (or unreadable message) kept with the reason."""

    __tablename__ = "iot_dead_letter"
    __table_args__ = (Index("ix_iot_dead_letter_device_reason", "device_code", "reason"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    device_code: Mapped[str | None] = mapped_column(String(80), nullable=True)
    device_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prop: Mapped[str | None] = mapped_column(String(80), nullable=True)
    ts: Mapped[str | None] = mapped_column(String(64), nullable=True)
    value: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON of what was sent
    reason: Mapped[str] = mapped_column(String(40), index=True)
    detail: Mapped[str | None] = mapped_column(String(300), nullable=True)
    source: Mapped[str] = mapped_column(String(20))  # http | mqtt
    sender: Mapped[str | None] = mapped_column(String(120), nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Rule(Base):
    """An alarm rule on one property of every device of a model (or of one device)."""

    __tablename__ = "iot_rule"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str | None] = mapped_column(String(60), nullable=True)  # default rules: "<model>.<rule>"
    name: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(160))
    model_code: Mapped[str] = mapped_column(String(40), index=True)
    device_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    property: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(12))  # threshold | duration | rate | nodata
    op: Mapped[str] = mapped_column(String(8), default=">")  # > | < | between | outside
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold2: Mapped[float | None] = mapped_column(Float, nullable=True)
    duration_s: Mapped[int] = mapped_column(Integer, default=0)
    hysteresis: Mapped[float] = mapped_column(Float, default=0.0)
    severity: Mapped[int] = mapped_column(Integer, default=1)
    category_hint: Mapped[str | None] = mapped_column(String(20), nullable=True)
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # who manages it; None = platform default
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RuleState(Base):
    """Per rule and device: since when a duration condition holds (epoch ms), kept across restarts."""

    __tablename__ = "iot_rule_state"

    rule_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    since_ts: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Alarm(Base):
    """An alarm: active -> acknowledged -> cleared. `open_key` is unique while open: one per device and rule."""

    __tablename__ = "iot_alarm"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    open_key: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True)
    rule_id: Mapped[int] = mapped_column(Integer, index=True)
    device_id: Mapped[int] = mapped_column(Integer, index=True)
    device_code: Mapped[str] = mapped_column(String(40))
    model_code: Mapped[str] = mapped_column(String(40))
    rule_name: Mapped[str] = mapped_column(String(100))
    rule_name_en: Mapped[str] = mapped_column(String(160))
    severity: Mapped[int] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(12), default="active", index=True)
    property: Mapped[str] = mapped_column(String(40))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    count: Mapped[int] = mapped_column(Integer, default=1)  # triggering readings while open (no alarm flood)
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    grid_code: Mapped[str | None] = mapped_column(String(20), nullable=True, index=True)
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    message_zh: Mapped[str] = mapped_column(String(300))
    message_en: Mapped[str] = mapped_column(String(400))
    category_hint: Mapped[str | None] = mapped_column(String(20), nullable=True)
    raised_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    reading_ts: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    acked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acked_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    ack_note: Mapped[str | None] = mapped_column(String(300), nullable=True)
    cleared_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cleared_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    clear_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class DailyCount(Base):
    """Readings accepted and rejected per day (China Standard Time), for the operations centre."""

    __tablename__ = "iot_daily_count"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD in UTC+8
    accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    rejected: Mapped[int] = mapped_column(BigInteger, default=0)
