"""Identity tables: organisations, users, roles and grants, login sessions, API keys."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db import Base, JSONType, UTCDateTime, utcnow

ORG_TYPES = ("district", "department", "town", "community", "external")


class Org(Base):
    """An organisation in the tree: district government -> departments / towns -> communities."""

    __tablename__ = "identity_org"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)  # division code for areas, else own code
    name: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str | None] = mapped_column(String(160), nullable=True)
    type: Mapped[str] = mapped_column(String(20), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("identity_org.id"), nullable=True, index=True)
    path: Mapped[str] = mapped_column(String(400), index=True)  # "/1/5/12/" materialised ancestry
    division_code: Mapped[str | None] = mapped_column(String(12), nullable=True, index=True)
    credit_code: Mapped[str | None] = mapped_column(String(18), nullable=True)  # 统一社会信用代码
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "identity_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(60), unique=True)
    real_name: Mapped[str] = mapped_column(String(60))
    phone: Mapped[str | None] = mapped_column(String(20), nullable=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("identity_org.id"), nullable=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    password_changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    language: Mapped[str] = mapped_column(String(8), default="zh-CN")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Role(Base):
    __tablename__ = "identity_role"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(60))
    name_en: Mapped[str] = mapped_column(String(80))
    city_wide: Mapped[bool] = mapped_column(Boolean, default=False)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)


class Permission(Base):
    """A permission code this installation knows (so newly shipped ones reach built-in roles once)."""

    __tablename__ = "identity_permission"

    code: Mapped[str] = mapped_column(String(60), primary_key=True)


class RolePermission(Base):
    __tablename__ = "identity_role_permission"

    role_id: Mapped[int] = mapped_column(ForeignKey("identity_role.id", ondelete="CASCADE"), primary_key=True)
    permission: Mapped[str] = mapped_column(String(60), primary_key=True)


class UserRole(Base):
    __tablename__ = "identity_user_role"

    user_id: Mapped[int] = mapped_column(ForeignKey("identity_user.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("identity_role.id", ondelete="CASCADE"), primary_key=True)


class AuthSession(Base):
    """A login: an opaque bearer token, stored only as its SHA-256."""

    __tablename__ = "identity_session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("identity_user.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ApiKey(Base):
    """A machine credential: `cbk_<prefix>_<secret>`, secret stored as SHA-256, scoped to permissions."""

    __tablename__ = "identity_api_key"
    __table_args__ = (UniqueConstraint("prefix"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20), default="consumer")  # consumer | gateway | device | system
    org_id: Mapped[int | None] = mapped_column(ForeignKey("identity_org.id"), nullable=True)
    scopes: Mapped[list] = mapped_column(JSONType, default=list)
    subject: Mapped[str | None] = mapped_column(String(80), nullable=True)  # e.g. a gateway or consumer id
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
