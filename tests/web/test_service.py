"""Photo attachments and the shared IOC summary (both database backends)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from citybrain import bus, clock
from citybrain.web import service
from tests.web.actions import PNG


def test_citizen_uploads_a_photo_staff_view_it(client, as_role):
    png = PNG + b"-scene-1"
    r = client.post("/api/v1/attachments", files={"file": ("scene.png", png, "image/png")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["content_type"] == "image/png" and body["size"] == len(png)
    assert body["url"] == f"/api/v1/attachments/{body['key']}"
    again = client.post("/api/v1/attachments", files={"file": ("copy.png", png, "image/png")}).json()
    assert again["key"] == body["key"]  # stored once
    assert client.get(body["url"]).status_code == 401
    assert client.get(body["url"], headers=as_role("citizen")).status_code == 403
    r = client.get(body["url"], headers=as_role("operator"))
    assert r.status_code == 200 and r.content == png and r.headers["content-type"] == "image/png"
    audit = client.get("/api/v1/audit", params={"action": "web.attachment.upload"}, headers=as_role("auditor")).json()
    items = audit["items"] if isinstance(audit, dict) else audit
    assert [i["target_id"] for i in items] == [body["key"]]  # the duplicate upload changed nothing


def test_upload_refuses_what_is_not_a_photo(client, as_role):
    r = client.post("/api/v1/attachments", files={"file": ("x.png", b"<script>alert(1)</script>", "image/png")})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == "file"
    big = PNG + b"\0" * service.MAX_PHOTO_BYTES
    r = client.post("/api/v1/attachments", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and r.json()["message_en"]
    assert client.get("/api/v1/attachments/" + "0" * 64, headers=as_role("operator")).status_code == 404
    assert client.get("/api/v1/attachments/not-a-key", headers=as_role("operator")).status_code == 404


def test_sniff_image_types():
    assert service.sniff_image(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert service.sniff_image(b"GIF89a....") == "image/gif"
    assert service.sniff_image(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert service.sniff_image(b"RIFF\0\0\0\0WAVEfmt ") is None
    assert service.sniff_image(b"%PDF-1.7") is None


def test_summary_is_shared_and_refreshed_when_something_changes(db):
    from citybrain.identity import service as identity

    service.reset_cache()
    clock.freeze(dt.datetime(2026, 5, 6, 2, 0, tzinfo=dt.UTC))
    with db.read() as s:
        leader = identity.principal_for_user(s, user=identity.user_by_username(s, username="leader"))
        operator = identity.principal_for_user(s, user=identity.user_by_username(s, username="operator"))
        first = service.ioc_summary(s, principal=leader)
        clock.advance(dt.timedelta(seconds=5))
        second = service.ioc_summary(s, principal=operator)  # city-wide too: same entry
    assert first["cached"] is False and second["cached"] is True
    assert second["generated_at"] == first["generated_at"]

    service._on_event(bus.Event(id=1, topic="iot.alarm.raised", payload={}, created_at=None))
    deadline = time.monotonic() + 10
    while True:
        with db.read() as s:
            third = service.ioc_summary(s, principal=leader)
        if third["generated_at"] != first["generated_at"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert third["generated_at"] > first["generated_at"]  # recomputed after the change

    service._on_event(bus.Event(id=2, topic="geo.area.imported", payload={}, created_at=None))
    with db.read() as s:
        assert service.ioc_summary(s, principal=leader)["generated_at"] == third["generated_at"]  # not ours
    service.reset_cache()


def test_ioc_shows_the_data_hubs_exchange_volume(client, db, as_role):
    """Exchange calls through the data hub raise the IOC's `data.exchange_today` by the records they returned."""
    from citybrain import modules

    data_demo = modules.part("data", "demo")
    if data_demo is None:
        pytest.skip("a build without the data hub: its panel says not connected (test_pages)")
    from citybrain.data import exchangelog
    from citybrain.identity import service as identity

    exchangelog.LIMITER.reset()
    data_demo.seed(db, people=50, entities=40, history_days=1, calls_per_day=5)
    with db.write() as s:
        org = identity.org_by_code(s, code="D-YXZX")
        key, _k = identity.create_api_key(s, name="test-ioc", scopes=["data.exchange"], kind="consumer", org_id=org.id)
    service.reset_cache()
    before = client.get("/api/v1/ioc/summary", headers=as_role("leader")).json()["data"]
    assert before["connected"] is True and isinstance(before["exchange_today"], int)
    got = 0
    for size in (4, 6):
        r = client.post("/api/v1/data/exchange/440115-1-02-001-0001/query", json={"page_size": size},
                        headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        got += r.json()["count"]
    service.reset_cache()
    after = client.get("/api/v1/ioc/summary", headers=as_role("leader")).json()["data"]
    assert got == 10 and after["exchange_today"] - before["exchange_today"] == got
    assert after["exchange_calls_today"] - before["exchange_calls_today"] == 2
