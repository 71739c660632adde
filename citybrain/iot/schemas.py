"""Request bodies of the IoT API (telemetry itself is parsed with orjson on the hot path, not here)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="设备名称")
    model: str = Field(min_length=1, max_length=40, description="物模型编码, e.g. water_level")
    org_id: int | None = Field(default=None, description="权属单位; default: your organisation")
    lon: float | None = Field(default=None, description="经度 WGS84")
    lat: float | None = Field(default=None, description="纬度 WGS84")
    address: str | None = Field(default=None, max_length=200)
    code: str | None = Field(default=None, max_length=40, description="统一编码; generated when left out")


class DevicePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    lon: float | None = None
    lat: float | None = None
    address: str | None = Field(default=None, max_length=200)
    enabled: bool | None = Field(default=None, description="false disables the device: its data is refused")
    org_id: int | None = None


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    name_en: str | None = Field(default=None, max_length=160)
    model: str = Field(min_length=1, max_length=40)
    property: str = Field(min_length=1, max_length=40)
    kind: str = Field(description="threshold | duration | rate | nodata")
    op: str = Field(default=">", description="> | < | between | outside")
    threshold: float | None = None
    threshold2: float | None = Field(default=None, description="upper bound for between/outside")
    duration_s: int = Field(default=0, ge=0, le=30 * 86400)
    hysteresis: float = Field(default=0.0, ge=0)
    severity: int = Field(default=1, ge=1, le=4, description="1 一般 2 较重 3 严重 4 特别严重")
    category_hint: str | None = Field(default=None, max_length=20)
    device_code: str | None = Field(default=None, max_length=40)


class RulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    name_en: str | None = Field(default=None, max_length=160)
    op: str | None = None
    threshold: float | None = None
    threshold2: float | None = None
    duration_s: int | None = Field(default=None, ge=0, le=30 * 86400)
    hysteresis: float | None = Field(default=None, ge=0)
    severity: int | None = Field(default=None, ge=1, le=4)
    category_hint: str | None = Field(default=None, max_length=20)
    enabled: bool | None = None


class AlarmAck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=300)


class AlarmClose(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=300, description="解除原因")


class GatewayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    org_id: int | None = Field(default=None, description="default: your organisation")
