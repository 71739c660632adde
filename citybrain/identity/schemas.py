"""Identity API schemas."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=60)
    password: str = Field(min_length=1, max_length=200)
    grant_type: str | None = Field(default=None, pattern="^password$", description="OAuth2: `password` if sent")


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the session ends at the latest")
    idle_timeout: int = Field(description="Seconds of inactivity after which the session ends")


class OrgIn(BaseModel):
    code: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=100)
    name_en: str | None = Field(default=None, max_length=160)
    type: Literal["district", "department", "town", "community", "external"] = Field(
        description="district 区政府 | department 委办局 | town 镇街 | community 社区/村 | external 外部单位")
    parent_id: int | None = None
    division_code: str | None = Field(default=None, pattern=r"^\d{6}(\d{3})?(\d{3})?$")
    credit_code: str | None = Field(default=None, max_length=18)


class OrgPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    name_en: str | None = Field(default=None, max_length=160)
    active: bool | None = None


class OrgOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    code: str
    name: str
    name_en: str | None
    type: str
    parent_id: int | None
    division_code: str | None
    active: bool


class UserIn(BaseModel):
    username: str = Field(min_length=2, max_length=60)
    real_name: str = Field(min_length=1, max_length=60)
    password: str = Field(min_length=1, max_length=200)
    org_id: int | None = None
    phone: str | None = Field(default=None, pattern=r"^\+?\d{5,20}$")


class UserPatch(BaseModel):
    real_name: str | None = Field(default=None, min_length=1, max_length=60)
    phone: str | None = Field(default=None, pattern=r"^\+?\d{5,20}$")
    org_id: int | None = None
    active: bool | None = None


class UserOut(BaseModel):
    id: int
    username: str
    real_name: str
    phone: str | None = Field(description="masked")
    org_id: int | None
    active: bool
    locked_until: dt.datetime | None = None
    last_login_at: dt.datetime | None = None
    roles: list[str] = []


class UserPage(BaseModel):
    total: int
    items: list[UserOut]


class RolesIn(BaseModel):
    roles: list[str] = Field(max_length=20)


class PasswordIn(BaseModel):
    password: str = Field(min_length=1, max_length=200)
    old_password: str | None = Field(default=None, max_length=200)


class MeOut(BaseModel):
    id: int | None
    kind: str
    username: str
    real_name: str | None = None
    org_id: int | None
    org_name: str | None = None
    roles: list[str]
    permissions: list[str]
    city_wide: bool


class RoleIn(BaseModel):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]{1,39}$")
    name: str = Field(min_length=1, max_length=60)
    name_en: str = Field(min_length=1, max_length=80)
    city_wide: bool = False
    permissions: list[str] = Field(default_factory=list, max_length=200)


class RoleOut(BaseModel):
    code: str
    name: str
    name_en: str
    city_wide: bool
    builtin: bool
    permissions: list[str]


class PermissionsIn(BaseModel):
    permissions: list[str] = Field(max_length=200)


class PermissionOut(BaseModel):
    code: str
    name: str
    name_en: str


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    kind: str = Field(default="consumer", pattern=r"^(consumer|gateway|device|system)$")
    org_id: int | None = None
    scopes: list[str] = Field(min_length=1, max_length=50)
    subject: str | None = Field(default=None, max_length=80)
    expires_at: AwareDatetime | None = None


class ApiKeyOut(BaseModel):
    id: int
    prefix: str
    name: str
    kind: str
    org_id: int | None
    scopes: list[str]
    subject: str | None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The full key. It is shown only this once.")
