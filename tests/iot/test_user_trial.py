"""What a department's IoT engineer ran into on a first try of the API (session 6 user trial)."""

from __future__ import annotations

import re

import pytest

HAN = re.compile(r"[\u4e00-\u9fff]")


def test_missing_timestamp_says_so_in_both_languages(client, register, frozen):
    code, secret = register("manhole", "城管")
    r = client.post("/api/v1/iot/telemetry", json={"values": {"tilt": 2.0}},
                    headers={"X-Device-Code": code, "X-Device-Secret": secret})
    assert r.status_code == 422
    rej = r.json()["rejections"][0]
    assert rej["reason"] == "bad_timestamp"
    assert "缺少 ts" in rej["message_zh"] and "ts is missing" in rej["message_en"]


@pytest.mark.parametrize("values, reason, zh", [
    ({"tilt": "x"}, "wrong_type", "应为数值"),
    ({"displaced": 5}, "wrong_type", "应为 true/false"),
    ({"foo": 1}, "unknown_property", "没有属性 'foo'"),
])
def test_rejection_details_are_translated(client, register, send, frozen, values, reason, zh):
    code, secret = register("manhole", "城管")
    rej = send(code, secret, values).json()["rejections"][0]
    assert rej["reason"] == reason and zh in rej["message_zh"]
    assert "expected" not in rej["message_zh"] and " has no " not in rej["message_zh"]


def test_unreadable_body_message_is_chinese(client, register, frozen):
    code, secret = register("water_level")
    r = client.post("/api/v1/iot/telemetry", content=b"garbage",
                    headers={"X-Device-Code": code, "X-Device-Secret": secret})
    assert r.status_code == 422
    assert r.json()["message_zh"].startswith("数据无法解析：不是有效的 JSON")


def test_owner_sees_the_unreadable_messages_of_its_device(client, register, frozen, as_role):
    code, secret = register("manhole", "城管")
    r = client.post("/api/v1/iot/telemetry", content=b"{not json",
                    headers={"X-Device-Code": code, "X-Device-Secret": secret})
    assert r.status_code == 422
    h = as_role("handler")  # 张城管: the owner department's engineer
    r = client.get("/api/v1/iot/dead-letters", params={"device_code": code}, headers=h)
    assert r.status_code == 200
    assert [d["reason"] for d in r.json()["items"]] == ["malformed"]
    counts = client.get("/api/v1/iot/dead-letters/summary", params={"device_code": code}, headers=h).json()
    assert counts == [{"device_code": code, "reason": "malformed", "count": 1}]


@pytest.mark.parametrize("url, params", [
    ("/api/v1/iot/devices", {"status": "bogus"}),
    ("/api/v1/iot/devices.geojson", {"status": "bogus"}),
    ("/api/v1/iot/dead-letters", {"reason": "bogus"}),
])
def test_unknown_filter_values_are_422_not_an_empty_list(client, as_role, url, params):
    r = client.get(url, params=params, headers=as_role("operator"))
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert HAN.search(r.json()["message_zh"]) and r.json()["message_en"]


def test_unknown_model_lists_the_models_in_chinese_too(client, as_role):
    r = client.post("/api/v1/iot/devices", json={"name": "x", "model": "nosuch", "lon": 113.5, "lat": 22.7},
                    headers=as_role("handler"))
    assert r.status_code == 422 and "water_level" in r.json()["message_zh"]


def test_a_reading_has_the_same_timestamp_text_everywhere(client, register, send, frozen, as_role):
    """The device's latest values, its grid's latest values and the readings give one reading one time text
    (UTC with `Z`), so a client can match them as strings."""
    code, secret = register("manhole", "城管")
    assert send(code, secret, {"tilt": 2.0}).status_code == 200
    h = as_role("handler")
    dev = client.get(f"/api/v1/iot/devices/{code}", headers=h).json()
    ts = client.get(f"/api/v1/iot/devices/{code}/latest", headers=h).json()["values"]["tilt"]["ts"]
    grid = client.get(f"/api/v1/iot/grids/{dev['grid_code']}/latest", headers=h).json()
    in_grid = next(d for d in grid["devices"] if d["code"] == code)["values"]["tilt"]["ts"]
    assert ts == in_grid and ts.endswith("Z"), (ts, in_grid)


def test_an_empty_csv_import_says_the_file_is_empty(client, as_role):
    r = client.post("/api/v1/iot/devices/import", headers=as_role("handler"), content=b"")
    assert r.status_code == 422 and r.json()["code"] == "empty_file"
    assert "文件为空" in r.json()["message_zh"] and "empty" in r.json()["message_en"]


def test_one_rejected_reading_is_reported_in_the_singular(client, register, send, frozen):
    code, secret = register("manhole", "城管")
    r = send(code, secret, {"foo": 1})
    assert r.status_code == 422 and r.json()["message_en"].startswith("The reading was rejected")
    r = send(code, secret, {"foo": 1, "bar": 2})
    assert r.json()["message_en"].startswith("All 2 readings were rejected")
