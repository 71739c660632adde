"""Geography API schemas (GeoJSON documents are described loosely: geometry and properties are objects)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field


class Feature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str | None = None
    geometry: dict[str, Any] = Field(description="GeoJSON Polygon or MultiPolygon, WGS84 lon/lat")
    properties: dict[str, Any] = Field(description="code, name, level, parent_code, area_m2, ...")


class FeatureCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[Feature]
    truncated: bool | None = Field(default=None, description="True when `limit` cut the result short")


class LocateOut(BaseModel):
    lon: float
    lat: float
    found: bool = Field(description="False when the point is in no unit grid (e.g. outside the district)")
    grid_code: str | None = None
    grid_name: str | None = None
    community_code: str | None = None
    community_name: str | None = None
    town_code: str | None = None
    town_name: str | None = None
    district_code: str | None = None


class RejectOut(BaseModel):
    index: int = Field(description="Position of the feature in the file (0-based)")
    code: str | None
    reason_zh: str
    reason_en: str


class RejectDetail(RejectOut):
    feature: Any = Field(description="The feature as it was sent")


class ImportReport(BaseModel):
    import_id: int
    kind: Literal["area", "grid"]
    source: str | None
    actor: str
    at: dt.datetime
    total: int
    created: int
    updated: int
    rejected: int
    rejects: list[RejectOut] = Field(description="The first 200 rejected features and why")


class GeoJSONIn(BaseModel):
    """A GeoJSON FeatureCollection; each feature is checked on its own (bad ones are kept aside)."""

    type: Literal["FeatureCollection"]
    features: list[Any] = Field(max_length=100_000)
