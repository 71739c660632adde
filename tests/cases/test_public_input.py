"""What reporters may send: photos and attachments only as this system's uploads; citizens only inside the district."""

import datetime as dt
import re

import pytest

from citybrain import clock
from citybrain import demo_district as dd

OUTSIDE = ["//203.0.113.7/track.png", "http://203.0.113.7/track.png", "https://example.com/a.jpg",
           "/\\203.0.113.7/x.png", "data:image/png;base64,AAAA", "javascript:alert(1)", "/static/web/cb.js",
           "/api/v1/attachments/../../metrics", "/api/v1/attachments/" + "A" * 64]


def _upload(client) -> str:
    r = client.post("/api/v1/attachments", files={"file": ("scene.png", dd.demo_photo(), "image/png")})
    assert r.status_code == 201
    return r.json()["url"]


def _citizen(**kw):
    body = {"phone": "13812345678", "title": "人行道井盖缺失", "category_code": "01002", "lon": 113.551, "lat": 22.781}
    body.update(kw)
    return body


@pytest.mark.parametrize("photo", OUTSIDE)
def test_citizen_photos_must_be_own_uploads(client, cdb, photo):
    r = client.post("/api/v1/public/cases", json=_citizen(photos=[photo]))
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["errors"][0]["field"] == "photos.0" and "photos" in doc["message_zh"] and "本系统上传的附件" in doc["errors"][0]["message_zh"]
    assert doc["errors"][0]["message"].split("; ")[0].endswith("照片/附件须为本系统上传的附件地址（POST /api/v1/attachments 返回的 url）")


def test_uploaded_photo_is_accepted_and_shown(client, cdb, as_role):
    url = _upload(client)
    r = client.post("/api/v1/public/cases", json=_citizen(photos=[url]))
    assert r.status_code == 201, r.text
    d = client.get(f"/api/v1/cases/{r.json()['id']}", headers=as_role("operator")).json()
    assert d["photos"] == [url]


def test_staff_photos_batches_and_action_attachments_are_checked_too(client, cdb, as_role):
    gw, op = as_role("gridworker"), as_role("operator")
    bad = "//203.0.113.7/track.png"
    patrol = {"source": "patrol", "title": "道路破损", "category_code": "06013", "lon": 113.55, "lat": 22.78}
    r = client.post("/api/v1/cases", json={**patrol, "photos": [bad]}, headers=gw)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "photos.0"
    r = client.post("/api/v1/cases/batch", json={"items": [{**patrol, "source": "api", "photos": [bad]}]}, headers=op)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "items.0.photos.0"
    url = _upload(client)
    r = client.post("/api/v1/cases", json={**patrol, "photos": [url]}, headers=gw)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = client.post(f"/api/v1/cases/{cid}/actions/note", json={"comment": "补充", "attachments": [bad]}, headers=op)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "attachments.0"
    r = client.post(f"/api/v1/cases/{cid}/actions/note", json={"comment": "补充", "attachments": [url]}, headers=op)
    assert r.status_code == 200, r.text


def test_citizen_report_outside_the_district_is_refused(client, cdb):
    r = client.post("/api/v1/public/cases", json=_citizen(lon=0, lat=0))
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["code"] == "outside_district" and {e["field"] for e in doc["errors"]} == {"lon", "lat"}
    assert "不在本区辖区内" in doc["message_zh"] and "outside this district" in doc["message_en"]
    r = client.post("/api/v1/public/cases", json=_citizen(lon=dd.CENTER[0], lat=dd.CENTER[1]))
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/public/cases", json=_citizen(lon=None, lat=None, address="南沙街道金沙路12号"))
    assert r.status_code == 201, r.text  # an address alone is checked by the operator


def test_staff_report_outside_every_grid_waits_in_the_manual_queue(client, cdb, as_role):
    op = as_role("operator")
    r = client.post("/api/v1/cases", json={"source": "hotline", "title": "来电反映井盖缺失", "hotline_type": "03",
                                           "category_code": "01002", "reporter_phone": "13912345678",
                                           "lon": 0.0, "lat": 0.0, "address": "不明地点"}, headers=op)
    assert r.status_code == 201, r.text
    c = client.get(f"/api/v1/cases/{r.json()['id']}", headers=op).json()
    assert c["status"] == "filed" and c["queue"] == "manual" and c["dept_org_id"] is None  # filed, not dispatched
    r = client.post("/api/v1/cases/batch", json={"items": [{"source": "api", "title": "外部系统推送", "category_code": "01002",
                                                            "lon": 0.0, "lat": 0.0}]}, headers=op)
    assert r.status_code == 200 or r.status_code == 201, r.text
    item = r.json()["items"][0]
    c = client.get(f"/api/v1/cases/{item['id']}", headers=op).json()
    assert c["status"] == "filed" and c["queue"] == "manual"
    # inside a grid the matrix dispatches as before
    r = client.post("/api/v1/cases", json={"source": "hotline", "title": "来电反映井盖缺失", "hotline_type": "03",
                                           "category_code": "01002", "reporter_phone": "13912345678",
                                           "lon": dd.CENTER[0], "lat": dd.CENTER[1]}, headers=op)
    assert r.json()["status"] == "dispatched"


def test_unplaced_cases_and_empty_groups_get_no_score(client, cdb, as_role):
    from citybrain.cases import analytics

    op = as_role("operator")
    r = client.post("/api/v1/cases", json={"source": "hotline", "title": "来电反映井盖缺失", "hotline_type": "03",
                                           "category_code": "01002", "reporter_phone": "13912345678",
                                           "lon": 0.0, "lat": 0.0, "address": "不明地点"}, headers=op)
    assert r.status_code == 201
    clock.advance(dt.timedelta(minutes=5))  # the evaluation period ends now: [now - 30 d, now)
    for group in ("dept", "town"):
        rows = client.get("/api/v1/cases/evaluation", params={"group_by": group}, headers=as_role("leader")).json()["rows"]
        loose = [x for x in rows if x["key"] is None]
        assert loose and loose[0]["name"] == "未派遣/未定位" and loose[0]["score"] is None and loose[0]["grade"] is None
        assert rows[-1]["key"] is None  # listed last, never ranked
    ioc = client.get("/api/v1/cases/ioc-summary", headers=as_role("leader")).json()
    assert all(x["org_id"] is not None for x in ioc["dept_ranking"] + ioc["town_ranking"])
    empty = {k: 0 for k in ("reported", "filed", "dispatched", "dispatched_on_time", "suspended", "closed",
                            "handled_on_time", "closed_on_time", "reworked", "handled", "returned", "public_filed",
                            "valid_callbacks", "contacted", "resolved", "satisfied", "basic")}
    assert analytics.indicators(empty, kind="dept")["score"] is None  # nothing to rate: no 100
    assert analytics.indicators({**empty, "dispatched": 2, "closed": 1}, kind="dept")["score"] is not None


def test_citizen_picks_from_a_short_plain_list_and_other_goes_to_the_centre(client, cdb, as_role):
    html = client.get("/citizen").text
    options = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', html)
    codes = [c for c, _name in options if c]
    assert 5 <= len(codes) <= 20 and codes[-1] == "other" and "垃圾堆积、乱倒垃圾" in html and "其他问题" in html
    assert "停车场" not in html and "立体车库" not in html  # not the 404 classes of the standard
    en = client.get("/citizen", cookies={"lang": "en"}).text
    assert "Rubbish piled up or dumped" in en and "Something else" in en
    r = client.post("/api/v1/public/cases", json=_citizen(category_code="other", title="其他问题 · 小区门口"))
    assert r.status_code == 201, r.text
    op = as_role("operator")
    d = client.get(f"/api/v1/cases/{r.json()['id']}", headers=op).json()
    assert d["category_code"] is None and d["hotline_type"] == "02" and d["status"] == "reported"
    filed = client.post(f"/api/v1/cases/{d['id']}/actions/file", json={"comment": "符合立案条件"}, headers=op).json()
    assert filed["status"] == "filed" and filed["queue"] == "manual"  # the centre classifies and dispatches it
