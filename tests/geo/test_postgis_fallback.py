"""PostgreSQL without PostGIS (a user's database where the extension cannot be created) still works."""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

import pytest

from citybrain import context
from citybrain.db import Database, migrate
from citybrain.geo import demo, service
from tests.conftest import PG_URL, make_settings, need_service


@pytest.mark.postgres
def test_migration_and_lookups_without_postgis(tmp_path):
    import psycopg

    u = urlparse(PG_URL)
    need_service("PostgreSQL", u.hostname or "127.0.0.1", u.port or 5432)
    role, name = f"cb_nogis_{uuid.uuid4().hex[:8]}", f"cb_nogis_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER')
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{role}" TEMPLATE template0')
    db = None
    try:
        url = u._replace(netloc=f"{role}@{u.hostname}:{u.port or 5432}", path=f"/{name}").geturl()
        db = Database(make_settings(tmp_path, url))
        migrate(db)  # CREATE EXTENSION postgis is refused for this role: the migration carries on
        context.set_principal(context.SYSTEM)
        demo.seed(db)
        _areas, grids = demo.build()
        p = grids[10].geom.representative_point()
        with db.read() as s:
            assert not service.postgis_enabled(s)
            assert service.locate(s, lon=p.x, lat=p.y)["grid_code"] == grids[10].code
            assert service.locate_postgis(s, lon=p.x, lat=p.y) is None
            assert service.counts(s)["grid"] == len(grids)
    finally:
        if db is not None:
            db.dispose()
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
