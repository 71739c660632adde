"""IoT test helpers: register devices, send telemetry as a device or a gateway."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from citybrain import clock, context, demo_district
from citybrain.db import Database
from citybrain.identity import service as identity
from citybrain.iot import service

T0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)  # 10:00 China time


def org_id(db: Database, short: str) -> int:
    with db.read() as s:
        return identity.org_by_code(s, code=demo_district.department(short).code).id


@pytest.fixture
def frozen(db):
    """Freeze the clock at T0 (move it with clock.advance)."""
    clock.freeze(T0)
    yield T0
    clock.reset()


@pytest.fixture
def register(db) -> Callable[..., tuple[str, str]]:
    """register(model, dept_short="水务", lon=..., lat=...) -> (code, secret)."""

    def _register(model: str, dept: str | None = None, lon: float = 113.55, lat: float = 22.78,
                  name: str | None = None) -> tuple[str, str]:
        from citybrain.iot import catalog

        m = catalog.get(model)
        context.set_principal(context.SYSTEM)
        with db.write() as s:
            dev, secret = service.create_device(s, name=name or f"测试{m.name}", model=model,
                                                org_id=org_id(db, dept or m.department), lon=lon, lat=lat)
        return dev.code, secret

    return _register


@pytest.fixture
def send(client):
    """send(code, secret, values, ts=None) -> response, as the device itself."""

    def _send(code: str, secret: str, values: dict, ts: dt.datetime | str | int | None = None):
        t = ts if ts is not None else clock.now()
        body = {"ts": t.isoformat() if isinstance(t, dt.datetime) else t, "values": values}
        return client.post("/api/v1/iot/telemetry", json=body,
                           headers={"X-Device-Code": code, "X-Device-Secret": secret})

    return _send


@pytest.fixture
def gateway(db) -> Callable[[str], str]:
    """gateway(dept_short) -> a gateway key of that department."""

    def _gw(dept: str) -> str:
        context.set_principal(context.SYSTEM)
        with db.write() as s:
            key, _ = service.create_gateway_key(s, name=f"gw-{dept}", org_id=org_id(db, dept),
                                                principal=context.SYSTEM)
        return key

    return _gw
