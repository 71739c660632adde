"""Demo seeding for IoT: ~3,000 devices over the demo district, owned by the usual departments, with credentials.

The devices' secrets and one gateway key per department are written once to
`<data_dir>/iot-demo-credentials.json` (mode 0600) so the device simulator can report as real devices do.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from sqlalchemy import func, select, update

from citybrain import context
from citybrain import demo_district as dd
from citybrain.audit import service as audit
from citybrain.config import get_settings
from citybrain.context import SYSTEM
from citybrain.db import Database, utcnow
from citybrain.identity import service as identity
from citybrain.iot import catalog, service
from citybrain.iot.models import Device

log = logging.getLogger("citybrain.iot")

# devices per model in the demo district
COUNTS = {"water_level": 150, "manhole": 800, "hydrant": 200, "air": 60, "noise": 60, "lamp": 600,
          "parking": 900, "gas": 150, "tunnel": 40, "tilt": 40}

PLACES = ("金洲大道", "港前大道", "蕉门河", "进港大道", "凤凰大道", "环市大道", "黄阁大道", "横沥大道", "东涌大道",
          "海滨路", "双山大道", "南沙港快速", "明珠湾", "灵山岛", "庆盛枢纽", "滨海公园", "龙穴岛", "万顷沙")


def credentials_path() -> Path:
    """Where the demo keeps its simulated devices' credentials."""
    return get_settings().data_dir / "iot-demo-credentials.json"


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False))
    tmp.chmod(0o600)
    tmp.replace(path)


def _gateways(s, departments: set[str]) -> dict[str, str]:
    keys = {}
    for short in sorted(departments):
        dep = dd.department(short)
        org = identity.org_by_code(s, code=dep.code)
        key, _ = service.create_gateway_key(s, name=f"demo-gateway-{dep.code}", org_id=org.id, principal=SYSTEM)
        keys[short] = key
    return keys


def seed(db: Database) -> None:
    """Register the demo devices once (idempotent); re-issue credentials if the credential file was lost."""
    context.set_principal(SYSTEM)
    path = credentials_path()
    with db.write() as s:
        service.ensure_default_rules(s)
    with db.write() as s:
        have = s.scalar(select(func.count()).select_from(Device)) or 0
        if have and path.exists():
            return
        rnd = random.Random(440115)
        if have:  # devices exist but their secrets are gone: issue new ones
            rows = s.execute(select(Device.id, Device.code, Device.model_code, Device.org_id)).all()
            devices = []
            for r in rows:
                secret = service._new_secret()
                s.execute(update(Device).where(Device.id == r.id).values(secret_hash=service._sha256(secret),
                                                                          secret_rotated_at=utcnow()))
                m = catalog.get(r.model_code)
                devices.append({"code": r.code, "model": r.model_code, "dept": m.department if m else "", "secret": secret})
            audit.commit(s, action="iot.device.rotate_secret", target_type="iot_device", target_id=f"{len(rows)} devices",
                         note="demo credentials re-issued")
            service.reset_state()
        else:
            orgs = {d.short: identity.org_by_code(s, code=d.code).id for d in dd.DEPARTMENTS}
            lo_lon, lo_lat, hi_lon, hi_lat = dd.BBOX
            specs = []
            for model_code, n in COUNTS.items():
                m = catalog.get(model_code)
                for i in range(n):
                    lon = round(rnd.uniform(lo_lon + 0.005, hi_lon - 0.005), 6)
                    lat = round(rnd.uniform(lo_lat + 0.005, hi_lat - 0.005), 6)
                    place = PLACES[rnd.randrange(len(PLACES))]
                    specs.append({"name": f"{place}{m.name}{i + 1:04d}", "model": model_code,
                                  "org_id": orgs[m.department], "lon": lon, "lat": lat,
                                  "address": f"广州市南沙区{place}"})
            secrets_ = service.bulk_register(s, devices=specs, note="demo district devices")
            codes = s.execute(select(Device.code, Device.model_code).order_by(Device.id)).all()
            devices = [{"code": c, "model": mc, "dept": catalog.get(mc).department, "secret": sec}
                       for (c, mc), sec in zip(codes, secrets_, strict=True)]
    with db.write() as s:
        keys = _gateways(s, {d["dept"] for d in devices})
    _write(path, {"gateways": keys, "devices": devices})
    log.info("iot demo: %d devices, credentials in %s", len(devices), path)
