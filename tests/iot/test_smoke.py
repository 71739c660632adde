from citybrain import clock


def test_device_reports_and_reading_is_stored(client, register, send, frozen, as_role):
    code, secret = register("water_level")
    r = send(code, secret, {"water_level": 1.2, "battery": 88})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    h = as_role("operator")
    latest = client.get(f"/api/v1/iot/devices/{code}/latest", headers=h).json()
    assert latest["values"]["water_level"]["value"] == 1.2
    clock.advance(__import__("datetime").timedelta(seconds=1))
