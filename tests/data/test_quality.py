import io

import openpyxl

from citybrain import codes
from citybrain.context import SYSTEM
from citybrain.data import demo, service
from tests.data.conftest import LIC, LOWINCOME, POP


def _people(n, start):
    return list(demo.population_rows(n, seed=5, start=start))


def test_quality_rules_report_and_rejects(client, hub, dept_user):
    rows = _people(12, 50_000)
    rows[0]["id_number"] = rows[0]["id_number"][:17] + ("1" if rows[0]["id_number"][17] != "1" else "2")
    rows[1]["birth_date"] = "2099-02-01"
    rows[2]["gender"] = "未知"
    rows[3]["phone"] = "12345"
    rows[4]["name"] = ""
    rows[5]["birth_date"] = "1990-01-01" if rows[5]["id_number"][6:14] != "19900101" else "1991-01-01"
    rows[6]["area_code"] = "990000"
    rows[7] = dict(rows[8])  # duplicate key in one load
    h = dept_user("D-GAJ")
    r = client.post(f"/api/v1/data/resources/{POP}/records", json=rows, headers=h)
    assert r.status_code == 201, r.text
    load = r.json()
    assert (load["total"], load["inserted"], load["rejected"]) == (12, 4, 8)
    fails = {f["rule"]: f for f in load["report"]["failures"]}
    assert set(fails) == {"id_number", "date", "codes", "phone", "required", "consistency", "area_code", "unique"}
    # samples never show a full ID number
    assert all("*" in s["value"] for s in fails["id_number"]["samples"])
    rej = client.get(f"/api/v1/data/loads/{load['id']}/rejects", headers=h).json()
    assert len(rej) == 8
    assert rej[0]["reasons"] == [{"field": "id_number", "rule": "id_number"}]
    assert {x["row"] for x in rej} == {1, 2, 3, 4, 5, 6, 7, 9}


def test_upsert_is_incremental(client, hub, dept_user):
    h = dept_user("D-GAJ")
    rows = _people(5, 60_000)
    assert client.post(f"/api/v1/data/resources/{POP}/records", json=rows, headers=h).json()["inserted"] == 5
    rows[0]["phone"] = "13900000000"
    r = client.post(f"/api/v1/data/resources/{POP}/records", json={"records": rows[:2]}, headers=h).json()
    assert (r["inserted"], r["updated"], r["rejected"]) == (0, 2, 0)
    mixed = _people(8, 70_000)[:3] + rows[2:4]  # new and known keys in one batch
    r = client.post(f"/api/v1/data/resources/{POP}/records", json=mixed, headers=h).json()
    assert (r["inserted"], r["updated"], r["rejected"]) == (3, 2, 0)


def test_csv_with_chinese_headers_and_xlsx(client, hub, dept_user):
    h = dept_user("D-MZJ")
    p = _people(3, 70_000)
    csv_text = "身份证号,姓名,保障人数,月保障金额(元),镇街\n" + "\n".join(
        f"{x['id_number']},{x['name']},2,1240,南沙街道" for x in p) + "\n110105194912310021,坏数据,x,1,火星\n"
    r = client.post(f"/api/v1/data/resources/{LOWINCOME}/upload", headers=h,
                    files={"file": ("低保.csv", csv_text.encode("gb18030"), "text/csv")})
    assert r.status_code == 201, r.text
    assert (r.json()["inserted"], r.json()["rejected"]) == (3, 1)
    rules = {f["rule"] for f in r.json()["report"]["failures"]}
    assert rules == {"id_number", "type", "codes"}
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["id_number", "name", "persons", "amount", "town"])
    ws.append([p[0]["id_number"], p[0]["name"], 3, 1360, "珠江街道"])
    buf = io.BytesIO()
    wb.save(buf)
    r = client.post(f"/api/v1/data/resources/{LOWINCOME}/upload", headers=h,
                    files={"file": ("低保.xlsx", buf.getvalue(), "application/octet-stream")})
    assert r.status_code == 201 and r.json()["updated"] == 1
    # only the provider department may load
    r = client.post(f"/api/v1/data/resources/{POP}/records", json=[], headers=h)
    assert r.status_code == 403
    r = client.post(f"/api/v1/data/resources/{LOWINCOME}/upload", headers=h,
                    files={"file": ("x.json", b"{not json", "application/json")})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")


def test_cross_source_check_for_licences(hub):
    with hub.write() as s:
        person = service.exchange  # noqa: F841 - keep import use obvious
        known = next(demo.population_rows(1, seed=7))["id_number"]
        stranger = codes.make_id_number("440115", __import__("datetime").date(1980, 1, 2), 777)
        rows = [{"licence_no": f"T{i}", "licence_type": "居住证", "holder_name": "某某", "holder_id": h,
                 "issuer": "公安", "issued_on": "2024-01-01", "valid_from": "2024-01-01", "valid_to": "2029-01-01",
                 "status": "有效"} for i, h in enumerate([known, stranger, "not-a-code"])]
        load = service.load_records(s, principal=SYSTEM, code=LIC, rows=rows)
    rules = {f["rule"]: f["count"] for f in load.report["failures"]}
    assert load.inserted == 1 and rules == {"cross_source": 1, "consistency": 1}
