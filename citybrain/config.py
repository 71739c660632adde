"""Settings, read from CITYBRAIN_* environment variables (pydantic-settings)."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of a CityBrain instance; see the configuration table in README.md."""

    model_config = SettingsConfigDict(env_prefix="CITYBRAIN_", extra="ignore")

    data_dir: Path = Field(default=Path("citybrain-data"), description="Where the embedded database and keys live")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1, le=64, description="Server worker processes of `citybrain serve`")
    secret_key: str | None = Field(default=None, description="Server secret; generated into data_dir if unset")

    # identity
    demo_password: str = "CityBrain@2026"
    password_min_length: int = 8
    password_min_classes: int = 3
    login_max_failures: int = 5
    lockout_minutes: int = 15
    idle_timeout_minutes: int = 30
    token_max_hours: int = 12

    # audit
    audit_hash: Literal["sha256", "sm3"] = "sha256"
    audit_retention_days: int = Field(default=180, ge=180)

    # bus and brokers
    bus_backend: Literal["memory", "nats"] = "memory"
    nats_url: str = "nats://127.0.0.1:4222"
    mqtt_url: str | None = None

    # cases: citizen endpoints without login (report, track, rate), per client IP and per phone number
    cases_public_ip_limit: int = Field(default=30, ge=0, description="Citizen requests per IP per window (0: off)")
    cases_public_ip_window_s: int = Field(default=60, ge=1)
    cases_public_phone_limit: int = Field(default=10, ge=0, description="Citizen requests per phone per window")
    cases_public_phone_window_s: int = Field(default=3600, ge=1)

    # IoT, map, web
    telemetry_retention_days: int = 90
    tile_url: str | None = None
    default_language: Literal["zh-CN", "en"] = "zh-CN"
    metrics_token: str | None = Field(default=None, description="If set, GET /metrics needs `Authorization: "
                                      "Bearer <token>` (the Prometheus scraper's bearer_token)")

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL in use: the configured one, or SQLite inside data_dir."""
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{(self.data_dir / 'citybrain.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        """True when the embedded SQLite database is in use."""
        return self.sqlalchemy_url.startswith("sqlite")

    def server_secret(self) -> str:
        """The server secret: configured, or created once and kept in data_dir/secret.key."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


_override: Settings | None = None


@lru_cache
def _from_env() -> Settings:
    return Settings()


def get_settings() -> Settings:
    """The settings in force (an override set by `configure`, else the environment)."""
    return _override or _from_env()


def configure(settings: Settings | None) -> Settings:
    """Put these settings in force for the process (None returns to the environment)."""
    global _override
    _override = settings
    _from_env.cache_clear()
    return get_settings()


# `citybrain serve --workers N` (N >= 2) starts HTTP workers and one ingest process (citybrain/iot/relay.py); the
# parent tells each process its role and the ingest process's socket through these (internal, not settings).
ROLE_ENV = "CITYBRAIN_PROCESS_ROLE"
RELAY_ENV = "CITYBRAIN_INGEST_RELAY"


def process_role() -> str | None:
    """This process's role under `serve --workers N`: "ingest", "http", or None (one process does everything)."""
    return os.environ.get(ROLE_ENV) or None
