"""Demo seeding for identity: the district's organisation tree and one account per role."""

from __future__ import annotations

from sqlalchemy import select

from citybrain import context
from citybrain import demo_district as dd
from citybrain.config import get_settings
from citybrain.context import SYSTEM
from citybrain.db import Database
from citybrain.identity import service
from citybrain.identity.models import Org


def seed(db: Database) -> None:
    """Create the demo organisations and users if they are not there yet (idempotent)."""
    context.set_principal(SYSTEM)
    with db.write() as s:
        if s.scalar(select(Org.id).where(Org.code == dd.GOV_CODE)):
            return
        gov = service.create_org(s, code=dd.GOV_CODE, name=f"广州市{dd.DISTRICT_NAME}人民政府",
                                 name_en=f"{dd.DISTRICT_NAME_EN} People's Government", type="district",
                                 division_code=dd.DISTRICT_CODE)
        for d in dd.DEPARTMENTS:
            service.create_org(s, code=d.code, name=d.name, name_en=d.name_en,
                               type="external" if d.code == "D-GYQY" else "department", parent_id=gov.id)
        towns = {}
        for t in dd.TOWNS:
            towns[t.code] = service.create_org(s, code=t.code, name=t.name, name_en=t.name_en, type="town",
                                               parent_id=gov.id, division_code=t.code)
        for c in dd.COMMUNITIES:
            service.create_org(s, code=c.code, name=c.name, type="community", parent_id=towns[c.town_code].id,
                               division_code=c.code)
        password = get_settings().demo_password
        for u in dd.DEMO_USERS:
            org = service.org_by_code(s, code=u.org_code) if u.org_code else None
            service.create_user(s, username=u.role, real_name=u.real_name, password=password,
                                org_id=org.id if org else None, phone=u.phone, roles=[u.role])
