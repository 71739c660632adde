"""Geography tables: administrative areas, unit grids (单元网格), imports and their rejected features.

Geometries are WGS84 GeoJSON text plus a bounding box, so everything works on SQLite. On PostgreSQL
with PostGIS the migration adds a `geom geometry(MultiPolygon, 4326)` column with a GiST index to
`geo_area` and `geo_grid` (not mapped here; the service fills it with SQL).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db import Base, JSONType, UTCDateTime, utcnow

AREA_LEVELS = ("district", "town", "community")
LEVEL_CODE_LENGTH = {"district": 6, "town": 9, "community": 12}


class Area(Base):
    """An administrative area: district (6-digit code), town/sub-district (9), community/village (12)."""

    __tablename__ = "geo_area"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str | None] = mapped_column(String(160), nullable=True)
    level: Mapped[str] = mapped_column(String(12), index=True)
    kind: Mapped[str | None] = mapped_column(String(12), nullable=True)  # 街道 | 镇 | 社区 | 村
    parent_code: Mapped[str | None] = mapped_column(String(12), nullable=True, index=True)
    geojson: Mapped[str] = mapped_column(Text)  # the geometry object (Polygon | MultiPolygon), WGS84
    min_lon: Mapped[float] = mapped_column(Float)
    min_lat: Mapped[float] = mapped_column(Float)
    max_lon: Mapped[float] = mapped_column(Float)
    max_lat: Mapped[float] = mapped_column(Float)
    area_m2: Mapped[float] = mapped_column(Float)
    props: Mapped[dict] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Grid(Base):
    """A unit grid: 15-digit code = 12-digit community code + 3-digit sequence (STANDARDS.md §1)."""

    __tablename__ = "geo_grid"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(15), unique=True)
    legacy_code: Mapped[str | None] = mapped_column(String(14), nullable=True, index=True)  # 14-digit form
    name: Mapped[str] = mapped_column(String(100))
    community_code: Mapped[str] = mapped_column(String(12), index=True)
    town_code: Mapped[str] = mapped_column(String(9), index=True)
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    geojson: Mapped[str] = mapped_column(Text)
    min_lon: Mapped[float] = mapped_column(Float, index=True)
    min_lat: Mapped[float] = mapped_column(Float)
    max_lon: Mapped[float] = mapped_column(Float)
    max_lat: Mapped[float] = mapped_column(Float)
    area_m2: Mapped[float] = mapped_column(Float)
    props: Mapped[dict] = mapped_column(JSONType, default=dict)  # responsible person, land use, ...
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Meta(Base):
    """Key/value facts; `revision` changes whenever grids change (invalidates in-process indexes)."""

    __tablename__ = "geo_meta"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class Import(Base):
    """One GeoJSON import: what came in and what became of it."""

    __tablename__ = "geo_import"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # area | grid
    source: Mapped[str | None] = mapped_column(String(300), nullable=True)
    actor: Mapped[str] = mapped_column(String(100))
    total: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Rejected(Base):
    """A feature an import refused, kept with its reason and its original text."""

    __tablename__ = "geo_import_rejected"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("geo_import.id"), index=True)
    feature_index: Mapped[int] = mapped_column(Integer)
    code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reason_zh: Mapped[str] = mapped_column(String(400))
    reason_en: Mapped[str] = mapped_column(String(400))
    feature: Mapped[str] = mapped_column(Text)
